"""The local restore as a runbook job: ``ops.restore``'s steps declared with
``runbook_kind`` so that the job machine persists each step's record, undoes
what ran when a step fails or someone cancels, and lets an admin resume or
roll back a job whose worker died.

``restore.local`` takes plain JSON parameters (the restore request app builds
them once the request is approved: hcapadmin.restores.workflow.job_params)::

    {"request": 12, "target": "hcap", "backup": "<catalog name>", "path": "/backups/.../x.sql.gz",
     "size": 123, "sha256": "<hex>", "mode": "online" | "offline", "stamp": "YYYYMMDDHHMMSS"}

``request`` (optional, for a job submitted directly) is the restore request
the job carries out: the preflight marks it ``running`` (and refuses when it
is not the approved request of this job) and the report step marks it
``succeeded`` with the report; any other end is mapped onto it by
``hcapadmin.restores.workflow.refresh``.

The target must be the managed database of the local platform driver: the
safety backup is taken through the driver, which backs up that database, and
the job locks ``hcapadmin.jobs.lifecycle.default_target()``, so no backup,
migration or other restore runs beside it.  The stamp is fixed at submit, so
every run of the load and of the cut-over (after a crash, on resume) names
the same staging and pre-restore databases.

Dropping the kept ``<db>_pre_restore_<stamp>`` is the request's own
``restore.discard_previous`` job (hcapadmin.restores.jobs).

Test hooks: with HCAPADMIN_TESTING on, a ``_hold`` parameter
``{"at": "<point>", "key": "<redis key prefix>"}`` makes the job stop at that
point until the Redis key ``<prefix>:release`` exists, after setting
``<prefix>:entered``, so that tests can kill the worker or break something at
an exact moment without sleeping.  Points: ``before:<step>``, ``load`` (in
the middle of the load, after the first chunk holding COPY data was sent to
psql, before COMMIT),
``cutover`` (after each rename of the cut-over: between its two renames,
and on a rerun that finishes a half-done swap, before connections are
allowed again).  Outside tests the
parameter is refused.  See docs/restores.md, "The runbook as a job".
"""

from __future__ import annotations

import re
import time

import psycopg
from django.conf import settings

from hcapadmin.core.platform import get_driver
from hcapadmin.jobs.runbook import Step, runbook_kind
from ops import restore
from ops.errors import Invalid, OpsError

MODES = ("online", "offline")
PARAM_KEYS = {"target", "backup", "path", "size", "sha256", "mode", "stamp"}
OPTIONAL_KEYS = {"request"}  # the restore request's id, absent on a direct submit
HOLD_GUARD_SECONDS = 600  # a failure guard for the test hooks only
SAFETY_LABEL = "safety backup"


# --- parameters and connection ----------------------------------------------------------
def validate_params(params) -> dict:
    """The runbook's parameters, checked; raises Invalid naming the first bad one."""
    if not isinstance(params, dict):
        raise Invalid("restore parameters must be a JSON object")
    missing = sorted(PARAM_KEYS - set(params))
    if missing:
        raise Invalid(f"restore parameters lack {', '.join(missing)}")
    extra = sorted(set(params) - PARAM_KEYS - OPTIONAL_KEYS - {"_hold"})
    if extra:
        raise Invalid(f"unknown restore parameters: {', '.join(extra)}")
    if "_hold" in params and not getattr(settings, "TESTING", False):
        raise Invalid("unknown restore parameters: _hold")
    restore.validate_target(params["target"])
    restore.validate_stamp(params["stamp"])
    if params["mode"] not in MODES:
        raise Invalid("mode must be online or offline")
    size = params["size"]
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise Invalid("size must be a positive number of bytes")
    if not isinstance(params["sha256"], str) or not re.fullmatch(r"[0-9a-f]{64}", params["sha256"]):
        raise Invalid("sha256 must be 64 lowercase hex digits")
    for key in ("backup", "path"):
        if not isinstance(params[key], str) or not params[key] or "\x00" in params[key]:
            raise Invalid(f"{key} must be a non-empty string")
    if "request" in params:
        pk = params["request"]
        if not isinstance(pk, int) or isinstance(pk, bool) or pk <= 0:
            raise Invalid("request must be a restore request's id")
    return params


def _restore_request(params):
    """The restore request this job carries out (None on a direct submit)."""
    if "request" not in params:
        return None
    from hcapadmin.restores.models import RestoreRequest

    try:
        return RestoreRequest.objects.get(pk=params["request"])
    except RestoreRequest.DoesNotExist:
        raise Invalid(f"restore request #{params['request']} does not exist") from None


