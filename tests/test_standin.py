"""The stand-in OpenShift API answers the real kubernetes client over TLS."""

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from ops.errors import Forbidden, Unavailable
from ops.platform.openshift import OpenShiftDriver
from tests.harness.openshift import status_body


def test_driver_ping_over_tls(standin):
    standin.route("GET", r"/api/v1/namespaces/(?P<ns>[^/]+)",
                  lambda req: (200, {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": req.match["ns"]}}))
    driver = OpenShiftDriver(api_url=standin.url, namespace="hcap-prod", token="sa-token", ca_file=str(standin.ca_file))
    driver.ping()
    assert standin.requests[-1].bearer == "sa-token"
    assert standin.requests[-1].path == "/api/v1/namespaces/hcap-prod"


def test_driver_ping_tells_refusal_from_unreachable(standin):
    standin.route("GET", r"/api/v1/namespaces/.*", lambda req: (403, status_body(403, "forbidden", "Forbidden")))
    driver = OpenShiftDriver(api_url=standin.url, namespace="x", token="t", ca_file=str(standin.ca_file))
    with pytest.raises(Forbidden):
        driver.ping()
    from devtools.services import free_port

    dead = OpenShiftDriver(api_url=f"https://127.0.0.1:{free_port()}", namespace="x", token="t",
                           ca_file=str(standin.ca_file))
    with pytest.raises(Unavailable):
        dead.ping(timeout=1)


def test_untrusted_certificate_is_refused(standin):
    standin.route("GET", r"/api/v1/namespaces/.*", lambda req: (200, {"kind": "Namespace", "metadata": {"name": "x"}}))
    driver = OpenShiftDriver(api_url=standin.url, namespace="x", token="t", ca_file=None)
    with pytest.raises(Unavailable):
        driver.ping(timeout=2)
    assert not standin.requests  # the TLS handshake failed before any request


def test_exec_channel_protocol(standin):
    from kubernetes.stream import stream

    def exec_handler(req, ws):
        assert req.query["command"] == ["ls", "-l", "/backups"]
        ws.send_channel(1, "daily\n")
        ws.send_channel(2, "warning\n")
        ws.send_channel(3, '{"metadata":{},"status":"Success"}')

    standin.websocket(r"/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<pod>[^/]+)/exec", exec_handler)
    cfg = k8s.Configuration()
    cfg.host = standin.url
    cfg.ssl_ca_cert = str(standin.ca_file)
    cfg.api_key = {"authorization": "Bearer sa"}
    api = k8s.CoreV1Api(k8s.ApiClient(cfg))
    resp = stream(api.connect_get_namespaced_pod_exec, "hcap-backup-1", "ns", command=["ls", "-l", "/backups"],
                  stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
    resp.run_forever(timeout=5)
    assert resp.read_stdout() == "daily\n"
    assert resp.read_stderr() == "warning\n"
    assert resp.returncode == 0
    with pytest.raises(ApiException):
        api.read_namespace("nope")


def test_driver_exec_streams_and_reports_exit_code(standin):
    def exec_handler(req, ws):
        ws.send_channel(1, "line 1\n")
        ws.send_channel(1, "line 2\n")
        ws.send_channel(2, "oops\n")
        ws.send_channel(3, '{"metadata":{},"status":"Failure","reason":"NonZeroExitCode",'
                           '"details":{"causes":[{"reason":"ExitCode","message":"3"}]}}')

    standin.websocket(r"/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<pod>[^/]+)/exec", exec_handler)
    driver = OpenShiftDriver(api_url=standin.url, namespace="ns", token="sa", ca_file=str(standin.ca_file))
    seen = []
    result = driver.exec("hcap-backup-1-abcde", ["./backup.sh", "-l"], on_stdout=seen.append)
    assert result.returncode == 3
    assert result.stdout == "line 1\nline 2\n"
    assert result.stderr == "oops\n"
    assert "".join(seen) == "line 1\nline 2\n"
    with pytest.raises(TypeError):
        driver.exec("pod", "rm -rf /")  # a shell string is refused


def test_driver_exec_missing_pod(standin):
    standin.websocket(r"/nothing", lambda req, ws: None)
    driver = OpenShiftDriver(api_url=standin.url, namespace="ns", token="sa", ca_file=str(standin.ca_file))
    from ops.errors import NotFound

    with pytest.raises(NotFound):
        driver.exec("gone", ["true"])
