"""The restore on OpenShift as a runbook job (``restore.openshift``): what the
seed's README has an operator do by hand (scale the server down, keep the
CronJobs from running, bring Patroni to one member that is the leader,
restore, put everything back), done by the OpenShift driver, recorded and
reversible, around the same load, check and cut-over as ``restore.local``
(hcapadmin.restores.runbook).

Parameters are those of ``restore.local`` (checked by its
``validate_params``), plus the restore request's id when the request app
submits it::

    {"request": 12, "target": "hcap", "backup": "<catalog name>", "path": "/backups/.../x.sql.gz",
     "size": 123, "sha256": "<hex>", "mode": "online" | "offline", "stamp": "YYYYMMDDHHMMSS"}

Steps (docs/restores-openshift.md): preflight (read-only: the
service account's permissions, the checksum of the file in the backup pod,
Patroni's health, the Patroni Secret's credentials, the target) -> record
(the server's replicas, which CronJobs are active, Patroni's replicas and
leader) -> quiesce_offline (offline mode: the server to 0 and the active
CronJobs suspended before the safety backup) -> safety_backup (``backup.sh
-1`` in the backup pod) -> load (``gunzip -c`` in the backup pod streamed
into ``psql`` in the leader pod, ops.restore_pods) -> check (as locally) ->
quiesce (online mode: the same, now) -> patroni_single (switchover to
``<patroni>-0`` when another pod leads, then the StatefulSet to 1) -> cutover
(as locally) -> restore_patroni (back to the recorded replicas, every member
streaming; a member that cannot catch up is reinitialised, else its lag is
reported) -> resume (only the CronJobs this job suspended; the server back
to its recorded replicas and Ready) -> report.

Every change is recorded in the step's data before it is made, so an undo
after a crash knows what to put back; undo always puts back the *recorded*
state (the server to its recorded replicas, not to 1).  The database
password is read from the Secret in each step and never stored, logged or
put in a URL.  Test holds: as ``restore.local`` (``before:<step>``,
``load``, ``cutover``); with HCAPADMIN_TESTING on, ``_hold`` may also name
``"fail": "after:<step>"`` (or ``"before:<step>"``): the step then fails at
that point, after recording what it did, so tests reach each step's undo.
"""

from __future__ import annotations

import functools
import time
from types import SimpleNamespace

import psycopg
from django.conf import settings

from hcapadmin.core.platform import get_driver
from hcapadmin.jobs.runbook import Step, runbook_kind
from hcapadmin.restores.runbook import (_Cutover, _held_filter, _hold, load_to_undo, mark_request, role_memory,
                                        take_safety_backup, validate_params)
from ops import restore
from ops.errors import Forbidden, Invalid, OpsError, Timeout
from ops.platform.base import CronJobState
from ops.restore_pods import PodLoadStaging

STREAMING_STATES = ("streaming", "running")
BROKEN_STATES = ("start failed", "stopped", "crashed", "stopping")
MAX_LAG_MB = 16  # a replica further behind than this is not "caught up"
CATCH_UP_SECONDS = 600  # how long a replica may take to catch up before it is reinitialised
WAIT_PODS_SECONDS = 900


# --- parameters, driver, connection ---------------------------------------------------------
def _params(params) -> dict:
    params = validate_params(params)
    path = params["path"]
    if not path.startswith("/") or "/../" in path + "/" or not path.endswith(".sql.gz"):
        raise Invalid("path must be an absolute .sql.gz path in the backup pod")
    return params


def _driver():
    driver = get_driver()
    if driver.name != "openshift":
        raise OpsError(f"restore.openshift needs the OpenShift platform driver; this portal runs {driver.name}")
    return driver


def _conninfo(driver, params) -> tuple[str, object]:
    """The connection to the Patroni service with the Secret's superuser,
    and the credentials (never stored: read again by each step)."""
    creds = driver.database_credentials()
    if creds.database != params["target"]:
        raise Invalid(f"the target {params['target']} is not the application's database "
                      f"({creds.database}, db-name in Secret {driver.patroni_secret})")
    return driver.database_conninfo(creds), creds


