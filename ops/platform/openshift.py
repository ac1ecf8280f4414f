"""The OpenShift driver: the kubernetes client against the configured API,
with the portal's service account (never a user's token).  Commands run in
pods by exec over the websocket channel protocol, always as argv lists.

Backups run backup-container's ``backup.sh`` in the backup pod; migrations
are listed, read and applied in the newest running server pod; workloads are
scaled through their scale subresource; databases are operated on with
``psql`` in the Patroni leader pod, the SQL on its stdin and every name passed
as a psql variable and quoted by psql as an identifier or literal (``:"name"``,
``:'name'``), never spliced into the SQL text."""

from __future__ import annotations

import base64
import json
import posixpath
import re
import time
from collections.abc import Iterable
from contextlib import contextmanager

import psycopg
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream
from websocket import WebSocketException

from ops import backups, logbackups
from ops.errors import Forbidden, Invalid, NotFound, OpsError, Timeout, Unavailable
from ops.lines import LineSplitter
from ops.migrations import runner, sources
from ops.migrations.runner import UpResult
from ops.migrations.sources import MigrationFiles, SourceMissing
from ops.platform.base import (ClusterMember, ClusterState, CronJobState, DatabaseCredentials, ExecResult,
                               PlatformDriver, ScaleResult, ServerVersion, VerifyFindings, WorkloadState,
                               database_name)

