"""The OpenShift restore runbook (hcapadmin.restores.runbook_openshift) run by
real ``jobs_worker`` processes against a real Kubernetes API server (etcd +
kube-apiserver, RBAC, the portal's service-account token) behind the
stand-in, with real PostgreSQL underneath: the pods' commands (gunzip,
sha256sum, backup.sh -1, psql, patronictl) run for real through
tests/harness/patroni.py, which also plays the controllers and kubelet.

Whatever happens, the server ends at its recorded replicas, the CronJobs in
their recorded state and Patroni at its recorded members, and the target
holds either its old or the restored data.  Moments are reached with the
runbook's test hold (a Redis key), never by sleeping."""

from __future__ import annotations

import json
import os
import signal
import uuid
from datetime import timedelta

import pytest

from hcapadmin.audit.models import AuditEvent
from hcapadmin.jobs import locks
from hcapadmin.jobs.lifecycle import resume, roll_back, submit, sweep
from hcapadmin.jobs.models import Job
from hcapadmin.jobs.queue import redis_connection
from hcapadmin.restores import runbook_openshift  # noqa: F401  registers restore.openshift
from tests.harness.kubeapi import CRONJOBS, MERGE, kube_api, openshift_real  # noqa: F401  (fixtures)
from tests.harness.patroni import HcapCluster
from tests.test_jobs import admin_request
from tests.test_jobs_workers import wait_for, worker_log
from tests.test_restore_ops import approve, change_data, db_props, exists, make_db, snapshot, take_backup

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

KINDS = ["hcapadmin.restores.runbook_openshift"]
STEP_NAMES = ["preflight", "record", "quiesce_offline", "safety_backup", "load", "check", "quiesce",
              "patroni_single", "cutover", "restore_patroni", "resume", "report"]
STAMP = "20261125040506"
ALREADY_SUSPENDED = "hcap-open-expired-clean"
ACTIVE = [c for c in CRONJOBS if c != ALREADY_SUSPENDED]