def _entry(params):
    return SimpleNamespace(name=params["backup"], path=params["path"])


def _failing_at(params, point: str) -> bool:
    spec = params.get("_hold") if isinstance(params, dict) else None
    return bool(spec) and getattr(settings, "TESTING", False) and spec.get("fail") == point


def _testable(run, name: str):
    """``run`` with the test failure points ``before:<name>`` / ``after:<name>``."""
    @functools.wraps(run)
    def wrapped(sctx, params):
        if _failing_at(params, f"before:{name}"):
            raise OpsError(f"test failure injected before {name}")
        out = run(sctx, params)
        if _failing_at(params, f"after:{name}"):
            if out:
                sctx.record(**out)
            raise OpsError(f"test failure injected after {name}")
        return out

    return wrapped


# --- 1. preflight -------------------------------------------------------------------------------
def required_permissions(driver, server_kind: str | None = None) -> list[tuple[str, str, str, str, str]]:
    """(verb, API group, resource, subresource, name) of every call the runbook makes."""
    ns_rules = [
        ("get", "", "secrets", "", driver.patroni_secret),
        ("list", "", "pods", "", ""),
        ("get", "", "configmaps", "", driver.patroni_leader_configmap),
        ("create", "", "pods", "exec", ""),
        ("get", "", "pods", "exec", ""),  # the websocket upgrade of an exec is a GET
        ("get", "apps", "statefulsets", "scale", driver.patroni_name),
        ("patch", "apps", "statefulsets", "scale", driver.patroni_name),
        ("list", "batch", "cronjobs", "", ""),
        ("get", "batch", "cronjobs", "", ""),  # read again before each patch (and on a 409)
        ("patch", "batch", "cronjobs", "", ""),
        ("get", "apps.openshift.io", "deploymentconfigs", "", driver.server_name),
        ("get", "apps", "deployments", "", driver.server_name),
    ]
    if server_kind == "DeploymentConfig":
        ns_rules += [("get", "apps.openshift.io", "deploymentconfigs", "scale", driver.server_name),
                     ("patch", "apps.openshift.io", "deploymentconfigs", "scale", driver.server_name)]
    elif server_kind == "Deployment":
        ns_rules += [("get", "apps", "deployments", "scale", driver.server_name),
                     ("patch", "apps", "deployments", "scale", driver.server_name)]
    return ns_rules


def _require(driver, rules) -> None:
    missing = driver.missing_permissions(rules)
    if missing:
        raise Forbidden("the portal's service account lacks " + "; ".join(missing) + " in namespace "
                        f"{driver.namespace}: nothing was changed (grant them in its Role, "
                        "deploy/openshift/rbac-rules.yaml)")


def patroni_health(driver) -> dict:
    """Patroni's own member list: one running leader, every replica
    streaming within MAX_LAG_MB.  Raises OpsError naming what is wrong."""
    members = driver.patroni_members()
    leaders = [m for m in members if str(m.get("Role", "")).lower() in ("leader", "master", "standby leader")]
    problems = []
    if len(leaders) != 1:
        problems.append(f"{len(leaders)} leaders")
    for m in members:
        state = str(m.get("State", "")).lower()
        if state not in STREAMING_STATES:
            problems.append(f"{m.get('Member')} is {state or 'in an unknown state'}")
        lag = _lag(m)
        if m not in leaders and lag is not None and lag > MAX_LAG_MB:
            problems.append(f"{m.get('Member')} lags {lag} MB")
    if problems:
        raise OpsError("Patroni is not healthy: " + ", ".join(problems))
    return {"leader": leaders[0].get("Member"),
            "members": [{"name": m.get("Member"), "role": m.get("Role"), "state": m.get("State"),
                         "lag_mb": _lag(m)} for m in members]}


