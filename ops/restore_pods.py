"""The load into staging where the backup and PostgreSQL live in pods
(OpenShift): ``ops.restore.LoadStaging`` with its two local processes
replaced by two commands run by exec.

The backup never leaves the cluster as a file: ``gunzip -c -- <file>`` runs
in the backup pod and its output streams through the worker, line by line,
into ``psql -X -v ON_ERROR_STOP=1`` run in the Patroni leader pod (on its
stdin).  In between, everything is exactly the local load: the roles section
is parsed and applied by ``ops.restore.apply_roles`` (missing roles created,
existing ones never altered), the dump goes through the same line filter
(``ops.backups``' meta-command check, ``\\connect`` refused) and COPY counter,
psql runs under its own ``\\restrict`` key, known-benign Patroni-only
extensions are skipped and reported, and the load is one transaction whose
``COMMIT`` is sent only after the decompressor exited 0, pg_dump's "dump
complete" line was seen and the file in the backup pod still has the
approved sha256 (read again there, after the load).  Creating staging, its
marker, the roles and the undo go through ``conninfo`` (the Patroni service
with the Secret's superuser), as locally.  Nothing here imports Django.
"""

from __future__ import annotations

import queue
import secrets
import threading
import time

from ops import restore
from ops.errors import OpsError

_SENTINEL = None


class _Stopped(Exception):
    """The reader or writer was told to stop (the load ended or failed)."""


class _PodLines:
    """The stdout of a command in a pod as a line source (``readline`` and
    iteration, bytes), read by a thread of its own into a bounded buffer, so
    a slow consumer slows the command down instead of filling memory."""

    def __init__(self, driver, pod: str, argv: list[str], *, container: str | None, timeout: float):
        self._queue: queue.Queue = queue.Queue(maxsize=64)
        self.stop = threading.Event()
        self.result = None
        self.error: BaseException | None = None
        self._lines: list[bytes] = []
        self._at = 0
        self._partial = b""
        self._eof = False
        self._thread = threading.Thread(target=self._run, args=(driver, pod, argv, container, timeout), daemon=True)
        self._thread.start()

    def _put(self, item) -> None:
        while True:
            if self.stop.is_set():
                raise _Stopped()
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _check(self) -> None:
        if self.stop.is_set():
            raise _Stopped()

    def _run(self, driver, pod, argv, container, timeout) -> None:
        try:
            self.result = driver.exec(pod, argv, container=container, timeout=timeout, binary=True,
                                      keep_stdout=False, on_stdout=self._put, check=self._check)
        except BaseException as exc:  # reported by the consumer
            self.error = exc
        finally:
            try:
                self._put(_SENTINEL)
            except _Stopped:
                pass

    def _fill(self) -> None:
        while True:
            try:
                chunk = self._queue.get(timeout=0.2)
                break
            except queue.Empty:
                if self.stop.is_set():
                    raise _Stopped() from None
        if chunk is _SENTINEL:
            self._eof = True
            if self._partial:
                self._lines.append(self._partial)
                self._partial = b""
            return
        if isinstance(chunk, str):
            chunk = chunk.encode()
        parts = (self._partial + chunk).split(b"\n")
        self._partial = parts.pop()
        self._lines.extend(part + b"\n" for part in parts)

    def readline(self) -> bytes:
        while self._at >= len(self._lines):
            if self._eof:
                return b""
            self._lines, self._at = [], 0
            self._fill()
        line = self._lines[self._at]
        self._at += 1
        return line

    def __iter__(self):
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    def close(self, wait: float = 30) -> None:
        self.stop.set()
        self._thread.join(wait)


class _QueueWriter:
    """What ``LoadStaging._pump`` writes to: a bounded queue that the stdin
    of the exec in the leader pod reads from."""

    def __init__(self, stop: threading.Event):
        self.queue: queue.Queue = queue.Queue(maxsize=16)
        self.stop = stop

    def write(self, data: bytes) -> None:
        while True:
            if self.stop.is_set():
                raise _Stopped()
            try:
                self.queue.put(data, timeout=0.2)
                return
            except queue.Full:
                continue

    def flush(self) -> None:
        pass


