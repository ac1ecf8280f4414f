"""The OpenShift driver's backup operations against a real kube-apiserver
behind the stand-in API (pods, ConfigMaps, RBAC), over real HTTPS; exec in the
backup pod is the stand-in's, over the websocket channel protocol."""

from __future__ import annotations

import json
import threading

import pytest

from ops.backups import VerifyFailed, find_argv
from ops.errors import Forbidden, NotFound, OpsError, Unavailable
from tests.harness.kubeapi import BACKUP_POD, kube_api, mark_ready, openshift_real  # noqa: F401  (fixtures)

EXEC = r"/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<pod>[^/]+)/exec"
POD = BACKUP_POD
NEW = "hcap-patroni-hcap_2026-11-25_08-50-00.sql.gz"
LISTING = (
    "daily/2026-11-24/hcap-patroni-hcap_2026-11-24_01-00-00.sql.gz\t5242880\n"
    "weekly/2026-11-22/hcap-patroni-hcap_2026-11-22_01-00-00.sql.gz\t5100000\n"
    "monthly/2026-10-31/hcap-patroni-hcap_2026-10-31_01-00-00.sql.gz\t4900000\n"
    "daily/2026-11-25/hcap-patroni-hcap_2026-11-25_01-00-00.sql.gz.in_progress\t1000\n"
    "daily/2026-11-25/not-a-backup.txt\t3\n"
)