def _lag(member) -> float | None:
    value = member.get("Lag in MB")
    try:
        return float(value) if value not in (None, "", "unknown") else None
    except (TypeError, ValueError):
        return None


def leader_psql_version(driver) -> str:
    """``psql --version`` in the leader pod: the load runs psql there under
    ``\\restrict``, which older minor releases do not have."""
    import re

    leader = driver.leader_pod()
    result = driver.exec(leader, ["psql", "--version"], timeout=60)
    match = re.search(r"(\d+)\.(\d+)", result.stdout or "")
    if result.returncode != 0 or not match:
        raise OpsError(f"cannot read the psql version in pod {leader} (exit {result.returncode})")
    major, minor = int(match[1]), int(match[2])
    if major < 13 or (major in restore.PSQL_RESTRICT_MIN and (major, minor) < restore.PSQL_RESTRICT_MIN[major]):
        raise restore.RestoreRefused(f"psql {major}.{minor} in pod {leader} has no \\restrict; a restore needs "
                                     "13.22, 14.19, 15.14, 16.10, 17.6 or newer")
    return f"{major}.{minor}"


def run_preflight(sctx, params):
    params = _params(params)
    _hold(sctx, params, "before:preflight")
    driver = _driver()
    _require(driver, required_permissions(driver))
    server = driver.server_workload()
    _require(driver, required_permissions(driver, server.kind))
    conninfo, creds = _conninfo(driver, params)
    sctx.log(f"Database credentials read from Secret {driver.patroni_secret} (superuser {creds.user})")
    sctx.check_cancelled()
    found = driver.backup_checksum(_entry(params), check=sctx.check_cancelled)
    if found != params["sha256"]:
        raise restore.RestoreRefused(f"the backup {params['backup']} in the backup pod is not the approved file "
                                     "(its sha256 changed since the approval)")
    sctx.log(f"{params['backup']} in the backup pod has the approved sha256")
    psql = leader_psql_version(driver)
    sctx.log(f"psql {psql} in the leader pod has \\restrict")
    health = patroni_health(driver)
    sctx.log(f"Patroni healthy: leader {health['leader']}, " + ", ".join(
        f"{m['name']} {m['state']}" for m in health["members"]))
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            row = conn.execute("SELECT oid, datconnlimit, datallowconn FROM pg_database WHERE datname = %s",
                               (params["target"],)).fetchone()
    except psycopg.Error as exc:
        raise OpsError(f"cannot connect to PostgreSQL at {driver.database_host}:{driver.database_port}: "
                       f"{type(exc).__name__}") from None
    if row is None:
        raise restore.RestoreRefused(f"database {params['target']} does not exist")
    if not row[2]:
        raise restore.RestoreRefused(f"database {params['target']} does not accept connections")
    mark_request(sctx, params, "started")
    # Another job on the same database cannot be running: the engine holds the
    # target's lock for the whole runbook (hcapadmin.jobs.locks).
    return {"mode": params["mode"], "lock": sctx.target, "target_oid": int(row[0]), "connection_limit": int(row[1]),
            "sha256": found, "patroni": health, "server_kind": server.kind, "psql_version": psql}


# --- 2. record ------------------------------------------------------------------------------
def run_record(sctx, params):
    params = _params(params)
    _hold(sctx, params, "before:record")
    driver = _driver()
    server = driver.server_workload()
    cronjobs = driver.cronjob_states()
    state = driver.cluster_state()
    replicas = driver.replicas_of("StatefulSet", driver.patroni_name)
    out = {"server": {"kind": server.kind, "name": server.name, "replicas": server.replicas,
                      "selector": server.selector},
           "cronjobs": [{"name": c.name, "suspended": c.was_suspended} for c in cronjobs],
           "patroni": {"name": driver.patroni_name, "replicas": replicas, "leader": state.leader,
                       "selector": driver.patroni_selector}}
    sctx.log(f"Recorded: {server.kind} {server.name} at {server.replicas} replica(s); CronJobs active: "
             f"{', '.join(c.name for c in cronjobs if not c.was_suspended) or 'none'}; already suspended: "
             f"{', '.join(c.name for c in cronjobs if c.was_suspended) or 'none'}; Patroni {replicas} "
             f"member(s), leader {state.leader}")
    return out