@pytest.fixture(scope="module", autouse=True)
def _drop_test_databases(pg):
    yield
    out = pg.psql("SELECT datname FROM pg_database WHERE datname LIKE 'rbo\\_%'")
    for name in filter(None, out.splitlines()):
        pg.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Scene:
    def __init__(self, real, pg, settings, tmp_path, start_worker):
        self.real, self.pg, self.start_worker = real, pg, start_worker
        self.kube, self.ns = real.kube, real.namespace
        self.db = f"rbo_{uuid.uuid4().hex[:8]}"
        make_db(pg, self.db)
        self.backed_up = snapshot(pg, self.db)
        self.folder = tmp_path / "backups"
        self.path = take_backup(pg, self.folder, self.db)
        change_data(pg, self.db)
        self.live = snapshot(pg, self.db)
        self.oid = db_props(pg, self.db)["oid"]
        self.cluster = HcapCluster(real, pg, self.folder, database=self.db).start()
        self.kube.admin("PATCH", f"/apis/batch/v1/namespaces/{self.ns}/cronjobs/{ALREADY_SUSPENDED}",
                        {"spec": {"suspend": True}}, content_type=MERGE)
        wait_for(lambda: len(self.server_pods()) == 3, 60, "the server's 3 pods")
        settings.TARGET_DATABASE = self.db
        self.env = {"HCAPADMIN_PLATFORM": "openshift", "HCAPADMIN_OPENSHIFT_API_URL": real.url,
                    "HCAPADMIN_OPENSHIFT_CA_FILE": real.ca_file, "HCAPADMIN_OPENSHIFT_NAMESPACE": self.ns,
                    "HCAPADMIN_OPENSHIFT_TOKEN": real.portal_token,
                    "HCAPADMIN_OPENSHIFT_DATABASE_HOST": f"127.0.0.1:{pg.port}",
                    "HCAPADMIN_TARGET_DATABASE": self.db}
        self.workers = []
        self.recorded = self.world()

    # -- the job ------------------------------------------------------------------------
    def params(self, *, mode="online", hold=None, fail=None):
        size, sha = approve(self.path)
        rel = os.path.relpath(self.path, self.folder)
        params = {"target": self.db, "backup": os.path.basename(self.path),
                  "path": f"/backups/{rel}", "size": size, "sha256": sha, "mode": mode, "stamp": STAMP}
        if hold or fail:
            params["_hold"] = {"at": hold, "key": self.key, "fail": fail}
        return params

    @property
    def key(self):
        return f"hcapadmin:test:rbo:{self.db}"

    def entered(self) -> int:
        return int(redis_connection().get(f"{self.key}:entered") or 0)

    def release(self):
        redis_connection().set(f"{self.key}:release", "1", ex=600)

    def submit(self, params):
        job, created = submit("restore.openshift", params, request=admin_request(), target=self.db)
        assert created
        return job

    def worker(self):
        proc = self.start_worker(imports=KINDS, env=self.env)
        self.workers.append(proc)
        return proc

    def finished(self, job):
        try:
            wait_for(lambda: Job.objects.get(pk=job.pk).is_finished, 300, "the restore job to finish")
        except AssertionError:
            raise AssertionError("\n".join(worker_log(w)[-3000:] for w in self.workers)) from None
        return Job.objects.get(pk=job.pk)

    def kill_and_sweep(self, job, worker, settings):
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=60)
        job.refresh_from_db()
        assert sweep(now=job.heartbeat_at + timedelta(seconds=settings.JOB_STALE_SECONDS + 1)) == [job.pk]
        job.refresh_from_db()
        assert job.status == "abandoned"
        redis_connection().delete(locks.lock_key(self.db))
        redis_connection().delete(f"{self.key}:entered")

    # -- the world ------------------------------------------------------------------------
    def server_pods(self):
        return self.cluster.pods("deploymentconfig=hcap-server")

    def world(self) -> dict:
        dc = self.kube.admin("GET", f"/apis/apps.openshift.io/v1/namespaces/{self.ns}/deploymentconfigs/hcap-server")
        sts = self.kube.admin("GET", f"/apis/apps/v1/namespaces/{self.ns}/statefulsets/hcap-patroni")
        cronjobs = {c: self.kube.admin("GET", f"/apis/batch/v1/namespaces/{self.ns}/cronjobs/{c}")["spec"]["suspend"]
                    for c in CRONJOBS}
        return {"server": dc["spec"]["replicas"], "patroni": sts["spec"]["replicas"], "cronjobs": cronjobs}

    def assert_put_back(self):
        """Everything as recorded: 3 server pods Ready, Patroni's 3 members,
        the CronJobs as they were (the one suspended before stays so)."""
        assert self.world() == self.recorded == {"server": 3, "patroni": 3, "cronjobs": {
            "hcap-archive-withdrawn": False, "hcap-in-progress-stale-clean": False, ALREADY_SUSPENDED: True}}
        wait_for(lambda: len(self.server_pods()) == 3 and len(self.cluster.pods("cluster-name=hcap-patroni")) == 3,
                 60, "the pods as recorded")

    def assert_old(self):
        props = db_props(self.pg, self.db)
        assert props["oid"] == self.oid and props["allow"] is True
        assert snapshot(self.pg, self.db) == self.live
        assert not exists(self.pg, f"{self.db}_restore_{STAMP}")
        assert not exists(self.pg, f"{self.db}_pre_restore_{STAMP}")

    def assert_restored(self):
        props = db_props(self.pg, self.db)
        assert props["oid"] != self.oid and props["allow"] is True and props["limit"] == 7
        assert snapshot(self.pg, self.db) == self.backed_up
        assert db_props(self.pg, f"{self.db}_pre_restore_{STAMP}")["oid"] == self.oid
        assert not exists(self.pg, f"{self.db}_restore_{STAMP}")

    def changes(self) -> list[tuple]:
        """The portal's changes, in the order the API server received them:
        PATCHes (path tail and what they set) and the commands that change
        something (backup.sh -1, patronictl switchover/reinit)."""
        out = []
        for req in list(self.real.standin.requests):
            if req.method == "PATCH" and f"/namespaces/{self.ns}/" in req.path:
                body = json.loads(req.body or b"{}")
                value = body.get("spec", {}).get("replicas", body.get("spec", {}).get("suspend"))
                out.append(("PATCH", req.path.split(f"/namespaces/{self.ns}/", 1)[1], value))
            elif req.path.endswith("/exec") and f"/namespaces/{self.ns}/" in req.path:
                argv = req.query.get("command", [])
                if argv[:1] == ["./backup.sh"] or (argv[:1] == ["patronictl"] and
                                                    any(a in argv for a in ("switchover", "reinit"))):
                    out.append(("exec", req.path.split("/")[-2], " ".join(a for a in argv if a not in (
                        "-c", "/home/postgres/patroni.yml"))))
        return out