def mark_request(sctx, params, event: str, *, report: dict | None = None) -> None:
    """The restore request's side of a restore job, for every platform's
    runbook: ``"started"`` (in the preflight) marks the approved request
    running with this job, after checking that the job carries out exactly
    what was approved; ``"finished"`` (in the report step) marks it
    succeeded with the report.  A job without a ``request`` (submitted by
    hand) has no request to mark."""
    req = _restore_request(params)
    if req is None:
        return
    from hcapadmin.restores import workflow
    from hcapadmin.restores.models import RUNNING, SUCCEEDED

    if event == "finished":
        req.finish(SUCCEEDED, result=workflow.result_of(report or {}), measured_mbps=workflow.measured_rate(req))
        return
    if event != "started":
        raise ValueError(f"unknown restore request event {event!r}")
    if not req.mark_started(sctx.job_id):
        req.refresh_from_db()
        if req.status != RUNNING or req.job_id != sctx.job_id:  # a rerun finds it running already
            owner = "" if req.job_id in (None, sctx.job_id) else f" (its job is #{req.job_id})"
            raise Invalid(f"restore request #{req.pk} is {req.status}{owner}, not approved for this job; "
                          "not starting it")
    for key, pinned in (("target", req.target), ("backup", req.backup_name), ("size", req.backup_size),
                        ("sha256", req.backup_sha256), ("mode", req.mode)):
        if params[key] != pinned:
            raise Invalid(f"the job's {key} is not the one approved in restore request #{req.pk}")


def managed_conninfo(target: str) -> str:
    """The local driver's connection string to the managed database (ops.restore
    switches to the maintenance database itself).  The target must be that
    database: the safety backup, taken through the driver, covers only it."""
    driver = get_driver()
    conninfo = getattr(driver, "database_conninfo", None)
    if not conninfo:
        raise OpsError(f"restore.local needs the local platform driver; this portal runs {driver.name}")
    managed = psycopg.conninfo.conninfo_to_dict(conninfo).get("dbname")
    if managed != target:
        raise Invalid(f"the target {target} is not the managed database ({managed}) of this portal")
    return conninfo


# --- test hooks -----------------------------------------------------------------------
def _hold(sctx, params, point: str, *, in_thread: bool = False) -> None:
    """Wait at ``point`` while a test holds it (see the module docstring).
    ``in_thread``: called from the load's pump thread, which must not touch
    the job's database connection (the main thread keeps checking)."""
    spec = params.get("_hold")
    if not spec or not getattr(settings, "TESTING", False) or spec.get("at") != point:
        return
    from hcapadmin.jobs.queue import redis_connection

    conn = redis_connection()
    prefix = str(spec["key"])
    conn.incr(f"{prefix}:entered")
    if not in_thread:
        sctx.log(f"test hold at {point}")
    deadline = time.monotonic() + HOLD_GUARD_SECONDS
    while not conn.exists(f"{prefix}:release"):
        if not in_thread:
            sctx.check_cancelled()
        if time.monotonic() > deadline:
            raise OpsError(f"test hold at {point} was never released")
        time.sleep(0.05)


def _held_filter(sctx, params):
    """The load's hook after the first chunk of COPY data reached psql: None
    (nothing to call) unless a test asks to hold at ``load``."""
    spec = params.get("_hold")
    if not spec or not getattr(settings, "TESTING", False) or spec.get("at") != "load":
        return None
    return lambda: _hold(sctx, params, "load", in_thread=True)


