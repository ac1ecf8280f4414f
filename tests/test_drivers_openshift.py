"""The OpenShift driver's workload and exec capabilities against the stand-in
API over real HTTPS and the websocket channel protocol: scaling through the
scale subresource (Deployment, StatefulSet, DeploymentConfig), waiting for
pods by polling the pod list, suspending and resuming CronJobs, and exec with
input streamed to the command and closed (v5.channel.k8s.io)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import uuid

import psycopg
import pytest

from hcapadmin.lib import dburl

from ops.errors import Forbidden, Invalid, NotFound, Timeout
from ops.platform.base import CronJobState, ScaleResult
from ops.platform.openshift import OpenShiftDriver
from tests.harness.openshift import status_body

NS = "hcap-prod"
PODS = rf"/api/v1/namespaces/{NS}/pods"
EXEC = rf"/api/v1/namespaces/{NS}/pods/(?P<pod>[^/]+)/exec"
SCALE_PATHS = {
    "Deployment": rf"/apis/apps/v1/namespaces/{NS}/deployments/(?P<name>[^/]+)/scale",
    "StatefulSet": rf"/apis/apps/v1/namespaces/{NS}/statefulsets/(?P<name>[^/]+)/scale",
    "DeploymentConfig": rf"/apis/apps.openshift.io/v1/namespaces/{NS}/deploymentconfigs/(?P<name>[^/]+)/scale",
}
CRONJOB = rf"/apis/batch/v1/namespaces/{NS}/cronjobs/(?P<name>[^/]+)"


@pytest.fixture
def driver(standin):
    return OpenShiftDriver(api_url=standin.url, namespace=NS, token="sa-token", ca_file=str(standin.ca_file),
                           cronjobs=("hcap-archive-withdrawn", "hcap-open-expired-clean"))


def scale_body(kind, name, replicas):
    api = "apps.openshift.io/v1" if kind == "DeploymentConfig" else "autoscaling/v1"
    return {"kind": "Scale", "apiVersion": api, "metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": replicas}, "status": {"replicas": replicas}}


def install_scale(standin, kind, replicas):
    state = {"replicas": replicas, "patches": []}

    def read(req):
        return 200, scale_body(kind, req.match["name"], state["replicas"])

    def patch(req):
        state["patches"].append((req.headers.get("content-type"), req.json))
        state["replicas"] = req.json["spec"]["replicas"]
        return 200, scale_body(kind, req.match["name"], state["replicas"])

    standin.route("GET", SCALE_PATHS[kind], read)
    standin.route("PATCH", SCALE_PATHS[kind], patch)
    return state


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DeploymentConfig"])
def test_scale_returns_the_previous_count(standin, driver, kind):
    state = install_scale(standin, kind, 3)
    result = driver.scale(kind, "hcap-server", 0)
    assert result == ScaleResult(kind, "hcap-server", previous=3, replicas=0)
    assert [body for _ctype, body in state["patches"]] == [{"spec": {"replicas": 0}}]
    assert driver.scale(kind, "hcap-server", result.previous).previous == 0
    assert state["replicas"] == 3
    assert all(req.bearer == "sa-token" for req in standin.requests)


def test_scale_errors(standin, driver):
    before = len(standin.requests)
    with pytest.raises(Invalid):
        driver.scale("Pod", "x", 1)
    for bad in (-1, 101, 1.5, True, "2"):
        with pytest.raises(Invalid):
            driver.scale("Deployment", "x", bad)
    assert len(standin.requests) == before  # refused before any request
    with pytest.raises(NotFound, match="no Deployment missing"):
        driver.scale("Deployment", "missing", 0)  # no route: the stand-in answers 404
    standin.route("GET", SCALE_PATHS["StatefulSet"], lambda req: (403, status_body(403, "forbidden", "Forbidden")))
    with pytest.raises(Forbidden):
        driver.scale("StatefulSet", "hcap-patroni", 0)


def pod(name, ready=True, phase="Running"):
    return {"metadata": {"name": name, "namespace": NS, "creationTimestamp": "2026-11-20T00:00:00Z"},
            "status": {"phase": phase,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def install_pod_sequence(standin, *answers):
    """Each pod list answers the next of ``answers`` (the last one repeats)."""
    seen = []

    def pods(req):
        seen.append(req.query.get("labelSelector", [""])[0])
        items = answers[min(len(seen), len(answers)) - 1]
        return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}

    standin.route("GET", PODS, pods)
    return seen


def test_wait_pods_gone_polls_until_none_match(standin, driver):
    seen = install_pod_sequence(standin, [pod("hcap-server-1-a"), pod("hcap-server-1-b")], [pod("hcap-server-1-a")],
                                [])
    checks = []
    driver.wait_pods_gone("deploymentconfig=hcap-server", check=lambda: checks.append(1), poll=0)
    assert seen == ["deploymentconfig=hcap-server"] * 3
    assert len(checks) == 2


def test_wait_pods_ready_counts_running_and_ready_pods(standin, driver):
    seen = install_pod_sequence(
        standin,
        [pod("hcap-patroni-0", ready=False)],
        [pod("hcap-patroni-0"), pod("hcap-patroni-1", phase="Pending", ready=False)],
        [pod("hcap-patroni-1"), pod("hcap-patroni-0")],
    )
    assert driver.wait_pods_ready("cluster-name=hcap-patroni", 2, poll=0) == ["hcap-patroni-0", "hcap-patroni-1"]
    assert len(seen) == 3


def test_waits_stop_on_check_and_on_their_limit(standin, driver):
    install_pod_sequence(standin, [pod("hcap-server-1-a")])

    class Cancelled(Exception):
        pass

    calls = []

    def check():
        calls.append(1)
        if len(calls) == 3:
            raise Cancelled

    with pytest.raises(Cancelled):
        driver.wait_pods_gone("app=x", check=check, poll=0)
    with pytest.raises(Timeout, match="did not happen within"):
        driver.wait_pods_gone("app=x", timeout=-1, poll=0)  # a limit already past: one look, then Timeout
    with pytest.raises(Timeout):
        driver.wait_pods_ready("app=x", 2, timeout=-1, poll=0)


def test_suspend_then_resume_cronjobs_restores_their_state(standin, driver):
    suspended = {"hcap-archive-withdrawn": False, "hcap-open-expired-clean": True}
    patches = []

    def read(req):
        name = req.match["name"]
        if name not in suspended:
            return 404, status_body(404, f'cronjobs.batch "{name}" not found', "NotFound")
        return 200, {"kind": "CronJob", "apiVersion": "batch/v1", "metadata": {"name": name, "namespace": NS},
                     "spec": {"schedule": "0 1 * * *", "suspend": suspended[name],
                              "jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}}}

    def patch(req):
        name = req.match["name"]
        patches.append((name, req.json))
        suspended[name] = req.json["spec"]["suspend"]
        return read(req)

    standin.route("GET", CRONJOB, read)
    standin.route("PATCH", CRONJOB, patch)
    states = driver.suspend_cronjobs()
    assert states == [CronJobState("hcap-archive-withdrawn", False), CronJobState("hcap-open-expired-clean", True)]
    assert patches == [("hcap-archive-withdrawn", {"spec": {"suspend": True}})]  # the other was already suspended
    assert suspended == {"hcap-archive-withdrawn": True, "hcap-open-expired-clean": True}
    driver.resume_cronjobs(states)
    assert suspended == {"hcap-archive-withdrawn": False, "hcap-open-expired-clean": True}
    assert patches[1:] == [("hcap-archive-withdrawn", {"spec": {"suspend": False}})]
    with pytest.raises(NotFound, match="no CronJob hcap-gone"):
        driver.suspend_cronjobs(["hcap-gone"])


def read_stdin_until_closed(ws) -> bytes:
    """What the command would read on stdin: channel-0 frames until the v5
    close signal for channel 0."""
    data = b""
    while True:
        frame = ws.recv()
        if frame is None:
            raise AssertionError("the connection ended before stdin was closed")
        _opcode, payload = frame
        if payload[:1] == b"\x00":
            data += payload[1:]
        elif payload == b"\xff\x00":
            return data


def test_exec_streams_stdin_and_signals_its_end(standin, driver):
    received = {}

    def handler(req, ws):
        received["command"] = req.query["command"]
        received["stdin"] = req.query.get("stdin")
        received["protocol"] = ws.subprotocol
        data = read_stdin_until_closed(ws)
        received["data"] = data
        ws.send_channel(1, f"read {len(data)} bytes\n")
        ws.send_channel(3, '{"metadata":{},"status":"Success"}')

    standin.websocket(EXEC, handler)
    chunks = [b"-- dump\n", "SELECT 1;\n", b"x" * 200_000]
    out = []
    result = driver.exec("hcap-patroni-0", ["psql", "-v", "ON_ERROR_STOP=1"], stdin=iter(chunks),
                         on_stdout=out.append)
    assert result.returncode == 0 and result.stdout == "read 200018 bytes\n" == "".join(out)
    assert received["data"] == b"-- dump\nSELECT 1;\n" + b"x" * 200_000
    assert received["command"] == ["psql", "-v", "ON_ERROR_STOP=1"] and received["stdin"] == ["true"]
    assert received["protocol"] == "v5.channel.k8s.io"


def test_exec_stdin_to_a_command_that_already_ended(standin, driver):
    """The command exits without reading its input: writing the rest must not
    turn into a crash; the result says the command failed."""
    ended = threading.Event()

    def handler(req, ws):
        ws.send_channel(2, "psql: error: connection refused\n")
        ws.send_channel(3, exit_status(2))
        ended.set()

    def chunks():
        yield b"-- first\n"
        assert ended.wait(timeout=60)  # the rest is written only after the command ended
        for _ in range(50):
            yield b"y" * 65536

    standin.websocket(EXEC, handler)
    result = driver.exec("hcap-patroni-0", ["psql"], stdin=chunks())
    assert result.returncode != 0


@pytest.fixture
def leader_psql(standin, pg):
    """The Patroni pods and leader ConfigMap, and exec in the leader pod that
    runs the argv's psql for real against the test PostgreSQL (the pod's
    local superuser connection becomes host/port/user here), its stdin
    forwarded from the websocket."""
    commands = []
    standin.route("GET", PODS, lambda req: (200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [
        pod("hcap-patroni-0"), pod("hcap-patroni-1")]}))
    standin.route("GET", rf"/api/v1/namespaces/{NS}/configmaps/hcap-patroni-leader",
                  lambda req: (200, {"kind": "ConfigMap", "apiVersion": "v1",
                                     "metadata": {"name": "hcap-patroni-leader",
                                                  "annotations": {"leader": "hcap-patroni-1"}}}))

    def handler(req, ws):
        argv = req.query["command"]
        assert argv[0] == "psql"
        data = read_stdin_until_closed(ws)
        commands.append((req.match["pod"], argv, data.decode()))
        local = ["psql", "-h", "127.0.0.1", "-p", str(pg.port), "-U", pg.user, *argv[1:]]
        proc = subprocess.run(local, input=data, capture_output=True, env=dict(os.environ, PGPASSWORD=pg.password),
                              timeout=120)
        if proc.stdout:
            ws.send_channel(1, proc.stdout)
        if proc.stderr:
            ws.send_channel(2, proc.stderr)
        ws.send_channel(3, exit_status(proc.returncode))

    standin.websocket(EXEC, handler)
    return commands


def exit_status(code):
    if code == 0:
        return '{"metadata":{},"status":"Success"}'
    return json.dumps({"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
                       "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}})


def test_database_operations_run_psql_in_the_leader_pod(driver, leader_psql, pg):
    version = driver.server_version()
    assert version.number == int(pg.psql("SHOW server_version_num").strip())
    assert version.text == pg.psql("SHOW server_version").strip()
    name = f"drv_{uuid.uuid4().hex[:8]} " + 'odd "name"; DROP DATABASE postgres; --'
    driver.create_database(name)
    try:
        assert pg.psql("SELECT count(*) FROM pg_database WHERE datname IN ('postgres', "
                       f"'{name}')").strip() == "2"
        assert driver.database_size(name) > 0
        with pytest.raises(Invalid, match="already exists"):
            driver.create_database(name)
        conninfo = dburl.to_conninfo(pg.url(name))
        session = psycopg.connect(conninfo, autocommit=True)
        try:
            driver.block_connections(name)
            with pytest.raises(psycopg.OperationalError, match="not currently accepting connections"):
                psycopg.connect(conninfo, connect_timeout=5)
            assert driver.end_sessions(name, poll=0) == 1
            with pytest.raises(psycopg.OperationalError):
                session.execute("SELECT 1")
        finally:
            session.close()
        driver.allow_connections(name)
        driver.rename_database(name, name[:40] + " renamed")
        assert driver.database_size(name[:40] + " renamed") > 0
        with pytest.raises(NotFound):
            driver.database_size(name)
        driver.drop_database(name[:40] + " renamed")
        with pytest.raises(NotFound):
            driver.drop_database(name[:40] + " renamed")
        driver.drop_database(name[:40] + " renamed", missing_ok=True)
    finally:
        for leftover in (name, name[:40] + " renamed"):
            driver.drop_database(leftover, missing_ok=True)
    assert {pod_name for pod_name, _argv, _sql in leader_psql} == {"hcap-patroni-1"}  # the leader, from the ConfigMap
    for _pod, argv, sql_text in leader_psql:
        assert "odd" not in sql_text  # names reach psql only as variables, quoted by psql itself
    assert any(f"name={name}" in argv for _pod, argv, _sql in leader_psql)
    assert driver.managed_database() is None


def test_database_names_are_checked_before_any_exec(driver, standin):
    for bad in ("", "x\0y", "x" * 64, None):
        with pytest.raises(Invalid):
            driver.create_database(bad)
    assert standin.requests == []


def test_banner_and_migrations_location(driver, standin):
    assert driver.banner() == f"OpenShift · {standin.url} · namespace {NS}"
    assert driver.migrations_location() == "pod (deploymentconfig=hcap-server):/opt/app-root/src/server/migrations"
    assert "sa-token" not in driver.banner() + driver.describe()


def test_backup_checksum_runs_sha256sum_in_the_backup_pod(standin, driver, tmp_path):
    """The pinned checksum of a restore is read where the file lives: the
    stand-in's backup pod runs the real sha256sum on a file of this test."""
    data = b"-- backup\n" * 1000
    (tmp_path / "b.sql.gz").write_bytes(data)
    commands = []
    standin.route("GET", PODS, lambda req: (200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [
        pod("hcap-backup-1-abcde")]}))

    def handler(req, ws):
        argv = req.query["command"]
        commands.append((req.match["pod"], argv))
        local = [argv[0], argv[1], str(tmp_path / os.path.basename(argv[2]))]
        proc = subprocess.run(local, capture_output=True)
        if proc.stdout:
            ws.send_channel(1, proc.stdout.decode())
        if proc.stderr:
            ws.send_channel(2, proc.stderr.decode())
        ws.send_channel(3, exit_status(proc.returncode))

    standin.websocket(EXEC, handler)
    entry = type("Entry", (), {"name": "b.sql.gz", "path": "/backups/daily/2026-11-25/b.sql.gz"})()
    assert driver.backup_checksum(entry) == hashlib.sha256(data).hexdigest()
    assert commands == [("hcap-backup-1-abcde", ["sha256sum", "--", "/backups/daily/2026-11-25/b.sql.gz"])]
    gone = type("Entry", (), {"name": "gone.sql.gz", "path": "/backups/daily/2026-11-25/gone.sql.gz"})()
    with pytest.raises(NotFound):
        driver.backup_checksum(gone)


