"""The OpenShift driver's workload and exec capabilities against the stand-in
API over real HTTPS and the websocket channel protocol: scaling through the
scale subresource (Deployment, StatefulSet, DeploymentConfig), waiting for
pods by polling the pod list, suspending and resuming CronJobs, and exec with
input streamed to the command and closed (v5.channel.k8s.io)."""

from __future__ import annotations

import pytest

from ops.errors import Forbidden, Invalid, NotFound, Timeout
from ops.platform.base import CronJobState, ScaleResult, Unsupported
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


def test_database_operations_are_not_offered_on_openshift_yet(driver):
    assert driver.managed_database() is None
    for call in (driver.server_version, lambda: driver.create_database("x"), lambda: driver.drop_database("x"),
                 lambda: driver.end_sessions("x"), lambda: driver.database_size("x")):
        with pytest.raises(Unsupported):
            call()


def test_banner_and_migrations_location(driver, standin):
    assert driver.banner() == f"OpenShift · {standin.url} · namespace {NS}"
    assert driver.migrations_location() == "pod (deploymentconfig=hcap-server):/opt/app-root/src/server/migrations"
    assert "sa-token" not in driver.banner() + driver.describe()