def exit_status(code):
    if code == 0:
        return '{"metadata":{},"status":"Success"}'
    return json.dumps({"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
                       "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}})


@pytest.fixture
def driver(openshift_real):
    """The portal's driver with its service account token, through the
    stand-in (the ``standin`` fixture, forwarding) to the real server."""
    return openshift_real.driver()


def test_listing_runs_find_as_argv_and_parses_lines_split_across_frames(openshift_real, standin, driver):
    commands = []

    def handler(req, ws):
        commands.append(req.query["command"])
        ws.send_channel(1, LISTING[:70])  # a line split across two websocket frames
        ws.send_channel(1, LISTING[70:])
        ws.send_channel(3, exit_status(0))

    standin.websocket(EXEC, handler)
    entries = driver.list_backups()
    listings = [r for r in standin.requests if r.path == f"/api/v1/namespaces/{openshift_real.namespace}/pods"]
    assert [r.query["labelSelector"] for r in listings] == [["deploymentconfig=hcap-backup"]]
    assert commands == [find_argv("/backups")]
    assert [(e.kind, e.size_bytes, e.in_progress) for e in entries] == [
        ("daily", 1000, True), ("daily", 5242880, False), ("weekly", 5100000, False), ("monthly", 4900000, False)]
    assert entries[1].path == "/backups/daily/2026-11-24/hcap-patroni-hcap_2026-11-24_01-00-00.sql.gz"
    assert {r.bearer for r in standin.requests} == {openshift_real.portal_token}


def test_manual_backup_streams_backup_sh_output_as_it_arrives(standin, driver):
    first_logged = threading.Event()
    streamed = []

    def handler(req, ws):
        command = req.query["command"]
        if command == ["./backup.sh", "-1"]:
            ws.send_channel(1, "Backing up 'hcap-patroni/hcap' to '/backups/daily/2026-11-25/" + NEW + ".in_pro")
            ws.send_channel(1, "gress' ...\n")
            # The rest is sent only once the first line is in the job log: a driver that logged only at the
            # end would leave this waiting (the generous limit only keeps a broken driver from hanging the test).
            streamed.append(first_logged.wait(timeout=60))
            ws.send_channel(2, "pg_dump: warning: something harmless\n")
            ws.send_channel(1, "Elapsed time: 0h:0m:5s - Status Code: 0\n")
            ws.send_channel(1, f"Database backup written to /backups/daily/2026-11-25/{NEW}\n")
            ws.send_channel(3, exit_status(0))
        else:
            ws.send_channel(1, LISTING + f"daily/2026-11-25/{NEW}\t5300000\n")
            ws.send_channel(3, exit_status(0))

    standin.websocket(EXEC, handler)
    lines = []

    def log(line):
        lines.append(line)
        if line.startswith("Backing up"):
            first_logged.set()

    entry = driver.take_backup(log=log)
    assert entry.name == NEW and entry.size_bytes == 5300000 and not entry.in_progress
    assert lines[0] == f"Running ./backup.sh -1 in pod {POD}"
    assert lines[1].startswith("Backing up 'hcap-patroni/hcap'") and lines[1].endswith(".in_progress' ...")
    assert "pg_dump: warning: something harmless" in lines
    assert streamed == [True]  # the first line was logged before the rest existed


def test_backup_sh_failing_is_a_clear_error(standin, driver):
    def handler(req, ws):
        ws.send_channel(1, "Backing up ...\n")
        ws.send_channel(2, "pg_dump: error: connection to server failed: FATAL: too many connections\n")
        ws.send_channel(3, exit_status(1))

    standin.websocket(EXEC, handler)
    with pytest.raises(OpsError) as info:
        driver.take_backup(log=lambda line: None)
    assert "backup.sh -1" in str(info.value) and "exit 1" in str(info.value)
    assert "too many connections" in str(info.value)


def test_no_running_backup_pod(openshift_real, driver):
    kube, ns = openshift_real.kube, openshift_real.namespace
    kube.admin("PATCH", f"/api/v1/namespaces/{ns}/pods/{POD}/status", {"status": {"phase": "Failed"}},
               content_type="application/merge-patch+json")
    with pytest.raises(Unavailable) as info:
        driver.list_backups()
    assert "no running backup pod" in str(info.value)


def test_pod_gone_between_listing_and_exec(openshift_real, standin, driver):
    ran = []
    standin.websocket(EXEC, lambda req, ws: ran.append(req.path))
    pod_name = driver.backup_pod()
    openshift_real.kube.admin("DELETE", f"/api/v1/namespaces/{openshift_real.namespace}/pods/{pod_name}")
    with pytest.raises(NotFound):  # the real server no longer has the pod: its exec answers 404
        driver.exec(pod_name, find_argv("/backups"))
    assert ran == []


def test_forbidden_service_account(openshift_real):
    # nora's token: the real server's RBAC refuses listing pods (403)
    driver = openshift_real.driver(token=openshift_real.token("nora"))
    with pytest.raises(Forbidden):
        driver.list_backups()
    with pytest.raises(Forbidden):
        driver.take_backup(log=lambda line: None)


def test_a_token_that_may_list_pods_but_not_exec_is_refused_exec(openshift_real, standin):
    ran = []
    standin.websocket(EXEC, lambda req, ws: ran.append(req.path))
    driver = openshift_real.driver(token=openshift_real.token("vic"))  # hcap-viewers: get/list pods only
    assert driver.backup_pod() == POD
    with pytest.raises(Forbidden):
        driver.list_backups()
    assert ran == []


def test_verify_parses_backup_sh_outcome(standin, driver):
    outcome = {}

    def handler(req, ws):
        outcome["command"] = req.query["command"]
        for line in outcome["lines"]:
            ws.send_channel(1, line + "\n")
        ws.send_channel(3, exit_status(outcome["code"]))

    standin.websocket(EXEC, handler)
    from ops.backups import entry_from_path

    entry = entry_from_path("daily/2026-11-24/hcap-patroni-hcap_2026-11-24_01-00-00.sql.gz", 5, "/backups")
    outcome.update(lines=["Restoring from backup ...", "Verification Summary:",
                          f" - {entry.path}: Status: PASSED"], code=0)
    found = driver.verify_backup(entry, log=lambda line: None)
    assert outcome["command"] == ["./backup.sh", "-v", "all", "-f", entry.path]
    assert "PASSED" in found.summary and found.details == {"pod": POD, "summary": found.summary}
    outcome.update(lines=["Restoring from backup ...", "psql: ERROR:  syntax error at end of input",
                          "Verification Summary:", f" - {entry.path}: Status: FAILED"], code=1)
    with pytest.raises(VerifyFailed) as info:
        driver.verify_backup(entry, log=lambda line: None)
    assert "syntax error" in str(info.value)


def test_cluster_state_from_pods_and_leader_configmap(openshift_real, driver):
    kube, ns = openshift_real.kube, openshift_real.namespace
    status = lambda role, state: json.dumps({"role": role, "state": state, "xlog_location": 123})  # noqa: E731
    merge = "application/merge-patch+json"
    for name, value in (("hcap-patroni-0", status("replica", "running")), ("hcap-patroni-1", status("master", "running")),
                        ("hcap-patroni-2", "not json")):
        kube.admin("PATCH", f"/api/v1/namespaces/{ns}/pods/{name}", {"metadata": {"annotations": {"status": value}}},
                   content_type=merge)
    kube.admin("PATCH", f"/api/v1/namespaces/{ns}/configmaps/hcap-patroni-leader",
               {"metadata": {"annotations": {"leader": "hcap-patroni-1"}}}, content_type=merge)
    # a pod of another cluster in the namespace is not a member
    kube.admin("POST", f"/api/v1/namespaces/{ns}/pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "other-patroni-0", "labels": {"cluster-name": "other-patroni"}},
        "spec": {"containers": [{"name": "patroni", "image": "patroni:latest"}]}})
    mark_ready(kube, ns, "other-patroni-0", "10.1.0.99")
    cluster = driver.cluster_state()
    assert cluster.mode == "patroni" and cluster.leader == "hcap-patroni-1"
    assert [(m.name, m.role, m.state) for m in cluster.members] == [
        ("hcap-patroni-0", "replica", "running"), ("hcap-patroni-1", "leader", "running"),
        ("hcap-patroni-2", "unknown", "Running")]


@pytest.mark.django_db
def test_manual_backup_job_on_openshift_streams_into_the_job_log(openshift_real, standin, run_jobs, settings):
    from django.test import RequestFactory

    from hcapadmin.accounts.principal import Principal
    from hcapadmin.jobs.lifecycle import submit

    settings.PLATFORM = "openshift"
    settings.OPENSHIFT_API_URL = openshift_real.url
    settings.OPENSHIFT_NAMESPACE = openshift_real.namespace
    settings.OPENSHIFT_TOKEN = openshift_real.portal_token
    settings.OPENSHIFT_CA_FILE = openshift_real.ca_file

    def handler(req, ws):
        if req.query["command"] == ["./backup.sh", "-1"]:
            ws.send_channel(1, f"Database backup written to /backups/daily/2026-11-25/{NEW}\n")
        else:
            ws.send_channel(1, f"daily/2026-11-25/{NEW}\t5300000\n")
        ws.send_channel(3, exit_status(0))

    standin.websocket(EXEC, handler)
    request = RequestFactory().post("/")
    request.principal = Principal(name="alice", groups=("hcap-admins",), roles=frozenset({"admin"}))
    job, _ = submit("backup.manual", {}, request=request, target="hcap")
    run_jobs()
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert job.result["backup"] == NEW and job.result["size_bytes"] == 5300000
    assert f"Database backup written to /backups/daily/2026-11-25/{NEW}" in job.log
    assert openshift_real.portal_token not in job.log
    assert {r.bearer for r in standin.requests} == {openshift_real.portal_token}