def test_mounted_service_account_token_is_read_again_after_rotation(standin, tmp_path):
    """The kubelet replaces the projected token file before the token
    expires; the driver reads it again (here on every request) for REST
    calls and exec alike, instead of keeping the first token forever."""
    token_file = tmp_path / "token"
    token_file.write_text("sa-token-1\n")
    standin.route("GET", rf"/api/v1/namespaces/{NS}", lambda req: (200, {"kind": "Namespace",
                                                                        "metadata": {"name": NS}}))
    standin.websocket(EXEC, lambda req, ws: ws.send_channel(3, '{"metadata":{},"status":"Success"}'))
    driver = OpenShiftDriver(api_url=standin.url, namespace=NS, ca_file=str(standin.ca_file),
                             token_file=str(token_file), token_reread_seconds=0)
    driver.ping()
    token_file.write_text("sa-token-2\n")
    driver.ping()
    driver.exec("hcap-backup-1-abcde", ["true"])
    assert [req.bearer for req in standin.requests] == ["sa-token-1", "sa-token-2", "sa-token-2"]


def test_without_a_token_file_no_authorization_is_sent(standin, tmp_path):
    standin.route("GET", rf"/api/v1/namespaces/{NS}", lambda req: (401, status_body(401, "Unauthorized")))
    driver = OpenShiftDriver(api_url=standin.url, namespace=NS, ca_file=str(standin.ca_file),
                             token_file=str(tmp_path / "missing"), token_reread_seconds=0)
    with pytest.raises(Forbidden):
        driver.ping()
    assert [req.bearer for req in standin.requests] == [None]