SERVICE_ACCOUNT_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"
TOKEN_REREAD_SECONDS = 60.0


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
    except OpsError:  # already said in ops terms inside the block
        raise
    except Exception as exc:  # urllib3 / ssl errors
        raise Unavailable(f"OpenShift API unreachable: {type(exc).__name__}") from None


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
                 migrations_pod_selector: str | None = None,
                 migrations_pod_dir: str = "/opt/app-root/src/server/migrations",
                 migrations_pod_container: str | None = None,
                 log_backup_name: str = "hcap-backup-mongo-log", database_host: str | None = None,
                 patroni_secret: str | None = None, patronictl_config: str = "/home/postgres/patroni.yml",
                 token_file: str = SERVICE_ACCOUNT_TOKEN_FILE, token_reread_seconds: float = TOKEN_REREAD_SECONDS,
                 **_ignored):
        self.api_url = api_url.rstrip("/")
        self.namespace = namespace
        self.migrations_selector = migrations_pod_selector or f"deploymentconfig={server_name}"
        self.migrations_dir = sources.pod_folder(migrations_pod_dir)
        self.migrations_container = migrations_pod_container
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
        # PostgreSQL as the restore reaches it (the Patroni service routes to
        # the leader), with the superuser credentials of the Patroni Secret.
        host, _, port = (database_host or f"{patroni_name}.{namespace}.svc:5432").rpartition(":")
        if not host or not port.isdigit():
            host, port = (database_host or f"{patroni_name}.{namespace}.svc"), "5432"
        self.database_host, self.database_port = host, int(port)
        self.patroni_secret = patroni_secret or patroni_name
        self.patronictl_config = patronictl_config
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
            # The pod's projected service account token is rotated by the
            # kubelet (the file is replaced well before the token expires):
            # read it again before a request once it is TOKEN_REREAD_SECONDS old.
            self._token_file = token_file
            self._token_reread_seconds = token_reread_seconds
            self._token_read_at = float("-inf")
            configuration.refresh_api_key_hook = self._refresh_token
            token = self._read_token_file()
        if token:
            configuration.api_key = {"authorization": "Bearer " + token}
        if ca_file:
            configuration.ssl_ca_cert = ca_file
        configuration.verify_ssl = True
        configuration.retries = 0
        self.configuration = configuration
        self.api_client = k8s.ApiClient(configuration)

    def _read_token_file(self) -> str | None:
        self._token_read_at = time.monotonic()
        try:
            with open(self._token_file, encoding="ascii") as fh:
                return fh.read().strip() or None
        except (OSError, UnicodeDecodeError):
            return None

    def _refresh_token(self, configuration) -> None:
        """The kubernetes client's hook, called before each request's auth headers are set."""
        if time.monotonic() - self._token_read_at < self._token_reread_seconds:
            return
        token = self._read_token_file()
        if token:
            configuration.api_key = {"authorization": "Bearer " + token}

    def core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self.api_client)

    def ping(self, timeout: float = 2.0) -> None:
        with _api_errors("OpenShift API refused the service account", "OpenShift API answered {status}"):
            self.core().read_namespace(self.namespace, _request_timeout=timeout)

    def describe(self) -> str:
        return f"openshift · {self.api_url} · namespace {self.namespace}"

    def banner(self) -> str:
        return f"OpenShift · {self.api_url} · namespace {self.namespace}"

    # --- exec ----------------------------------------------------------------------------
    def exec(self, pod: str, argv: list[str], *, container: str | None = None, timeout: float = 600,
             stdin: Iterable[bytes | str] | None = None, on_stdout=None, on_stderr=None, check=None,
             binary: bool = False, keep_stdout: bool = True) -> ExecResult:
        """Run ``argv`` (a list, never a shell string) in ``pod`` and wait.

        ``stdin`` (optional) is sent chunk by chunk while output is read, then
        the end of input is signalled (a dump can be piped into ``psql``).
        ``on_stdout``/``on_stderr`` receive output chunks as they arrive, so long
        commands can stream into a job log.  Raises NotFound when the pod does not
        exist, Forbidden on 403, Unavailable when the API cannot be reached,
        Timeout when the command runs past ``timeout`` seconds.  ``check`` (optional)
        is called about once a second and may raise to stop waiting (cancel);
        the websocket is then closed.  ``binary``: output arrives (and is
        returned) as bytes, undecoded (a decompressed dump streamed out of a pod);
        ``keep_stdout=False``: stdout only goes to ``on_stdout`` (not kept in memory).
        """
        if not isinstance(argv, (list, tuple)) or not all(isinstance(a, str) for a in argv):
            raise TypeError("argv must be a list of strings")
        kwargs = {"command": list(argv), "stderr": True, "stdin": stdin is not None, "stdout": True, "tty": False,
                  "_preload_content": False}
        if container:
            kwargs["container"] = container
        if binary:
            kwargs["binary"] = True
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

        def drain(wait: float) -> None:
            if time.monotonic() > deadline:
                raise Timeout(f"command in pod {pod} ran longer than {timeout:g}s")
            if check:
                check()
            try:
                resp.update(timeout=wait)
            except (WebSocketException, OSError):
                resp.close()  # the other side is gone; what arrived before is in the channel buffers
            for peek, read, sink, cb in ((resp.peek_stdout, resp.read_stdout, out, on_stdout),
                                         (resp.peek_stderr, resp.read_stderr, err, on_stderr)):
                if peek():
                    chunk = read()
                    if keep_stdout or sink is err:
                        sink.append(chunk)
                    if cb:
                        cb(chunk)

        try:
            if stdin is not None:
                if resp.subprotocol != "v5.channel.k8s.io":
                    raise Unavailable("the OpenShift API cannot close a command's input (no v5.channel.k8s.io)")
                for chunk in stdin:
                    if not resp.is_open():
                        break
                    try:
                        resp.write_stdin(chunk)
                    except (WebSocketException, OSError):  # the command ended and closed the connection;
                        break                              # its exit status (read below) says how
                    drain(0)
                if resp.is_open():
                    try:
                        resp.close_channel(0)
                    except (WebSocketException, OSError):  # as above
                        pass
            while resp.is_open():
                drain(1)
            # drain what arrived with the close
            for reader, sink, cb in ((resp.read_stdout, out, on_stdout), (resp.read_stderr, err, on_stderr)):
                rest = reader()
                if rest:
                    if keep_stdout or sink is err:
                        sink.append(rest)
                    if cb:
                        cb(rest)
            status_text = resp.read_channel(3)
        finally:
            resp.close()
        if binary:
            status_text = status_text.decode("utf-8", "replace") if isinstance(status_text, bytes) else status_text
            return ExecResult(_exec_returncode(status_text), b"".join(out), b"".join(err))
        return ExecResult(_exec_returncode(status_text), "".join(out), "".join(err))

    def running_pods(self, label_selector: str) -> list[str]:
        """Names of Running pods matching ``label_selector``, oldest first."""
        with _api_errors("OpenShift refused listing pods", "listing pods failed: API answered {status}"):
            pods = self.core().list_namespaced_pod(self.namespace, label_selector=label_selector, _request_timeout=10)
        running = [p for p in pods.items if (p.status and p.status.phase == "Running") and not p.metadata.deletion_timestamp]
        running.sort(key=lambda p: (p.metadata.creation_timestamp or 0, p.metadata.name))
        return [p.metadata.name for p in running]

    # --- backups -------------------------------------------------------------------------
    def backup_pod(self) -> str:
        pods = self.running_pods(self.backup_selector)
        if not pods:
            raise Unavailable(f"no running backup pod (label {self.backup_selector}) in {self.namespace}")
        return pods[0]

    def list_backups(self) -> list:
        pod = self.backup_pod()
        result = self.exec(pod, backups.find_argv(self.backup_root), container=self.backup_container, timeout=60)
        if result.returncode != 0:
            raise OpsError(f"listing backups in pod {pod} failed (exit {result.returncode}): "
                           f"{_last_line(result.stderr) or 'no output'}")
        return backups.parse_find_output(result.stdout, self.backup_root)

    def _run_script(self, argv: list[str], *, log, check, timeout: float) -> tuple[str, ExecResult]:
        pod = self.backup_pod()
        out_lines, err_lines = LineSplitter(log), LineSplitter(log)
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

    def verify_backup(self, entry, *, log=None, check=None, timeout: float = 3 * 3600) -> VerifyFindings:
        """``./backup.sh -v all -f <file>``: backup-container restores into its own
        throwaway server and runs its table query; we parse the outcome."""
        pod, result = self._run_script(["./backup.sh", "-v", "all", "-f", entry.path], log=log, check=check,
                                       timeout=timeout)
        text = result.stdout + "\n" + result.stderr
        failed = [line.strip() for line in text.splitlines() if _VERIFY_FAIL.search(line)]
        passed = [line.strip() for line in text.splitlines() if _VERIFY_PASS.search(line)]
        if result.returncode != 0 or failed or not passed:
            reason = (failed[0] if failed else _last_line(result.stderr) or _last_line(result.stdout)
                      or "no output")
            raise backups.VerifyFailed(f"backup.sh -v in pod {pod} reported failure (exit {result.returncode}): "
                                       f"{reason}")
        summary = passed[-1][:500]
        return VerifyFindings(summary, {"pod": pod, "summary": summary})

    def backup_checksum(self, entry, *, check=None, timeout: float = 3600) -> str:
        """``sha256sum -- <file>`` in the backup pod (argv only, no shell)."""
        pod = self.backup_pod()
        result = self.exec(pod, ["sha256sum", "--", entry.path], container=self.backup_container, timeout=timeout,
                           check=check)
        match = re.match(r"([0-9a-f]{64})\s", result.stdout or "")
        if result.returncode != 0 or not match:
            reason = _last_line(result.stderr) or _last_line(result.stdout) or "no output"
            if "No such file" in reason:
                raise NotFound(f"the backup file {entry.name} is no longer in pod {pod}")
            raise OpsError(f"sha256sum in pod {pod} failed (exit {result.returncode}): {reason}")
        return match.group(1)

    # --- database: psql in the Patroni leader pod ----------------------------------------
    def managed_database(self) -> str | None:
        return None  # the pods are configured with it; the portal is not told

    def leader_pod(self) -> str:
        leader = self.cluster_state().leader
        if not leader:
            raise Unavailable(f"the Patroni cluster {self.patroni_name} has no leader")
        return leader

    def psql(self, sql_text: str, variables: dict[str, str] | None = None, *, database: str = "postgres",
             timeout: float = 600) -> str:
        """Run ``sql_text`` with psql in the leader pod (stdin, ON_ERROR_STOP,
        unaligned tuples-only output, tab-separated) and return its output.
        ``variables`` become ``-v name=value``: refer to them as ``:"name"``
        (identifier) or ``:'name'`` (literal)."""
        argv = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-A", "-t", "-F", "\t", "-d", database]
        for key, value in (variables or {}).items():
            argv += ["-v", f"{key}={value}"]
        argv += ["-f", "-"]
        pod = self.leader_pod()
        result = self.exec(pod, argv, stdin=[sql_text], timeout=timeout)
        if result.returncode != 0:
            error = next((line.split("ERROR:", 1)[1].strip() for line in result.stderr.splitlines()
                          if "ERROR:" in line), None)
            if error and "already exists" in error:
                raise Invalid("a database of that name already exists")
            if error and "does not exist" in error:
                raise NotFound("no such database")
            if error and "is being accessed by other users" in error:
                raise Invalid(f"the database is in use: {error[:200]}")
            raise OpsError(f"psql in pod {pod} failed (exit {result.returncode}): "
                           f"{error or _last_line(result.stderr) or 'no output'}"[:400])
        return result.stdout

    def server_version(self) -> ServerVersion:
        number, text = self.psql("SELECT current_setting('server_version_num'), current_setting('server_version');"
                                 ).rstrip("\n").split("\t", 1)
        return ServerVersion(int(number), text)

    def create_database(self, name: str, *, owner: str | None = None) -> None:
        if owner is None:
            self.psql('CREATE DATABASE :"name";', {"name": database_name(name)})
        else:
            self.psql('CREATE DATABASE :"name" OWNER :"owner";', {"name": database_name(name),
                                                                  "owner": database_name(owner)})

    def rename_database(self, name: str, new_name: str) -> None:
        self.psql('ALTER DATABASE :"name" RENAME TO :"new_name";', {"name": database_name(name),
                                                                   "new_name": database_name(new_name)})

    def drop_database(self, name: str, *, missing_ok: bool = False) -> None:
        self.psql(f'DROP DATABASE {"IF EXISTS " if missing_ok else ""}:"name";', {"name": database_name(name)})

    def block_connections(self, name: str) -> None:
        self.psql('ALTER DATABASE :"name" WITH ALLOW_CONNECTIONS false;', {"name": database_name(name)})

    def allow_connections(self, name: str) -> None:
        self.psql('ALTER DATABASE :"name" WITH ALLOW_CONNECTIONS true;', {"name": database_name(name)})

    def end_sessions(self, name: str, timeout: float = 30, poll: float = 0.5) -> int:
        others = "FROM pg_stat_activity WHERE datname = :'name' AND pid <> pg_backend_pid();"
        variables = {"name": database_name(name)}
        ended = int(self.psql(f"SELECT count(pg_terminate_backend(pid)) {others}", variables).strip())
        self._wait(f"the end of the sessions on {name}",
                   lambda: int(self.psql(f"SELECT count(*) {others}", variables).strip()) == 0,
                   timeout=timeout, check=None, poll=poll)
        return ended

    def database_size(self, name: str) -> int:
        out = self.psql("SELECT pg_database_size(datname) FROM pg_database WHERE datname = :'name';",
                        {"name": database_name(name)}).strip()
        if not out:
            raise NotFound(f"no database {name}")
        return int(out)

    # --- migrations ----------------------------------------------------------------------
    def migrations_location(self) -> str:
        return f"pod ({self.migrations_selector}):{self.migrations_dir}"

    def _migrations_pod(self) -> str:
        pods = self.running_pods(self.migrations_selector)
        if not pods:
            raise SourceMissing(f"no running server pod matches {self.migrations_selector}")
        return pods[-1]  # the newest: what the latest rollout runs

    def _in_migrations_pod(self, pod: str, argv: list[str], **kwargs) -> ExecResult:
        return self.exec(pod, argv, container=self.migrations_container, **kwargs)

    def migration_files(self, timeout: float = 30) -> MigrationFiles:
        """The server pod's migrations folder, listed by ``find`` in the newest
        running server pod, so the list is what that image will apply."""
        pod = self._migrations_pod()
        result = self._in_migrations_pod(pod, sources.pod_list_argv(self.migrations_dir), timeout=timeout)
        if result.returncode != 0:
            detail = (result.stderr or "").strip().splitlines()
            if any("No such file" in line or "Not a directory" in line for line in detail):
                raise SourceMissing(f"migrations folder {self.migrations_dir} does not exist in pod {pod}")
            raise SourceMissing(f"listing {self.migrations_dir} in pod {pod} failed (exit {result.returncode}): "
                                f"{detail[0][:200] if detail else 'no output'}")
        return MigrationFiles(sources.parse_pod_listing(result.stdout), f"pod {pod}:{self.migrations_dir}", pod)

    def read_migration(self, filename: str, files: MigrationFiles | None = None, timeout: float = 30) -> str:
        files = self.migration_files() if files is None else files
        if filename not in files.names:
            raise NotFound(f"no migration file {filename}")
        pod = files.pod or self._migrations_pod()
        result = self._in_migrations_pod(pod, sources.pod_read_argv(self.migrations_dir, filename), timeout=timeout)
        if result.returncode != 0:
            raise SourceMissing(f"reading {filename} in pod {pod} failed (exit {result.returncode})")
        return result.stdout

    def migrate_up(self, files: MigrationFiles | None = None, *, on_line=None, timeout: float = 1800,
                   check=None) -> UpResult:
        """``npm --prefix <parent of the migrations folder> run migrate up`` by
        exec in the server pod the files were listed in."""
        pod = (files.pod if files is not None else None) or self._migrations_pod()
        argv = runner.pod_up_argv(posixpath.dirname(self.migrations_dir) or "/")
        if on_line:
            on_line("$ " + " ".join(argv) + f"   (in pod {pod})")
        lines = LineSplitter(on_line, keep=True)
        try:
            result = self._in_migrations_pod(pod, argv, timeout=timeout, on_stdout=lines.feed, on_stderr=lines.feed,
                                             check=check)
        finally:
            lines.close()
        return UpResult(result.returncode, "\n".join(lines.lines))

    # --- log database (MongoDB) backups: the log backup pod (ops.logbackups) -------
    takes_log_backups = True

    def log_backup_pod(self) -> logbackups.PodBackups:
        return logbackups.PodBackups(self, selector=self.log_backup_selector, root=self.backup_root,
                                     container=self.backup_container)

    def list_log_backups(self) -> list:
        return self.log_backup_pod().list()

    def take_log_backup(self, *, log=None, check=None):
        return self.log_backup_pod().take(log=log, check=check)

    def verify_log_backup(self, entry, *, log=None, check=None) -> VerifyFindings:
        found = self.log_backup_pod().verify(entry, log=log, check=check)
        return VerifyFindings(str(found.get("summary", "backup.sh -v passed"))[:500], found)

    # --- cluster -------------------------------------------------------------------------
    def cluster_state(self) -> ClusterState:
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
            members.append(ClusterMember(
                name=pod.metadata.name,
                role="leader" if pod.metadata.name == leader else (status.get("role") or "unknown"),
                state=status.get("state") or (pod.status.phase if pod.status else "unknown"),
                timeline=status.get("timeline"), host=pod.status.pod_ip if pod.status else None,
            ))
        return ClusterState("patroni", leader, members)

    # --- workloads -----------------------------------------------------------------------
    def scale(self, kind: str, name: str, replicas: int) -> ScaleResult:
        """Read, then patch, the scale subresource of a Deployment, a
        StatefulSet or a DeploymentConfig."""
        if kind not in _SCALE_KINDS:
            raise Invalid(f"cannot scale a {kind}: only {', '.join(_SCALE_KINDS)}")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or not 0 <= replicas <= 100:
            raise Invalid("replicas must be a whole number from 0 to 100")
        body = {"spec": {"replicas": replicas}}
        with _api_errors(f"OpenShift refused scaling {kind} {name}: the service account needs get and patch on "
                         f"{_PLURAL[kind]}/scale",
                         f"scaling {kind} {name} failed: API answered {{status}}"), \
                _not_found(f"no {kind} {name} in {self.namespace}"):
            if kind == "DeploymentConfig":
                custom = k8s.CustomObjectsApi(self.api_client)
                args = ("apps.openshift.io", "v1", self.namespace, "deploymentconfigs", name)

                def read_patch():
                    before = custom.get_namespaced_custom_object_scale(*args, _request_timeout=10)
                    custom.patch_namespaced_custom_object_scale(*args, body, _request_timeout=10)
                    return int(((before or {}).get("spec") or {}).get("replicas") or 0)
            else:
                apps = k8s.AppsV1Api(self.api_client)
                read, patch = ((apps.read_namespaced_deployment_scale, apps.patch_namespaced_deployment_scale)
                               if kind == "Deployment" else
                               (apps.read_namespaced_stateful_set_scale, apps.patch_namespaced_stateful_set_scale))

                def read_patch():
                    before = read(name, self.namespace, _request_timeout=10)
                    patch(name, self.namespace, body, _request_timeout=10)
                    return int((before.spec.replicas if before.spec else 0) or 0)
            previous = _on_conflict_reread(read_patch)
        return ScaleResult(kind, name, previous, replicas)

    def _pods(self, selector: str) -> list:
        with _api_errors("OpenShift refused listing pods", "listing pods failed: API answered {status}"):
            return self.core().list_namespaced_pod(self.namespace, label_selector=selector, _request_timeout=10).items

    def _wait(self, what: str, done, *, timeout: float, check, poll: float):
        """Poll ``done()`` until it returns a true value; Timeout past ``timeout``."""
        give_up = time.monotonic() + timeout
        while True:
            result = done()
            if result:
                return result
            if check:
                check()
            if time.monotonic() > give_up:
                raise Timeout(f"{what} did not happen within {timeout:g}s")
            time.sleep(poll)

    def wait_pods_gone(self, selector: str, *, timeout: float = 600, check=None, poll: float = 1.0) -> None:
        self._wait(f"pods {selector} gone", lambda: not self._pods(selector), timeout=timeout, check=check,
                   poll=poll)

    def wait_pods_ready(self, selector: str, count: int, *, timeout: float = 600, check=None,
                        poll: float = 1.0) -> list[str]:
        def ready():
            names = sorted(p.metadata.name for p in self._pods(selector) if _pod_ready(p))
            return names if len(names) >= count else None

        return self._wait(f"{count} ready pod(s) {selector}", ready, timeout=timeout, check=check, poll=poll)

    def suspend_cronjobs(self, names: Iterable[str] | None = None) -> list[CronJobState]:
        states = []
        batch = k8s.BatchV1Api(self.api_client)
        for name in (self.cronjobs if names is None else tuple(names)):
            with _api_errors(f"OpenShift refused suspending CronJob {name}",
                             f"suspending CronJob {name} failed: API answered {{status}}"), \
                    _not_found(f"no CronJob {name} in {self.namespace}"):
                def read_patch():
                    job = batch.read_namespaced_cron_job(name, self.namespace, _request_timeout=10)
                    was = bool(job.spec and job.spec.suspend)
                    if not was:
                        batch.patch_namespaced_cron_job(name, self.namespace, {"spec": {"suspend": True}},
                                                        _request_timeout=10)
                    return was

                was = _on_conflict_reread(read_patch)
            states.append(CronJobState(name, was))
        return states

    def resume_cronjobs(self, states: Iterable[CronJobState]) -> None:
        batch = k8s.BatchV1Api(self.api_client)
        for state in states:
            if state.was_suspended:
                continue  # it was suspended before; leave it so
            with _api_errors(f"OpenShift refused resuming CronJob {state.name}",
                             f"resuming CronJob {state.name} failed: API answered {{status}}"), \
                    _not_found(f"no CronJob {state.name} in {self.namespace}"):
                _on_conflict_reread(lambda: batch.patch_namespaced_cron_job(
                    state.name, self.namespace, {"spec": {"suspend": False}}, _request_timeout=10))

    # --- what a restore records, changes and puts back (hcapadmin/restores/runbook_openshift.py) ---
    def database_credentials(self, timeout: float = 10) -> "DatabaseCredentials":
        """The superuser name and password and the application's database name
        from the Patroni Secret.  The password stays in memory: it is never
        logged, stored or put in a URL (its repr hides it)."""
        with _api_errors(f"the service account may not get secrets/{self.patroni_secret} in {self.namespace} "
                         "(RBAC: get on secrets, resourceNames "
                         f"[{self.patroni_secret}])",
                         f"reading Secret {self.patroni_secret} failed: API answered {{status}}"), \
                _not_found(f"no Secret {self.patroni_secret} in {self.namespace}"):
            secret = self.core().read_namespaced_secret(self.patroni_secret, self.namespace,
                                                        _request_timeout=timeout)
        data = secret.data or {}

        def value(key):
            raw = data.get(key)
            if not raw:
                raise OpsError(f"Secret {self.patroni_secret} has no {key}")
            try:
                return base64.b64decode(raw).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                raise OpsError(f"Secret {self.patroni_secret}: {key} is not readable text") from None

        return DatabaseCredentials(user=value("superuser-username"), password=value("superuser-password"),
                                   database=value("db-name"))

    def database_conninfo(self, credentials: "DatabaseCredentials", dbname: str = "postgres") -> str:
        """A libpq connection string to the Patroni service with ``credentials``
        (for psycopg only: it holds the password, so it is never logged)."""
        return psycopg.conninfo.make_conninfo(host=self.database_host, port=str(self.database_port),
                                              user=credentials.user, password=credentials.password,
                                              dbname=dbname, connect_timeout="10",
                                              application_name="hcapadmin-restore")

    def maintenance_conninfo(self) -> str:
        """The Patroni service with the Secret's superuser (read again each time)."""
        return self.database_conninfo(self.database_credentials())

    def server_workload(self, timeout: float = 10) -> WorkloadState:
        """The HCAP server's DeploymentConfig, or its Deployment when there is
        no DeploymentConfig: kind, replicas and the label selector of its pods."""
        custom = k8s.CustomObjectsApi(self.api_client)
        with _api_errors(f"the service account may not get deploymentconfigs/{self.server_name}",
                         f"reading DeploymentConfig {self.server_name} failed: API answered {{status}}"):
            try:
                dc = custom.get_namespaced_custom_object("apps.openshift.io", "v1", self.namespace,
                                                         "deploymentconfigs", self.server_name,
                                                         _request_timeout=timeout)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                dc = None
        if dc is not None:
            spec = dc.get("spec") or {}
            selector = spec.get("selector") or {}
            return WorkloadState("DeploymentConfig", self.server_name, int(spec.get("replicas") or 0),
                                 ",".join(f"{k}={v}" for k, v in sorted(selector.items())))
        apps = k8s.AppsV1Api(self.api_client)
        with _api_errors(f"the service account may not get deployments/{self.server_name}",
                         f"reading Deployment {self.server_name} failed: API answered {{status}}"), \
                _not_found(f"neither a DeploymentConfig nor a Deployment {self.server_name} in {self.namespace}"):
            dep = apps.read_namespaced_deployment(self.server_name, self.namespace, _request_timeout=timeout)
        labels = (dep.spec.selector.match_labels if dep.spec and dep.spec.selector else None) or {}
        return WorkloadState("Deployment", self.server_name, int(dep.spec.replicas or 0),
                             ",".join(f"{k}={v}" for k, v in sorted(labels.items())))

    def replicas_of(self, kind: str, name: str, timeout: float = 10) -> int:
        """The replicas a workload asks for now (its scale subresource)."""
        if kind not in _SCALE_KINDS:
            raise Invalid(f"cannot scale a {kind}: only {', '.join(_SCALE_KINDS)}")
        with _api_errors(f"the service account may not get {_PLURAL[kind]}/scale ({name})",
                         f"reading the scale of {kind} {name} failed: API answered {{status}}"), \
                _not_found(f"no {kind} {name} in {self.namespace}"):
            if kind == "DeploymentConfig":
                scale = k8s.CustomObjectsApi(self.api_client).get_namespaced_custom_object_scale(
                    "apps.openshift.io", "v1", self.namespace, "deploymentconfigs", name, _request_timeout=timeout)
                return int(((scale or {}).get("spec") or {}).get("replicas") or 0)
            apps = k8s.AppsV1Api(self.api_client)
            read = apps.read_namespaced_deployment_scale if kind == "Deployment" else \
                apps.read_namespaced_stateful_set_scale
            scale = read(name, self.namespace, _request_timeout=timeout)
            return int((scale.spec.replicas if scale.spec else 0) or 0)

    def cronjob_states(self, timeout: float = 10) -> list[CronJobState]:
        """The configured CronJobs that exist, each with whether it is
        suspended now (all CronJobs of the namespace when none are configured)."""
        batch = k8s.BatchV1Api(self.api_client)
        with _api_errors("the service account may not list cronjobs",
                         "listing CronJobs failed: API answered {status}"):
            items = batch.list_namespaced_cron_job(self.namespace, _request_timeout=timeout).items
        wanted = set(self.cronjobs)
        return [CronJobState(job.metadata.name, bool(job.spec and job.spec.suspend))
                for job in sorted(items, key=lambda j: j.metadata.name)
                if not wanted or job.metadata.name in wanted]

    def wait_pod_count(self, selector: str, count: int, *, timeout: float = 600, check=None,
                       poll: float = 1.0) -> list[str]:
        """Return the names once at most ``count`` pods match ``selector``
        (a StatefulSet scaled down has removed its highest ordinals)."""
        def few():
            names = sorted(p.metadata.name for p in self._pods(selector))
            return names or [""] if len(names) <= count else None

        return [n for n in self._wait(f"at most {count} pod(s) {selector}", few, timeout=timeout, check=check,
                                      poll=poll) if n]

    def missing_permissions(self, rules, timeout: float = 10) -> list[str]:
        """Which of ``rules`` ((verb, API group, resource, subresource, name))
        the service account may not do in the namespace, as the API server
        answers a SelfSubjectAccessReview for each ("patch statefulsets/scale
        hcap-patroni"), so a runbook stops before changing anything."""
        auth = k8s.AuthorizationV1Api(self.api_client)
        missing = []
        for verb, group, resource, subresource, name in rules:
            attributes = {"namespace": self.namespace, "verb": verb, "group": group, "resource": resource}
            if subresource:
                attributes["subresource"] = subresource
            if name:
                attributes["name"] = name
            body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                    "spec": {"resourceAttributes": attributes}}
            with _api_errors("OpenShift refused the service account's access review",
                             "the access review failed: API answered {status}"):
                answer = auth.create_self_subject_access_review(body, _request_timeout=timeout)
            if not (answer.status and answer.status.allowed):
                what = resource + (f"/{subresource}" if subresource else "")
                missing.append(f"{verb} {what}" + (f" {name}" if name else "")
                               + (f" (API group {group})" if group else ""))
        return missing

    # Patroni's own tools, by exec in a Patroni pod (patronictl talks to every
    # member's REST API from inside the cluster).
    def _patronictl(self, args: list[str], *, pod: str | None = None, timeout: float = 120) -> ExecResult:
        pod = pod or self.leader_pod()
        return self.exec(pod, ["patronictl", "-c", self.patronictl_config, *args], timeout=timeout)

    def patroni_members(self, timeout: float = 60) -> list[dict]:
        """``patronictl list -f json``: each member's Member, Role, State, TL
        and "Lag in MB", as Patroni itself reports them."""
        result = self._patronictl(["list", "-f", "json"], timeout=timeout)
        if result.returncode != 0:
            raise OpsError(f"patronictl list failed (exit {result.returncode}): "
                           f"{_last_line(result.stderr) or 'no output'}")
        try:
            members = json.loads(result.stdout or "[]")
        except ValueError:
            raise OpsError("patronictl list -f json printed no JSON") from None
        if not isinstance(members, list):
            raise OpsError("patronictl list -f json printed no member list")
        return [m for m in members if isinstance(m, dict)]

    def patroni_switchover(self, leader: str, candidate: str, *, timeout: float = 300) -> str:
        """Patroni's switchover from ``leader`` to ``candidate`` (``patronictl
        switchover --force``; ``--master`` for Patroni 2, ``--leader`` after)."""
        pods = {p.metadata.name: p for p in self._pods(self.patroni_selector)}
        raw = ((pods.get(leader).metadata.annotations or {}) if leader in pods else {}).get("status") or "{}"
        try:
            version = str(json.loads(raw).get("version") or "")
        except ValueError:
            version = ""
        flag = "--master" if version.startswith(("1.", "2.")) else "--leader"
        result = self._patronictl(["switchover", flag, leader, "--candidate", candidate, "--force"], pod=leader,
                                  timeout=timeout)
        if result.returncode != 0:
            raise OpsError(f"patronictl switchover to {candidate} failed (exit {result.returncode}): "
                           f"{_last_line(result.stderr) or _last_line(result.stdout) or 'no output'}")
        return result.stdout

    def patroni_reinit(self, member: str, *, timeout: float = 600) -> str:
        """``patronictl reinit <cluster> <member> --force``: the member copies
        the leader's data again (for a replica that cannot catch up)."""
        result = self._patronictl(["reinit", self.patroni_name, member, "--force"], timeout=timeout)
        if result.returncode != 0:
            raise OpsError(f"patronictl reinit {member} failed (exit {result.returncode}): "
                           f"{_last_line(result.stderr) or _last_line(result.stdout) or 'no output'}")
        return result.stdout


def _on_conflict_reread(read_patch, attempts: int = 5):
    """Run ``read_patch`` (which reads the object, then patches it) again
    when the API answers 409 Conflict: someone changed the object between
    the read and the patch, so it is read afresh."""
    for attempt in range(attempts):
        try:
            return read_patch()
        except ApiException as exc:
            if exc.status != 409 or attempt == attempts - 1:
                raise
            time.sleep(0.1 * (attempt + 1))


_PLURAL = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DeploymentConfig": "deploymentconfigs"}


_SCALE_KINDS = ("Deployment", "StatefulSet", "DeploymentConfig")


@contextmanager
def _not_found(message: str):
    """An API 404 inside the block is NotFound(message) (inside _api_errors)."""
    try:
        yield
    except ApiException as exc:
        if exc.status == 404:
            raise NotFound(message) from None
        raise


def _pod_ready(pod) -> bool:
    if not pod.status or pod.status.phase != "Running" or pod.metadata.deletion_timestamp:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


_VERIFY_FAIL = re.compile(r"\b(fail(ed|ure)?|error)\b", re.IGNORECASE)
_VERIFY_PASS = re.compile(r"\b(pass(ed)?|verified|succeeded|successful(ly)?)\b", re.IGNORECASE)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""