class _Cutover(restore.Cutover):
    """ops.restore.Cutover with a test hook after each rename of its run:
    between the two renames, and (on a run that finishes a swap a killed
    worker left half done) between the rename and allowing connections."""

    def __init__(self, *args, between=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._between = between
        self._running = False

    def run(self):
        self._running = True
        try:
            return super().run()
        finally:
            self._running = False

    def _rename(self, conn, old, new, holders):
        out = super()._rename(conn, old, new, holders)
        if self._between and self._running and (old, new) in ((self.target, self.pre), (self.staging, self.target)):
            self._between()
        return out


# --- the steps ------------------------------------------------------------------------
def _ctx(sctx, params):
    params = validate_params(params)
    return params, managed_conninfo(params["target"])


def run_preflight(sctx, params):
    params, conninfo = _ctx(sctx, params)
    _hold(sctx, params, "before:preflight")
    mark_request(sctx, params, "started")
    result = restore.preflight(conninfo, params["path"], expected_size=params["size"],
                               expected_sha256=params["sha256"], target=params["target"],
                               check=sctx.check_cancelled, log=sctx.log)
    # Another job on the same database cannot be running: the engine holds the
    # target's lock for the whole runbook (hcapadmin.jobs.locks).
    return {**result.as_dict(), "mode": params["mode"], "lock": sctx.target}


def run_block(sctx, params):
    params, conninfo = _ctx(sctx, params)
    _hold(sctx, params, "before:block")
    if params["mode"] != "offline":
        sctx.log("Online restore: the application keeps working until the cut-over")
        return {"skipped": True, "mode": "online"}
    pre = sctx.data_of("preflight")
    return restore.BlockConnections(conninfo, params["target"], original_connection_limit=pre["connection_limit"],
                                    target_oid=pre["target_oid"], log=sctx.log).run().as_dict()


def undo_block(sctx, params):
    params, conninfo = _ctx(sctx, params)
    if params["mode"] != "offline":
        return
    pre = sctx.data_of("preflight")
    if not pre.get("target_oid"):
        return  # the preflight never finished: nothing was blocked
    record = {"target": params["target"], "target_oid": pre["target_oid"],
              "previous_connection_limit": pre["connection_limit"]}
    restore.BlockConnections(conninfo, params["target"], original_connection_limit=pre["connection_limit"],
                             target_oid=pre["target_oid"], log=sctx.log).undo(record)


def run_safety_backup(sctx, params):
    params, _conninfo = _ctx(sctx, params)
    _hold(sctx, params, "before:safety_backup")
    return take_safety_backup(sctx, params, get_driver(), kept="in the catalog")


def take_safety_backup(sctx, params, driver, *, kept: str) -> dict:
    """The safety backup step of every platform's runbook: an ordinary backup
    through the driver, recorded with its label; ``kept`` says where it stays."""
    sctx.check_cancelled()
    entry = driver.take_backup(log=sctx.log, check=sctx.check_cancelled)
    if entry is None:
        sctx.log("The safety backup finished; its file name was not reported (see the catalog).")
        return {"label": SAFETY_LABEL, "backup": None}
    sctx.log(f"Safety backup {entry.name} ({entry.size_bytes / 1e6:,.1f} MB) is kept {kept}")
    return {"label": SAFETY_LABEL, "backup": entry.name, "size_bytes": entry.size_bytes, "database": entry.database,
            "kind": entry.kind, "before_restore_of": params["backup"]}


def role_memory(sctx) -> dict:
    """LoadStaging's ``own_roles`` and ``record_roles`` for a load step: the
    roles an earlier run of the step created (its worker died) are this
    restore's own and reused; the roles it creates are saved in the step's
    data before they are committed, so an undo after a crash drops exactly
    these."""
    own = dict(sctx.data.get("role_oids") or {})

    def record_roles(oids):
        sctx.record(role_oids={**own, **oids})

    return {"own_roles": own, "record_roles": record_roles}


def run_load(sctx, params):
    params, conninfo = _ctx(sctx, params)
    _hold(sctx, params, "before:load")
    staging = restore.staging_name(params["target"], params["stamp"])
    sctx.record(staging=staging)  # before it exists, so an undo after a crash looks for it
    load = restore.LoadStaging(conninfo, params["path"], params["target"], sha256=params["sha256"],
                               stamp=params["stamp"], check=sctx.check_cancelled, log=sctx.log,
                               after_copy_data=_held_filter(sctx, params), **role_memory(sctx))
    return load.run().as_dict()


def load_to_undo(sctx, conninfo: str, params: dict) -> dict | None:
    """What the load step's undo hands to ``LoadStaging.undo``: the step's
    record, or, when the load never finished (it failed, was cancelled or
    its worker died), the staging database left under its name (by OID, if
    any) and the roles it recorded.  None when there is nothing to undo.
    Both runbooks' load undo use it."""
    data = dict(sctx.data)
    staging = data.get("staging") or restore.staging_name(params["target"], params["stamp"])
    if not data.get("staging_oid"):
        with psycopg.connect(restore.with_dbname(conninfo, restore.MAINTENANCE_DB), autocommit=True,
                             connect_timeout=10) as conn:
            row = conn.execute("SELECT oid FROM pg_database WHERE datname = %s", (staging,)).fetchone()
        data.update(target=params["target"], staging=staging, staging_oid=int(row[0]) if row else 0)
        if row is None:
            sctx.log(f"{staging} does not exist")
            if not data.get("role_oids"):
                return None
    return data


def undo_load(sctx, params):
    params, conninfo = _ctx(sctx, params)
    data = load_to_undo(sctx, conninfo, params)
    if data is None:
        return
    done = restore.LoadStaging(conninfo, params["path"], params["target"], sha256=params["sha256"],
                               stamp=params["stamp"], log=sctx.log).undo(data)
    sctx.record(undone=True, roles_dropped=done.roles_dropped, roles_kept=done.roles_kept)


def run_check(sctx, params):
    params, conninfo = _ctx(sctx, params)
    _hold(sctx, params, "before:check")
    limit = sctx.data_of("preflight")["connection_limit"] if params["mode"] == "offline" else None
    return restore.check_staging(conninfo, sctx.data_of("load"), connection_limit=limit, log=sctx.log).as_dict()


def _cutover(sctx, params, conninfo):
    return _Cutover(conninfo, sctx.data_of("load"), log=sctx.log, between=lambda: _hold(sctx, params, "cutover"))


def run_cutover(sctx, params):
    params, conninfo = _ctx(sctx, params)
    _hold(sctx, params, "before:cutover")
    # the original database's OID, before anything is renamed: an undo after a
    # crash between the renames finds it under either name
    sctx.record(original_oid=sctx.data_of("preflight")["target_oid"])
    return _cutover(sctx, params, conninfo).run().as_dict()


def undo_cutover(sctx, params):
    params, conninfo = _ctx(sctx, params)
    data = dict(sctx.data)
    if not data.get("original_oid"):
        return  # it never started
    data.setdefault("target", params["target"])
    done = _cutover(sctx, params, conninfo).undo(data)
    sctx.record(undone=done.undone)


def run_report(sctx, params):
    params, _conninfo = _ctx(sctx, params)
    _hold(sctx, params, "before:report")
    block = sctx.data_of("block")
    out = restore.report(preflight=sctx.data_of("preflight"), safety_backup=sctx.data_of("safety_backup"),
                         block=None if block.get("skipped") else block, load=sctx.data_of("load"),
                         check=sctx.data_of("check"), cutover=sctx.data_of("cutover"))
    out["mode"] = params["mode"]
    out["safety_backup"] = sctx.data_of("safety_backup").get("backup")
    sctx.log(f"Restored {params['backup']} into {params['target']}: downtime {out.get('downtime_seconds')} s, "
             f"{out.get('rows', 0):,} rows; the previous data is kept as {out.get('pre_restore')}")
    mark_request(sctx, params, "finished", report=out)
    return out


STEPS = runbook_kind("restore.local", title="Restore database", advice=(
    "(resume continues from the step that was running; roll back undoes in reverse order. The job's steps record "
    "the staging and pre-restore database names)"), steps=[
    Step("preflight", "Check the backup file, the target and the free space", run=run_preflight, timeout=3600,
         cancellable=True, manual="Nothing to undo: the preflight only reads."),
    Step("block", "Close the database to the application (offline mode)", run=run_block, undo=undo_block,
         timeout=300, manual="ALTER DATABASE <target> CONNECTION LIMIT <previous_connection_limit from the "
         "preflight's data> (offline mode only)."),
    Step("safety_backup", "Take a safety backup of the live database", run=run_safety_backup, timeout=4 * 3600,
         cancellable=True, manual="Nothing to undo: the safety backup is kept in the catalog (a leftover "
         ".sql.gz.in_progress file can be deleted)."),
    Step("load", "Load the backup into a staging database", run=run_load, undo=undo_load, timeout=6 * 3600,
         cancellable=True, manual="DROP DATABASE <staging> WITH (FORCE) (its name is in this step's data) and "
         "DROP ROLE each role listed in role_oids (recorded before they were created), if it still has that OID."),
    Step("check", "Check the staging database against the backup", run=run_check, timeout=3600,
         manual="Nothing to undo: the check only gives staging the target's owner, privileges and settings."),
    Step("cutover", "Swap the staging database in (the only interruption)", run=run_cutover, undo=undo_cutover,
         timeout=600, manual="If <target> is missing: ALTER DATABASE <pre_restore> RENAME TO <target>; "
         "ALTER DATABASE <target> ALLOW_CONNECTIONS true. To put the old data back: rename <target> to <staging> "
         "and <pre_restore> to <target>, then allow connections on both."),
    Step("report", "Report downtime, durations and row counts", run=run_report, timeout=120,
         manual="Nothing to undo."),
])