@pytest.fixture
def scene(openshift_real, pg, settings, tmp_path, jobs_worker_process):
    made = []

    def make():
        s = Scene(openshift_real, pg, settings, tmp_path, jobs_worker_process)
        made.append(s)
        return s

    yield make
    for s in made:
        s.cluster.stop()


def statuses(job) -> dict:
    return {s["name"]: s["status"] for s in Job.objects.get(pk=job.pk).runbook["steps"]}


def expected_changes(*, switchover_from=None, offline=False):
    quiesce = [("PATCH", "deploymentconfigs/hcap-server/scale", 0)] + [
        ("PATCH", f"cronjobs/{c}", True) for c in ACTIVE]
    backup = [("exec", "hcap-backup-3-x7k2p", "./backup.sh -1")]
    switch = ([("exec", switchover_from, f"patronictl switchover --master {switchover_from} --candidate "
                                         "hcap-patroni-0 --force")] if switchover_from else [])
    return ((quiesce + backup) if offline else (backup + quiesce)) + switch + [
        ("PATCH", "statefulsets/hcap-patroni/scale", 1),
        ("PATCH", "statefulsets/hcap-patroni/scale", 3),
    ] + [("PATCH", f"cronjobs/{c}", False) for c in ACTIVE] + [
        ("PATCH", "deploymentconfigs/hcap-server/scale", 3)]


# --- end to end ----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["online", "offline"])
def test_a_restore_runs_end_to_end_and_puts_back_what_it_recorded(scene, mode, client_as):
    s = scene()
    job = s.submit(s.params(mode=mode))
    assert [e["name"] for e in job.runbook["steps"]] == STEP_NAMES
    s.worker()
    job = s.finished(job)
    assert job.status == "succeeded", job.error
    assert statuses(job) == dict.fromkeys(STEP_NAMES, "done")
    s.assert_restored()
    s.assert_put_back()
    assert s.changes() == expected_changes(offline=mode == "offline")
    recorded = job.result["steps"]["record"]
    assert recorded["server"] == {"kind": "DeploymentConfig", "name": "hcap-server", "replicas": 3,
                                  "selector": "app=hcap-server,deploymentconfig=hcap-server"}
    assert {c["name"]: c["suspended"] for c in recorded["cronjobs"]} == s.recorded["cronjobs"]
    assert recorded["patroni"]["replicas"] == 3 and recorded["patroni"]["leader"] == "hcap-patroni-0"
    report = job.result["steps"]["report"]
    assert report["mode"] == mode and report["pre_restore"] == f"{s.db}_pre_restore_{STAMP}"
    assert report["rows"] == 523 and report["patroni"]["switchover_from"] is None
    assert job.result["steps"]["resume"]["resumed"] == ACTIVE
    # the load went from the backup pod into psql in the leader pod
    commands = [(pod, argv[0]) for pod, argv in s.cluster.execs]
    assert ("hcap-backup-3-x7k2p", "gunzip") in commands and ("hcap-patroni-0", "psql") in commands
    # no secret in the job's log, error, result, step data or audit events
    secrets_ = [s.pg.password, s.real.portal_token, "hcap-db-password"]
    texts = [job.log, job.error, json.dumps(job.result), json.dumps(job.runbook)]
    texts += [json.dumps([e.action, e.target, e.details]) for e in AuditEvent.objects.all()]
    client = client_as("admin")
    pages = [client.get(url) for url in (f"/jobs/{job.pk}/", f"/jobs/{job.pk}/live/", f"/api/v1/jobs/{job.pk}",
                                         "/jobs/")]
    pages.append(client_as("auditor").get("/audit/"))
    assert [p.status_code for p in pages] == [200] * len(pages)
    assert "hcap-patroni-0" in pages[0].content.decode()  # the page shows the job's steps and log
    texts += [p.content.decode() for p in pages]
    for text in texts:
        for secret in secrets_:
            assert secret not in text


def test_a_leader_other_than_pod_0_is_switched_over_first(scene):
    s = scene()
    s.cluster.set_leader("hcap-patroni-2")
    job = s.submit(s.params())
    s.worker()
    job = s.finished(job)
    assert job.status == "succeeded", job.error
    assert s.changes() == expected_changes(switchover_from="hcap-patroni-2")
    assert s.cluster.leader() == "hcap-patroni-0"
    assert job.result["steps"]["report"]["patroni"]["switchover_from"] == "hcap-patroni-2"
    s.assert_restored()
    s.assert_put_back()