# --- quiesce: the server down, the active CronJobs suspended --------------------------------
def _quiesce(sctx, driver, rec) -> dict:
    server = rec["server"]
    sctx.record(server_scaled=True)  # before the change, so an undo after a crash puts it back
    driver.scale(server["kind"], server["name"], 0)
    sctx.log(f"Scaled {server['kind']} {server['name']} to 0; waiting for its pods to go")
    driver.wait_pods_gone(server["selector"], timeout=WAIT_PODS_SECONDS, check=sctx.check_cancelled)
    active = [c["name"] for c in rec["cronjobs"] if not c["suspended"]]
    sctx.record(suspended=active)
    if active:
        driver.suspend_cronjobs(active)
        sctx.log(f"Suspended CronJobs: {', '.join(active)}")
    return {"server_replicas": 0, "suspended": active}


def _unquiesce(sctx, driver, rec, data) -> None:
    if data.get("skipped"):
        return
    suspended = data.get("suspended") or []
    if suspended:
        driver.resume_cronjobs([CronJobState(name, False) for name in suspended])
        sctx.log(f"Resumed CronJobs: {', '.join(suspended)}")
        sctx.record(resumed=suspended)
    if data.get("server_scaled"):
        server = rec["server"]
        driver.scale(server["kind"], server["name"], server["replicas"])
        sctx.log(f"Scaled {server['kind']} {server['name']} back to {server['replicas']}")
        if server["replicas"]:
            driver.wait_pods_ready(server["selector"], server["replicas"], timeout=WAIT_PODS_SECONDS)
        sctx.record(server_restored=server["replicas"])


def run_quiesce_offline(sctx, params):
    params = _params(params)
    _hold(sctx, params, "before:quiesce_offline")
    if params["mode"] != "offline":
        sctx.log("Online restore: the server keeps running until the cut-over")
        return {"skipped": True, "mode": "online"}
    return _quiesce(sctx, _driver(), sctx.data_of("record"))


def undo_quiesce(sctx, params):
    params = _params(params)
    _unquiesce(sctx, _driver(), sctx.data_of("record"), dict(sctx.data))


def run_quiesce(sctx, params):
    params = _params(params)
    _hold(sctx, params, "before:quiesce")
    if params["mode"] == "offline":
        return {"skipped": True, "done_by": "quiesce_offline"}
    return _quiesce(sctx, _driver(), sctx.data_of("record"))


# --- safety backup, load, check ---------------------------------------------------------------
def run_safety_backup(sctx, params):
    params = _params(params)
    _hold(sctx, params, "before:safety_backup")
    return take_safety_backup(sctx, params, _driver(), kept="in the backup pod")


def _load(sctx, params, driver, conninfo, creds, *, check=None, log=None, **kwargs):
    return PodLoadStaging(conninfo, driver, _entry(params), params["target"], sha256=params["sha256"],
                          stamp=params["stamp"], superuser=creds.user, check=check, log=log or sctx.log,
                          after_copy_data=_held_filter(sctx, params), **kwargs)


def run_load(sctx, params):
    params = _params(params)
    _hold(sctx, params, "before:load")
    driver = _driver()
    conninfo, creds = _conninfo(driver, params)
    staging = restore.staging_name(params["target"], params["stamp"])
    sctx.record(staging=staging)  # before it exists, so an undo after a crash looks for it
    return _load(sctx, params, driver, conninfo, creds, check=sctx.check_cancelled,
                 **role_memory(sctx)).run().as_dict()


