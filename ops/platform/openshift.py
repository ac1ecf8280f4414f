"""The OpenShift driver: the kubernetes client against the configured API,
with the portal's service account (never a user's token)."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from ops.errors import Forbidden, NotFound, Timeout, Unavailable
from ops.platform.base import PlatformDriver


@dataclass
class ExecResult:
    returncode: int
    stdout: str
    stderr: str


def _exec_returncode(status_text: str) -> int:
    """Turn the channel-3 ``Status`` JSON into an exit code."""
    if not status_text:
        return -1
    try:
        status = json.loads(status_text)
    except ValueError:
        return -1
    if status.get("status") == "Success":
        return 0
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message"))
            except (TypeError, ValueError):
                break
    return -1


def _handshake_status(exc: ApiException) -> int:
    """The HTTP status of a failed exec.  The websocket client reports a
    refused upgrade as status 0 with "Handshake status 404 ..." as reason."""
    if exc.status:
        return exc.status
    match = re.search(r"Handshake status (\d{3})", str(exc.reason or ""))
    return int(match.group(1)) if match else 0


class OpenShiftDriver(PlatformDriver):
    name = "openshift"

    def __init__(self, *, api_url: str, namespace: str, token: str | None = None, ca_file: str | None = None,
                 server_name: str = "hcap-server", patroni_name: str = "hcap-patroni",
                 patroni_leader_configmap: str = "hcap-patroni-leader", backup_name: str = "hcap-backup",
                 cronjobs: tuple[str, ...] = (), **_ignored):
        self.api_url = api_url.rstrip("/")
        self.namespace = namespace
        self.server_name = server_name
        self.patroni_name = patroni_name
        self.patroni_leader_configmap = patroni_leader_configmap
        self.backup_name = backup_name
        self.cronjobs = tuple(cronjobs)
        configuration = k8s.Configuration()
        configuration.host = self.api_url
        if token is None:
            token = _in_cluster_token()
        if token:
            configuration.api_key = {"authorization": "Bearer " + token}
        if ca_file:
            configuration.ssl_ca_cert = ca_file
        configuration.verify_ssl = True
        configuration.retries = 0
        self.configuration = configuration
        self.api_client = k8s.ApiClient(configuration)

    def core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self.api_client)

    def ping(self, timeout: float = 2.0) -> None:
        try:
            self.core().read_namespace(self.namespace, _request_timeout=timeout)
        except ApiException as exc:
            if exc.status in (401, 403):
                raise Forbidden(f"OpenShift API refused the service account ({exc.status})") from None
            raise Unavailable(f"OpenShift API answered {exc.status}") from None
        except Exception as exc:  # urllib3 / ssl errors
            raise Unavailable(f"OpenShift API unreachable: {type(exc).__name__}") from None

    def describe(self) -> str:
        return f"openshift · {self.api_url} · namespace {self.namespace}"

    def exec(self, pod: str, argv: list[str], *, container: str | None = None, timeout: float = 600,
              on_stdout=None, on_stderr=None) -> ExecResult:
        """Run ``argv`` (a list, never a shell string) in ``pod`` and wait.

        ``on_stdout``/``on_stderr`` receive output chunks as they arrive, so long
        commands can stream into a job log.  Raises NotFound when the pod does not
        exist, Forbidden on 403, Unavailable when the API cannot be reached,
        Timeout when the command runs past ``timeout`` seconds.
        """
        from kubernetes.stream import stream

        if not isinstance(argv, (list, tuple)) or not all(isinstance(a, str) for a in argv):
            raise TypeError("argv must be a list of strings")
        kwargs = {"command": list(argv), "stderr": True, "stdin": False, "stdout": True, "tty": False,
                  "_preload_content": False}
        if container:
            kwargs["container"] = container
        try:
            resp = stream(self.core().connect_get_namespaced_pod_exec, pod, self.namespace, **kwargs)
        except ApiException as exc:
            status = _handshake_status(exc)
            if status == 404:
                raise NotFound(f"pod {pod} not found in {self.namespace}") from None
            if status in (401, 403):
                raise Forbidden(f"OpenShift refused exec in pod {pod} ({status})") from None
            raise Unavailable(f"exec in pod {pod} failed: API answered {status or exc.reason}") from None
        except Exception as exc:  # connection and TLS errors from websocket-client
            raise Unavailable(f"exec in pod {pod} failed: {type(exc).__name__}") from None
        out, err = [], []
        deadline = time.monotonic() + timeout
        try:
            while resp.is_open():
                if time.monotonic() > deadline:
                    raise Timeout(f"command in pod {pod} ran longer than {timeout:g}s")
                resp.update(timeout=1)
                if resp.peek_stdout():
                    chunk = resp.read_stdout()
                    out.append(chunk)
                    if on_stdout:
                        on_stdout(chunk)
                if resp.peek_stderr():
                    chunk = resp.read_stderr()
                    err.append(chunk)
                    if on_stderr:
                        on_stderr(chunk)
            # drain what arrived with the close
            for reader, sink, cb in ((resp.read_stdout, out, on_stdout), (resp.read_stderr, err, on_stderr)):
                rest = reader()
                if rest:
                    sink.append(rest)
                    if cb:
                        cb(rest)
            status_text = resp.read_channel(3)
        finally:
            resp.close()
        return ExecResult(_exec_returncode(status_text), "".join(out), "".join(err))

    def running_pods(self, label_selector: str) -> list[str]:
        """Names of Running pods matching ``label_selector``, oldest first."""
        try:
            pods = self.core().list_namespaced_pod(self.namespace, label_selector=label_selector, _request_timeout=10)
        except ApiException as exc:
            if exc.status in (401, 403):
                raise Forbidden(f"OpenShift refused listing pods ({exc.status})") from None
            raise Unavailable(f"listing pods failed: API answered {exc.status}") from None
        except Exception as exc:
            raise Unavailable(f"OpenShift API unreachable: {type(exc).__name__}") from None
        running = [p for p in pods.items if (p.status and p.status.phase == "Running") and not p.metadata.deletion_timestamp]
        running.sort(key=lambda p: (p.metadata.creation_timestamp or 0, p.metadata.name))
        return [p.metadata.name for p in running]


def _in_cluster_token() -> str | None:
    path = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read().strip() or None
    except OSError:
        return None