# --- failures: compensation in reverse, nothing left scaled down or suspended ----------------------
@pytest.mark.parametrize("mode,command,failed_step,undone", [
    ("online", "sha256sum", "preflight", []),
    ("offline", "backup.sh", "safety_backup", ["quiesce_offline"]),
    # (online, quiesce_offline recorded "skipped": its undo has nothing to put back)
    ("online", "gunzip", "load", ["load", "quiesce_offline"]),
    ("online", "psql", "load", ["load", "quiesce_offline"]),
    ("online", "switchover", "patroni_single", ["patroni_single", "quiesce", "load", "quiesce_offline"]),
])
def test_a_failure_at_a_step_undoes_in_reverse_and_puts_everything_back(scene, mode, command, failed_step, undone):
    s = scene()
    if command == "switchover":
        s.cluster.set_leader("hcap-patroni-1")
    s.cluster.fail[command] = "injected failure"
    job = s.submit(s.params(mode=mode))
    s.worker()
    job = s.finished(job)
    assert job.status == "failed", job.error
    state = statuses(job)
    assert state[failed_step] in ("failed", "undone")
    assert [n for n in reversed(STEP_NAMES) if state[n] == "undone"] == undone
    assert "Undone:" in job.error or not undone
    s.assert_old()
    s.assert_put_back()
    if command == "sha256sum":
        assert s.changes() == []  # refused before changing anything


@pytest.mark.parametrize("mode,point,undone", [
    ("offline", "after:quiesce_offline", ["quiesce_offline"]),
    ("online", "after:quiesce", ["quiesce", "load", "quiesce_offline"]),
    ("online", "after:patroni_single", ["patroni_single", "quiesce", "load", "quiesce_offline"]),
    ("online", "after:cutover", ["cutover", "patroni_single", "quiesce", "load", "quiesce_offline"]),
    ("online", "after:restore_patroni", ["cutover", "patroni_single", "quiesce", "load", "quiesce_offline"]),
    ("offline", "after:resume", ["cutover", "patroni_single", "quiesce", "load", "quiesce_offline"]),
])
def test_a_failure_after_each_change_is_compensated(scene, mode, point, undone):
    s = scene()
    job = s.submit(s.params(mode=mode, fail=point))
    s.worker()
    job = s.finished(job)
    assert job.status == "failed", job.error
    assert f"test failure injected {point.replace(':', ' ')}" in job.error.lower()
    assert [n for n in reversed(STEP_NAMES) if statuses(job)[n] == "undone"] == undone
    s.assert_old()
    s.assert_put_back()


def test_a_member_that_does_not_stream_is_reinitialised_as_a_reported_sub_step(scene):
    s = scene()
    s.cluster.new_member_state = "start failed"
    job = s.submit(s.params())
    s.worker()
    job = s.finished(job)
    assert job.status == "succeeded", job.error
    back = job.result["steps"]["restore_patroni"]
    assert back["reinitialised"] == ["hcap-patroni-1", "hcap-patroni-2"] and back["lagging"] == {}
    assert "Sub-step: reinitialising hcap-patroni-1" in job.log
    assert [c for c in s.changes() if c[0] == "exec" and "reinit" in c[2]] == [
        ("exec", "hcap-patroni-0", "patronictl reinit hcap-patroni hcap-patroni-1 --force"),
        ("exec", "hcap-patroni-0", "patronictl reinit hcap-patroni hcap-patroni-2 --force")]
    s.assert_restored()
    s.assert_put_back()


# --- worker death, then resume or roll back ------------------------------------------------------
@pytest.mark.parametrize("hold,then", [("load", "resume"), ("before:patroni_single", "roll_back"),
                                       ("before:cutover", "roll_back"), ("cutover", "resume"),
                                       ("cutover", "roll_back"), ("before:restore_patroni", "resume"),
                                       ("before:resume", "roll_back")])
def test_worker_death_then_resume_or_roll_back(scene, settings, hold, then):
    s = scene()
    job = s.submit(s.params(hold=hold))
    worker = s.worker()
    wait_for(lambda: s.entered() >= 1, 240, f"the job to reach {hold}")
    s.kill_and_sweep(job, worker, settings)
    s.release()
    job.refresh_from_db()
    assert (resume if then == "resume" else roll_back)(job, request=admin_request("carol")) == "queued"
    s.worker()
    job = s.finished(job)
    if then == "resume":
        assert job.status == "succeeded", job.error
        s.assert_restored()
    else:
        assert job.status == "cancelled", job.error
        s.assert_old()
    s.assert_put_back()