def undo_load(sctx, params):
    params = _params(params)
    driver = _driver()
    conninfo, creds = _conninfo(driver, params)
    data = load_to_undo(sctx, conninfo, params)
    if data is None:
        return
    done = _load(sctx, params, driver, conninfo, creds).undo(data)
    sctx.record(undone=True, roles_dropped=done.roles_dropped, roles_kept=done.roles_kept)


def run_check(sctx, params):
    params = _params(params)
    _hold(sctx, params, "before:check")
    conninfo, _creds = _conninfo(_driver(), params)
    return restore.check_staging(conninfo, sctx.data_of("load"), log=sctx.log).as_dict()


# --- Patroni to one member, the leader ---------------------------------------------------------
def _wait_leader(driver, name: str, check, timeout: float = 300) -> None:
    give_up = time.monotonic() + timeout
    while driver.cluster_state().leader != name:
        if check:
            check()
        if time.monotonic() > give_up:
            raise Timeout(f"{name} did not become the Patroni leader within {timeout:g}s")
        time.sleep(1)


def run_patroni_single(sctx, params):
    params = _params(params)
    _hold(sctx, params, "before:patroni_single")
    driver = _driver()
    rec = sctx.data_of("record")["patroni"]
    first = f"{driver.patroni_name}-0"
    leader = driver.cluster_state().leader
    if leader != first:
        sctx.record(switchover_from=leader, switchover_to=first)
        sctx.log(f"Switching the Patroni leader over from {leader} to {first} (scaling down removes the highest "
                 "ordinals)")
        driver.patroni_switchover(leader, first)
        _wait_leader(driver, first, sctx.check_cancelled)
    sctx.record(scaled=True)
    driver.scale("StatefulSet", rec["name"], 1)
    sctx.log(f"Scaled StatefulSet {rec['name']} to 1; waiting for the other members to go")
    left = driver.wait_pod_count(rec["selector"], 1, timeout=WAIT_PODS_SECONDS, check=sctx.check_cancelled)
    if left != [first]:
        raise OpsError(f"after scaling Patroni to 1 the pods are {left or 'none'}, not {first}")
    return {"leader": first, "replicas": 1}


def _patroni_back(sctx, driver, rec, *, check=None) -> dict:
    """Patroni back to its recorded replicas, each member streaming; a
    member that cannot catch up is reinitialised (a reported sub-step) and
    otherwise its lag is reported."""
    driver.scale("StatefulSet", rec["name"], rec["replicas"])
    sctx.log(f"Scaled StatefulSet {rec['name']} back to {rec['replicas']}")
    driver.wait_pods_ready(rec["selector"], rec["replicas"], timeout=WAIT_PODS_SECONDS, check=check)
    reinitialised: list[str] = []
    lagging = _wait_streaming(driver, rec["replicas"], check, reinit_broken=True, sctx=sctx, done=reinitialised)
    if lagging:
        for name in sorted(lagging):
            if name in reinitialised:
                continue
            sctx.log(f"Sub-step: reinitialising {name} with patronictl reinit (it did not catch up: "
                     f"{lagging[name]})")
            _reinit(sctx, driver, name, reinitialised)
        lagging = _wait_streaming(driver, rec["replicas"], check, reinit_broken=False, sctx=sctx, done=reinitialised)
    for name, what in sorted(lagging.items()):
        sctx.log(f"WARNING: Patroni member {name} has not caught up: {what}")
    return {"replicas": rec["replicas"], "reinitialised": reinitialised, "lagging": lagging}


def _reinit(sctx, driver, name, done: list) -> None:
    """One reinit sub-step; a reinit that fails is reported (the member's
    lag is then in the step's data), it does not undo the restore."""
    done.append(name)
    try:
        driver.patroni_reinit(name)
        sctx.log(f"  {name}: reinit started")
    except OpsError as exc:
        sctx.log(f"  WARNING: {exc}")


