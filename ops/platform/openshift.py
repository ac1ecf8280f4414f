"""The OpenShift driver: the kubernetes client against the configured API,
with the portal's service account (never a user's token)."""

from __future__ import annotations

import json
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from ops.errors import Forbidden, Invalid, NotFound, OpsError, Timeout, Unavailable
from ops.platform.base import PlatformDriver


@contextmanager
def _api_errors(refused: str, failed: str):
    """Turn what the kubernetes client raises into ops errors: 401/403 ->
    Forbidden("<refused> (403)"), another API status -> Unavailable(<failed>
    with ``{status}`` filled in), connection and TLS errors -> Unavailable."""
    try:
        yield
    except ApiException as exc:
        if exc.status in (401, 403):
            raise Forbidden(f"{refused} ({exc.status})") from None
        raise Unavailable(failed.format(status=exc.status)) from None
    except Exception as exc:  # urllib3 / ssl errors
        raise Unavailable(f"OpenShift API unreachable: {type(exc).__name__}") from None


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
                 cronjobs: tuple[str, ...] = (), backup_selector: str | None = None, backup_root: str = "/backups",
                 backup_container: str | None = None, patroni_selector: str | None = None,
                 log_backup_name: str = "hcap-backup-mongo-log", **_ignored):
        self.api_url = api_url.rstrip("/")
        self.namespace = namespace
        self.server_name = server_name
        self.patroni_name = patroni_name
        self.patroni_leader_configmap = patroni_leader_configmap
        self.backup_name = backup_name
        self.cronjobs = tuple(cronjobs)
        self.backup_selector = backup_selector or f"deploymentconfig={backup_name}"
        self.backup_root = backup_root.rstrip("/") or "/backups"
        self.backup_container = backup_container
        self.patroni_selector = patroni_selector or f"cluster-name={patroni_name}"
        self.log_backup_selector = f"deploymentconfig={log_backup_name}"
        if not self.api_url.lower().startswith("https://"):
            raise ValueError("api_url must be an https:// URL (the service account token never crosses in clear text)")
        configuration = k8s.Configuration()
        configuration.host = self.api_url
        # Proxy environment variables (HTTPS_PROXY, ALL_PROXY, NO_PROXY) are
        # ignored, as by the login client: the token goes straight to the API
        # server.  The kubernetes client copies them into the configuration for
        # REST calls, and websocket-client (exec) reads them again itself
        # unless it is given a proxy together with a no-proxy list.  So: a
        # proxy that "*" (every host) bypasses, for both.  Its name is in the
        # reserved .invalid domain: were it ever used, nothing would be reached.
        configuration.proxy = "http://proxy-never-used.invalid:9"
        configuration.no_proxy = "*"
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
        with _api_errors("OpenShift API refused the service account", "OpenShift API answered {status}"):
            self.core().read_namespace(self.namespace, _request_timeout=timeout)

    def describe(self) -> str:
        return f"openshift · {self.api_url} · namespace {self.namespace}"

    def exec(self, pod: str, argv: list[str], *, container: str | None = None, timeout: float = 600,
              on_stdout=None, on_stderr=None, check=None) -> ExecResult:
        """Run ``argv`` (a list, never a shell string) in ``pod`` and wait.

        ``on_stdout``/``on_stderr`` receive output chunks as they arrive, so long
        commands can stream into a job log.  Raises NotFound when the pod does not
        exist, Forbidden on 403, Unavailable when the API cannot be reached,
        Timeout when the command runs past ``timeout`` seconds.  ``check`` (optional)
        is called about once a second and may raise to stop waiting (cancel);
        the websocket is then closed.
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
                if check:
                    check()
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
        with _api_errors("OpenShift refused listing pods", "listing pods failed: API answered {status}"):
            pods = self.core().list_namespaced_pod(self.namespace, label_selector=label_selector, _request_timeout=10)
        running = [p for p in pods.items if (p.status and p.status.phase == "Running") and not p.metadata.deletion_timestamp]
        running.sort(key=lambda p: (p.metadata.creation_timestamp or 0, p.metadata.name))
        return [p.metadata.name for p in running]


    # --- backups (issue 4) -------------------------------------------------------
    def backup_pod(self) -> str:
        pods = self.running_pods(self.backup_selector)
        if not pods:
            raise Unavailable(f"no running backup pod (label {self.backup_selector}) in {self.namespace}")
        return pods[0]

    def list_backups(self) -> list:
        from ops.backups import find_argv, parse_find_output

        pod = self.backup_pod()
        result = self.exec(pod, find_argv(self.backup_root), container=self.backup_container, timeout=60)
        if result.returncode != 0:
            raise OpsError(f"listing backups in pod {pod} failed (exit {result.returncode}): "
                           f"{_last_line(result.stderr) or 'no output'}")
        return parse_find_output(result.stdout, self.backup_root)

    def _run_script(self, argv: list[str], *, log, check, timeout: float) -> tuple[str, ExecResult]:
        pod = self.backup_pod()
        out_lines, err_lines = _LineLog(log), _LineLog(log)
        if log:
            log(f"Running {' '.join(argv)} in pod {pod}")
        try:
            result = self.exec(pod, argv, container=self.backup_container, timeout=timeout,
                               on_stdout=out_lines.feed, on_stderr=err_lines.feed, check=check)
        finally:
            out_lines.close()
            err_lines.close()
        return pod, result

    def take_backup(self, *, log=None, check=None, now=None, timeout: float = 3 * 3600):
        """``./backup.sh -1`` in the backup pod, its output streamed to ``log``."""
        if now is not None:
            raise Invalid("the backup time cannot be chosen on OpenShift")
        pod, result = self._run_script(["./backup.sh", "-1"], log=log, check=check, timeout=timeout)
        if result.returncode != 0:
            raise OpsError(f"backup.sh -1 in pod {pod} failed (exit {result.returncode}): "
                           f"{_last_line(result.stderr) or _last_line(result.stdout) or 'no output'}")
        names = re.findall(r"([A-Za-z0-9.-]+-[A-Za-z0-9_]+_\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}\.sql\.gz)(?!\.in_progress)",
                           result.stdout + result.stderr)
        if names:
            for entry in self.list_backups():
                if entry.name == names[-1] and not entry.in_progress:
                    return entry
        return None

    def verify_backup(self, entry, *, log=None, check=None, timeout: float = 3 * 3600) -> dict:
        """``./backup.sh -v all -f <file>``: backup-container restores into its own
        throwaway server and runs its table query; we parse the outcome."""
        from ops.backups import VerifyFailed

        pod, result = self._run_script(["./backup.sh", "-v", "all", "-f", entry.path], log=log, check=check,
                                       timeout=timeout)
        text = result.stdout + "\n" + result.stderr
        failed = [line.strip() for line in text.splitlines() if _VERIFY_FAIL.search(line)]
        passed = [line.strip() for line in text.splitlines() if _VERIFY_PASS.search(line)]
        if result.returncode != 0 or failed or not passed:
            reason = (failed[0] if failed else _last_line(result.stderr) or _last_line(result.stdout)
                      or "no output")
            raise VerifyFailed(f"backup.sh -v in pod {pod} reported failure (exit {result.returncode}): {reason}")
        return {"pod": pod, "summary": passed[-1][:500]}

    # --- log database (MongoDB) backups: the log backup pod (ops.logbackups) -------
    takes_log_backups = True

    def log_backup_pod(self):
        from ops.logbackups import PodBackups

        return PodBackups(self, selector=self.log_backup_selector, root=self.backup_root,
                          container=self.backup_container)

    def list_log_backups(self) -> list:
        return self.log_backup_pod().list()

    def take_log_backup(self, *, log=None, check=None):
        return self.log_backup_pod().take(log=log, check=check)

    def verify_log_backup(self, entry, *, log=None, check=None) -> dict:
        return self.log_backup_pod().verify(entry, log=log, check=check)

    def cluster_members(self) -> dict:
        """Patroni members from the pods' ``status`` annotation and the leader
        from the leader ConfigMap's ``leader`` annotation."""
        core = self.core()
        with _api_errors("OpenShift refused reading the Patroni pods",
                         "reading Patroni pods failed: API answered {status}"):
            pods = core.list_namespaced_pod(self.namespace, label_selector=self.patroni_selector, _request_timeout=10)
            leader = None
            try:
                cm = core.read_namespaced_config_map(self.patroni_leader_configmap, self.namespace,
                                                     _request_timeout=10)
                leader = ((cm.metadata.annotations or {}) if cm.metadata else {}).get("leader")
            except ApiException as exc:
                if exc.status != 404:
                    raise
        members = []
        for pod in sorted(pods.items, key=lambda p: p.metadata.name):
            status = {}
            raw = (pod.metadata.annotations or {}).get("status")
            if raw:
                try:
                    status = json.loads(raw)
                except ValueError:
                    status = {}
            members.append({
                "name": pod.metadata.name,
                "role": "leader" if pod.metadata.name == leader else (status.get("role") or "unknown"),
                "state": status.get("state") or (pod.status.phase if pod.status else "unknown"),
                "lag": None, "timeline": status.get("timeline"), "host": pod.status.pod_ip if pod.status else None,
            })
        return {"mode": "patroni", "leader": leader, "members": members}


_VERIFY_FAIL = re.compile(r"\b(fail(ed|ure)?|error)\b", re.IGNORECASE)
_VERIFY_PASS = re.compile(r"\b(pass(ed)?|verified|succeeded|successful(ly)?)\b", re.IGNORECASE)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


class _LineLog:
    """Turns streamed chunks into whole lines for a job log."""

    def __init__(self, log):
        self.log = log
        self.buffer = ""

    def feed(self, chunk: str) -> None:
        if not self.log:
            return
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split("\n")
        for line in lines:
            self.log(line.rstrip("\r"))

    def close(self) -> None:
        if self.log and self.buffer:
            self.log(self.buffer)
        self.buffer = ""


def _in_cluster_token() -> str | None:
    path = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read().strip() or None
    except OSError:
        return None