# --- least privilege ---------------------------------------------------------------------------
def test_a_service_account_without_a_permission_is_told_which_and_nothing_changes(scene):
    s = scene()
    role_path = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{s.ns}/roles/hcapadmin"
    role = s.kube.admin("GET", role_path)
    for rule in role["rules"]:
        if "batch" in rule["apiGroups"]:
            rule["verbs"] = ["get", "list"]
    s.kube.admin("PUT", role_path, role)
    job = s.submit(s.params())
    s.worker()
    job = s.finished(job)
    assert job.status == "failed"
    assert "lacks patch cronjobs (API group batch)" in job.error and "nothing was changed" in job.error
    assert statuses(job)["preflight"] == "failed" and statuses(job)["record"] == "skipped"
    assert s.changes() == []
    s.assert_old()
    assert s.world() == s.recorded


# --- a conflict on a patch is read again and retried -------------------------------------------
def test_a_409_on_a_patch_reads_again_and_retries(openshift_real):
    real = openshift_real
    path = rf"/apis/batch/v1/namespaces/{real.namespace}/cronjobs/hcap-archive-withdrawn"
    seen = []

    def patch(req):
        seen.append(req.json)
        if len(seen) == 1:  # someone else changed the CronJob between the read and this patch
            return 409, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict",
                         "code": 409, "message": "the object has been modified; please apply your changes to the "
                                                 "latest version and try again"}
        return real.kube.request("PATCH", req.path, token=req.bearer, body=req.json,
                                 content_type=req.headers["content-type"])

    real.standin.route("PATCH", path, patch)
    driver = real.driver()
    states = driver.suspend_cronjobs(["hcap-archive-withdrawn"])
    assert [st.was_suspended for st in states] == [False] and len(seen) == 2
    reads = [r for r in real.standin.requests if r.method == "GET" and r.path == path]
    assert len(reads) == 2  # read again before the second patch
    assert real.kube.admin("GET", path)["spec"]["suspend"] is True


# --- a restore request on OpenShift ------------------------------------------------------------
def test_a_request_approved_by_another_person_runs_the_openshift_runbook_and_discards_the_previous_database(
        scene, client, settings):
    """The same requests and approvals as locally: the catalog and the pinned
    checksum come from the backup pod, the last approval submits
    restore.openshift, its preflight marks the request running and its report
    succeeded; discarding the kept database goes through the Patroni Secret's
    superuser too."""
    from hcapadmin.restores.models import RestoreRequest
    from tests.test_restores import as_user, post_json

    s = scene()
    for key, value in s.env.items():  # this process (the API) uses the same OpenShift driver as the worker
        setattr(settings, key.removeprefix("HCAPADMIN_"), value)
    name = os.path.basename(s.path)
    made = post_json(as_user(client, "alice", "admin"), "/api/v1/restores",
                     {"backup": name, "target": s.db, "mode": "online", "reason": "bad import on Monday",
                      "acknowledge_unverified": True})
    assert made.status_code == 201, made.content
    pk = made.json()["id"]
    assert made.json()["backup"]["sha256"] == approve(s.path)[1]
    approved = post_json(as_user(client, "april", "approver"), f"/api/v1/restores/{pk}/approve", {"comment": "ok"})
    assert approved.status_code == 200, approved.content
    job = Job.objects.get(pk=approved.json()["job"])
    assert job.kind == "restore.openshift" and job.params["request"] == pk
    assert job.params["path"] == "/backups/" + os.path.relpath(s.path, s.folder)
    stamp = job.params["stamp"]
    s.worker()
    job = s.finished(job)
    assert job.status == "succeeded", job.error
    req = RestoreRequest.objects.get(pk=pk)
    pre = f"{s.db}_pre_restore_{stamp}"
    assert req.status == "succeeded" and req.previous_database == pre and req.measured_mbps > 0
    assert snapshot(s.pg, s.db) == s.backed_up and exists(s.pg, pre)
    s.assert_put_back()
    response = post_json(as_user(client, "alice", "admin"), f"/api/v1/restores/{pk}/discard-previous",
                         {"confirm": pre})
    assert response.status_code == 202, response.content
    discard = s.finished(Job.objects.get(pk=response.json()["job"]))
    assert discard.status == "succeeded", discard.error
    assert not exists(s.pg, pre) and exists(s.pg, s.db)
    assert RestoreRequest.objects.get(pk=pk).previous_discarded