class PodLoadStaging(restore.LoadStaging):
    """``LoadStaging`` streaming from the backup pod into psql in the
    leader pod (see the module docstring).  ``driver`` is the OpenShift
    driver; ``entry`` the backup (``path`` in the backup pod, ``name``);
    ``superuser`` the role psql runs as in the leader pod (its local
    connection needs no password)."""

    def __init__(self, conninfo: str, driver, entry, target: str, *, sha256: str, stamp: str, superuser: str,
                 check=None, log=None, line_filter=restore._meta_command_filter, timeout: float = 6 * 3600):
        super().__init__(conninfo, entry.path, target, sha256=sha256, stamp=stamp, check=check, log=log,
                         line_filter=line_filter)
        self.driver = driver
        self.entry = entry
        self.superuser = superuser
        self.timeout = timeout

    def _load(self, staging_oid: int, available: set) -> restore.LoadResult:
        key = secrets.token_hex(16)
        state = restore._Stream()
        backup_pod = self.driver.backup_pod()
        leader = self.driver.leader_pod()
        self.log(f"Streaming gunzip -c {self.entry.path} from pod {backup_pod} into psql in the leader {leader}")
        source = _PodLines(self.driver, backup_pod, ["gunzip", "-c", "--", self.entry.path],
                           container=getattr(self.driver, "backup_container", None), timeout=self.timeout)
        sink = _QueueWriter(source.stop)
        threads: list[threading.Thread] = []
        role_result = {"created": [], "existing": [], "skipped": []}
        try:
            pending, roles = self._read_roles(source)
            self.check()
            if roles is not None:
                role_result = restore.apply_roles(self.conninfo, restore.parse_roles_section(roles))
                self._roles_created = list(role_result["created"])
                self.log(f"Roles: {len(role_result['created'])} created, "
                         f"{len(role_result['existing'])} already present and left untouched")

            def pump():
                try:
                    self._pump(pending, source, sink, state, available)
                finally:
                    try:
                        sink.write(_SENTINEL)
                    except _Stopped:
                        pass

            thread = threading.Thread(target=pump, daemon=True)
            thread.start()
            threads.append(thread)
            marker_holder: dict = {}

            def stdin():
                yield f"\\restrict {key}\nBEGIN;\n".encode()
                last_log = time.monotonic()
                while True:
                    try:
                        data = sink.queue.get(timeout=0.2)
                    except queue.Empty:
                        continue
                    if data is _SENTINEL:
                        break
                    yield data
                    if time.monotonic() - last_log > 5:
                        last_log = time.monotonic()
                        self.log(f"  {state.bytes / 1e6:,.0f} MB of SQL loaded")
                marker_holder["text"] = self._finish(source, state, role_result)
                yield marker_holder["text"]

            argv = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-U", self.superuser, "-d", self.staging]
            result = self.driver.exec(leader, argv, stdin=stdin(), timeout=self.timeout, check=self.check)
            if isinstance(state.error, OpsError):
                raise state.error
            if result.returncode != 0 or "text" not in marker_holder:
                found = restore._error_lines(result.stderr or "")
                raise restore.RestoreFailed("loading the dump stopped: "
                                            + (found[0] if found else (result.stderr or "").strip()[-300:]
                                               or f"psql in pod {leader} exited {result.returncode}"))
            self.log(f"Loaded {state.bytes / 1e6:,.1f} MB of SQL, {len(state.copy_rows)} tables, "
                     f"{sum(state.copy_rows.values()):,} rows")
            for item in state.benign:
                self.log(f"  skipped (known benign): {item}")
            return self._result(staging_oid, state, role_result)
        finally:
            source.close()
            for thread in threads:
                thread.join(timeout=30)

    def _result(self, staging_oid, state, role_result) -> restore.LoadResult:
        return restore.LoadResult(target=self.target, staging=self.staging, staging_oid=staging_oid,
                                  stamp=self.stamp, backup=self.entry.name, sha256=self.sha256,
                                  roles_created=role_result["created"], roles_existing=role_result["existing"],
                                  roles_statements_skipped=role_result["skipped"], benign_skipped=state.benign,
                                  copy_rows=state.copy_rows, sql_bytes=state.bytes)

    def _finish(self, source: _PodLines, state, role_result) -> bytes:
        """After the last line: every condition for COMMIT, then the marker
        and COMMIT itself (raising here leaves the transaction uncommitted)."""
        import json
        from dataclasses import asdict

        if state.error is not None:
            if isinstance(state.error, OpsError):
                raise state.error
            raise restore.RestoreFailed(f"reading the backup failed: {type(state.error).__name__}")
        source._thread.join(60)
        if source.error is not None:
            if isinstance(source.error, OpsError):
                raise source.error
            raise restore.RestoreFailed(f"reading the backup in its pod failed: {type(source.error).__name__}")
        if source.result is None or source.result.returncode != 0:
            err = (source.result.stderr if source.result else b"") or b""
            text = err.decode("utf-8", "replace").strip()
            raise restore.RestoreFailed("the file is truncated or corrupt ("
                                        + (text.splitlines()[-1][:200] if text else
                                           f"gunzip exit {getattr(source.result, 'returncode', '?')}") + ")")
        if state.in_copy or not state.complete:
            raise restore.RestoreFailed("the file ends before pg_dump's 'dump complete' line: it is truncated")
        now = self.driver.backup_checksum(self.entry, check=self.check)
        if now != self.sha256:
            raise restore.RestoreFailed("the backup file in its pod no longer has the approved sha256; "
                                        "nothing loaded")
        result = self._result(0, state, role_result)
        marker = json.dumps({restore.MARKER_KEY: {k: v for k, v in asdict(result).items()
                                                  if k in ("target", "staging", "stamp", "backup", "sha256",
                                                           "roles_created", "roles_existing", "benign_skipped",
                                                           "copy_rows", "sql_bytes")}},
                            separators=(",", ":"))
        self.check()  # the last moment a cancel still leaves nothing behind
        return (b"SET standard_conforming_strings = on;\nCOMMENT ON DATABASE \"" + self.staging.encode()
                + b"\" IS '" + marker.replace("'", "''").encode() + b"';\nCOMMIT;\n")