def _wait_streaming(driver, count, check, *, reinit_broken, sctx, done) -> dict:
    """{member: what is wrong} once every member streams (empty), or what
    still lags after CATCH_UP_SECONDS.  A member Patroni reports broken is
    reinitialised at once when ``reinit_broken``."""
    give_up = time.monotonic() + CATCH_UP_SECONDS
    while True:
        members = driver.patroni_members()
        wrong = {}
        for m in members:
            state = str(m.get("State", "")).lower()
            lag = _lag(m)
            if state not in STREAMING_STATES:
                wrong[m.get("Member")] = f"state {state or 'unknown'}"
                if reinit_broken and state in BROKEN_STATES and m.get("Member") not in done:
                    sctx.log(f"Sub-step: reinitialising {m.get('Member')} with patronictl reinit (Patroni reports it "
                             f"{state})")
                    _reinit(sctx, driver, m.get("Member"), done)
            elif lag is not None and lag > MAX_LAG_MB:
                wrong[m.get("Member")] = f"lag {lag} MB"
        if len(members) < count:
            wrong["(members)"] = f"{len(members)} of {count} listed"
        if not wrong:
            return {}
        if time.monotonic() > give_up:
            return wrong
        if check:
            check()
        time.sleep(1)


def undo_patroni_single(sctx, params):
    params = _params(params)
    if not sctx.data.get("scaled"):
        return
    driver = _driver()
    out = _patroni_back(sctx, driver, sctx.data_of("record")["patroni"])
    sctx.record(put_back=out)


# --- cut-over (as restore.local) ------------------------------------------------------------------
def run_cutover(sctx, params):
    params = _params(params)
    _hold(sctx, params, "before:cutover")
    conninfo, _creds = _conninfo(_driver(), params)
    sctx.record(original_oid=sctx.data_of("preflight")["target_oid"])
    return _Cutover(conninfo, sctx.data_of("load"), log=sctx.log,
                    between=lambda: _hold(sctx, params, "cutover")).run().as_dict()


def undo_cutover(sctx, params):
    params = _params(params)
    conninfo, _creds = _conninfo(_driver(), params)
    data = dict(sctx.data)
    if not data.get("original_oid"):
        return
    data.setdefault("target", params["target"])
    done = _Cutover(conninfo, sctx.data_of("load"), log=sctx.log).undo(data)
    sctx.record(undone=done.undone)


# --- put back what was recorded -----------------------------------------------------------------
def run_restore_patroni(sctx, params):
    params = _params(params)
    _hold(sctx, params, "before:restore_patroni")
    return _patroni_back(sctx, _driver(), sctx.data_of("record")["patroni"], check=sctx.check_cancelled)


def run_resume(sctx, params):
    params = _params(params)
    _hold(sctx, params, "before:resume")
    driver = _driver()
    rec = sctx.data_of("record")
    quiesced = sctx.data_of("quiesce_offline") if params["mode"] == "offline" else sctx.data_of("quiesce")
    suspended = quiesced.get("suspended") or []
    if suspended:
        driver.resume_cronjobs([CronJobState(name, False) for name in suspended])
        sctx.log(f"Resumed CronJobs: {', '.join(suspended)} (those already suspended before stay so)")
    server = rec["server"]
    driver.scale(server["kind"], server["name"], server["replicas"])
    sctx.log(f"Scaled {server['kind']} {server['name']} back to {server['replicas']}; waiting for Ready")
    ready = driver.wait_pods_ready(server["selector"], server["replicas"], timeout=WAIT_PODS_SECONDS,
                                   check=sctx.check_cancelled) if server["replicas"] else []
    return {"resumed": suspended, "server_replicas": server["replicas"], "ready": ready}


