"""The OpenShift driver's backup operations against the stand-in API over
real HTTPS and the websocket exec channel protocol."""

from __future__ import annotations

import json
import threading

import pytest

from ops.backups import VerifyFailed, find_argv
from ops.errors import Forbidden, NotFound, OpsError, Unavailable
from ops.platform.openshift import OpenShiftDriver
from tests.harness.openshift import status_body

NS = "hcap-prod"
POD = "hcap-backup-3-x7k2p"
EXEC = rf"/api/v1/namespaces/{NS}/pods/(?P<pod>[^/]+)/exec"
PODS = rf"/api/v1/namespaces/{NS}/pods"
NEW = "hcap-patroni-hcap_2026-11-25_08-50-00.sql.gz"
LISTING = (
    "daily/2026-11-24/hcap-patroni-hcap_2026-11-24_01-00-00.sql.gz\t5242880\n"
    "weekly/2026-11-22/hcap-patroni-hcap_2026-11-22_01-00-00.sql.gz\t5100000\n"
    "monthly/2026-10-31/hcap-patroni-hcap_2026-10-31_01-00-00.sql.gz\t4900000\n"
    "daily/2026-11-25/hcap-patroni-hcap_2026-11-25_01-00-00.sql.gz.in_progress\t1000\n"
    "daily/2026-11-25/not-a-backup.txt\t3\n"
)


def pod(name, phase="Running", annotations=None, created="2026-11-20T00:00:00Z"):
    return {"metadata": {"name": name, "namespace": NS, "creationTimestamp": created, "annotations": annotations or {}},
            "status": {"phase": phase, "podIP": "10.1.0.7"}}


def pod_list(*items):
    return {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": list(items)}


def exit_status(code):
    if code == 0:
        return '{"metadata":{},"status":"Success"}'
    return json.dumps({"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
                       "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}})


@pytest.fixture
def driver(standin):
    return OpenShiftDriver(api_url=standin.url, namespace=NS, token="sa-token", ca_file=str(standin.ca_file))


@pytest.fixture
def backup_pod(standin):
    seen = {}

    def pods(req):
        seen["selector"] = req.query.get("labelSelector", [""])[0]
        return 200, pod_list(pod(POD), pod("hcap-backup-2-old", phase="Succeeded"))

    standin.route("GET", PODS, pods)
    return seen


def test_listing_runs_find_as_argv_and_parses_lines_split_across_frames(standin, driver, backup_pod):
    commands = []

    def handler(req, ws):
        commands.append(req.query["command"])
        ws.send_channel(1, LISTING[:70])  # a line split across two websocket frames
        ws.send_channel(1, LISTING[70:])
        ws.send_channel(3, exit_status(0))

    standin.websocket(EXEC, handler)
    entries = driver.list_backups()
    assert backup_pod["selector"] == "deploymentconfig=hcap-backup"
    assert commands == [find_argv("/backups")]
    assert [(e.kind, e.size_bytes, e.in_progress) for e in entries] == [
        ("daily", 1000, True), ("daily", 5242880, False), ("weekly", 5100000, False), ("monthly", 4900000, False)]
    assert entries[1].path == "/backups/daily/2026-11-24/hcap-patroni-hcap_2026-11-24_01-00-00.sql.gz"
    assert standin.requests[-1].bearer == "sa-token"


def test_manual_backup_streams_backup_sh_output_as_it_arrives(standin, driver, backup_pod):
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


def test_backup_sh_failing_is_a_clear_error(standin, driver, backup_pod):
    def handler(req, ws):
        ws.send_channel(1, "Backing up ...\n")
        ws.send_channel(2, "pg_dump: error: connection to server failed: FATAL: too many connections\n")
        ws.send_channel(3, exit_status(1))

    standin.websocket(EXEC, handler)
    with pytest.raises(OpsError) as info:
        driver.take_backup(log=lambda line: None)
    assert "backup.sh -1" in str(info.value) and "exit 1" in str(info.value)
    assert "too many connections" in str(info.value)


def test_no_running_backup_pod(standin, driver):
    standin.route("GET", PODS, lambda req: (200, pod_list(pod("hcap-backup-2-old", phase="Failed"))))
    with pytest.raises(Unavailable) as info:
        driver.list_backups()
    assert "no running backup pod" in str(info.value)


def test_pod_gone_between_listing_and_exec(standin, driver, backup_pod):
    # no websocket route: the exec upgrade answers 404, as for a deleted pod
    with pytest.raises(NotFound):
        driver.list_backups()


def test_forbidden_service_account(standin, driver):
    standin.route("GET", PODS, lambda req: (403, status_body(403, "pods is forbidden", "Forbidden")))
    with pytest.raises(Forbidden):
        driver.list_backups()
    with pytest.raises(Forbidden):
        driver.take_backup(log=lambda line: None)


def test_verify_parses_backup_sh_outcome(standin, driver, backup_pod):
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


def test_cluster_state_from_pods_and_leader_configmap(standin, driver):
    status = lambda role, state: json.dumps({"role": role, "state": state, "xlog_location": 123})  # noqa: E731
    standin.route("GET", PODS, lambda req: (200, pod_list(
        pod("hcap-patroni-0", annotations={"status": status("replica", "running")}),
        pod("hcap-patroni-1", annotations={"status": status("master", "running")}),
        pod("hcap-patroni-2", annotations={"status": "not json"}),
    )) if req.query.get("labelSelector") == ["cluster-name=hcap-patroni"] else (400, status_body(400, "bad")))
    standin.route("GET", rf"/api/v1/namespaces/{NS}/configmaps/hcap-patroni-leader",
                  lambda req: (200, {"kind": "ConfigMap", "apiVersion": "v1",
                                     "metadata": {"name": "hcap-patroni-leader",
                                                  "annotations": {"leader": "hcap-patroni-1"}}}))
    cluster = driver.cluster_state()
    assert cluster.mode == "patroni" and cluster.leader == "hcap-patroni-1"
    assert [(m.name, m.role, m.state) for m in cluster.members] == [
        ("hcap-patroni-0", "replica", "running"), ("hcap-patroni-1", "leader", "running"),
        ("hcap-patroni-2", "unknown", "Running")]


@pytest.mark.django_db
def test_manual_backup_job_on_openshift_streams_into_the_job_log(standin, backup_pod, run_jobs, settings):
    from django.test import RequestFactory

    from hcapadmin.accounts.principal import Principal
    from hcapadmin.jobs.services import submit

    settings.PLATFORM = "openshift"
    settings.OPENSHIFT_API_URL = standin.url
    settings.OPENSHIFT_NAMESPACE = NS
    settings.OPENSHIFT_TOKEN = "sa-token"
    settings.OPENSHIFT_CA_FILE = str(standin.ca_file)

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
    assert "sa-token" not in job.log