def run_report(sctx, params):
    params = _params(params)
    _hold(sctx, params, "before:report")
    out = restore.report(safety_backup=sctx.data_of("safety_backup"), load=sctx.data_of("load"),
                         check=sctx.data_of("check"), cutover=sctx.data_of("cutover"))
    out["mode"] = params["mode"]
    out["safety_backup"] = sctx.data_of("safety_backup").get("backup")
    out["recorded"] = sctx.data_of("record")
    patroni = sctx.data_of("restore_patroni")
    out["patroni"] = {"switchover_from": sctx.data_of("patroni_single").get("switchover_from"),
                      "reinitialised": patroni.get("reinitialised", []), "lagging": patroni.get("lagging", {})}
    sctx.log(f"Restored {params['backup']} into {params['target']}: downtime {out.get('downtime_seconds')} s, "
             f"{out.get('rows', 0):,} rows; the previous data is kept as {out.get('pre_restore')}")
    mark_request(sctx, params, "finished", report=out)
    return out


def _with_test_points(steps):
    from dataclasses import replace

    return [replace(step, run=_testable(step.run, step.name)) for step in steps]


SERVER_BACK = ("oc scale <kind from the record step> <server> --replicas=<recorded replicas>; "
               "oc patch cronjob <name> -p '{\"spec\":{\"suspend\":false}}' for each name in this step's "
               "'suspended' list (only those).")

STEPS = runbook_kind("restore.openshift", title="Restore database (OpenShift)", advice=(
    "(resume continues from the step that was running; roll back undoes in reverse order and puts back the "
    "recorded replicas and CronJobs)"), steps=_with_test_points([
    Step("preflight", "Check permissions, the backup in its pod, Patroni and the target", run=run_preflight,
         timeout=3600, cancellable=True, manual="Nothing to undo: the preflight only reads."),
    Step("record", "Record the server's replicas, the active CronJobs and Patroni's members", run=run_record,
         timeout=120, manual="Nothing to undo: it only reads."),
    Step("quiesce_offline", "Stop the server and suspend the CronJobs (offline mode)", run=run_quiesce_offline,
         undo=undo_quiesce, timeout=WAIT_PODS_SECONDS + 120, cancellable=True, manual=SERVER_BACK),
    Step("safety_backup", "Take a safety backup with backup.sh -1 in the backup pod", run=run_safety_backup,
         timeout=4 * 3600, cancellable=True, manual="Nothing to undo: the safety backup is kept."),
    Step("load", "Load the backup into a staging database on the leader", run=run_load, undo=undo_load,
         timeout=6 * 3600, cancellable=True, manual="DROP DATABASE <staging> WITH (FORCE) (its name is in this "
         "step's data) and DROP ROLE each role listed in roles_created."),
    Step("check", "Check the staging database against the backup", run=run_check, timeout=3600,
         manual="Nothing to undo."),
    Step("quiesce", "Stop the server and suspend the CronJobs", run=run_quiesce, undo=undo_quiesce,
         timeout=WAIT_PODS_SECONDS + 120, cancellable=True, manual=SERVER_BACK),
    Step("patroni_single", "Bring Patroni to one member, the leader", run=run_patroni_single,
         undo=undo_patroni_single, timeout=WAIT_PODS_SECONDS + 420, manual=(
             "oc scale statefulset <patroni> --replicas=<recorded replicas>, then check patronictl list: every "
             "member streaming (patronictl reinit <cluster> <member> for one that is not).")),
    Step("cutover", "Swap the staging database in (the only interruption)", run=run_cutover, undo=undo_cutover,
         timeout=600, manual="If <target> is missing: ALTER DATABASE <pre_restore> RENAME TO <target>; "
         "ALTER DATABASE <target> ALLOW_CONNECTIONS true."),
    Step("restore_patroni", "Put Patroni back to its recorded members, streaming", run=run_restore_patroni,
         timeout=WAIT_PODS_SECONDS + 2 * CATCH_UP_SECONDS + 300, manual="Nothing to undo."),
    Step("resume", "Resume the suspended CronJobs and scale the server back", run=run_resume,
         timeout=WAIT_PODS_SECONDS + 120, manual=SERVER_BACK),
    Step("report", "Report downtime, durations, row counts and what was put back", run=run_report, timeout=120,
         manual="Nothing to undo."),
]))
