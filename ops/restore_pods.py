"""The load into staging where the backup and PostgreSQL live in pods
(OpenShift): ``ops.restore.LoadStaging`` with its two local processes
replaced by two commands run by exec.

The backup never leaves the cluster as a file: ``gunzip -c -- <file>`` runs
in the backup pod and its output streams through the worker, in chunks,
into ``psql -X -v ON_ERROR_STOP=1`` run in the Patroni leader pod (on its
stdin).  In between, everything is exactly the local load: the roles section
is parsed and applied by ``ops.restore.apply_roles`` (missing roles created,
existing ones never altered), the dump goes through the same line filter
(``ops.backups``' meta-command check, ``\\connect`` refused, COPY rows counted),
psql runs under its own ``\\restrict`` key, known-benign Patroni-only
extensions are skipped and reported, and the load is one transaction whose
``COMMIT`` is sent only after the decompressor exited 0, pg_dump's "dump
complete" line was seen and the file in the backup pod still has the
approved sha256 (read again there, after the load).  Creating staging, its
marker, the roles and the undo go through ``conninfo`` (the Patroni service
with the Secret's superuser), as locally.  Nothing here imports Django.
"""

from __future__ import annotations

import itertools
import queue
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
        self._buf = bytearray()
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
        """One more chunk of the command's output into the buffer (or the end)."""
        while True:
            try:
                chunk = self._queue.get(timeout=0.2)
                break
            except queue.Empty:
                if self.stop.is_set():
                    raise _Stopped() from None
        if chunk is _SENTINEL:
            self._eof = True
            return
        self._buf += chunk.encode() if isinstance(chunk, str) else chunk

    def readline(self) -> bytes:
        while True:
            end = self._buf.find(b"\n")
            if end >= 0 or self._eof:
                end = len(self._buf) if end < 0 else end + 1
                line = bytes(self._buf[:end])
                del self._buf[:end]
                return line
            self._fill()

    def __iter__(self):
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    def read1(self, size: int) -> bytes:
        """What has arrived, up to ``size`` bytes, waiting only when nothing has
        (b"" at the end): the load's reader takes it in chunks."""
        while not self._buf and not self._eof:
            self._fill()
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

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
                 timeout: float = 6 * 3600, **kwargs):
        # kwargs: LoadStaging's check, log, own_roles, record_roles, after_copy_data, chunk_size
        super().__init__(conninfo, entry.path, target, sha256=sha256, stamp=stamp, **kwargs)
        self.driver = driver
        self.entry = entry
        self.superuser = superuser
        self.timeout = timeout

    def _load(self, staging_oid: int, available: set) -> restore.LoadResult:
        state = restore._Stream()
        backup_pod = self.driver.backup_pod()
        leader = self.driver.leader_pod()
        self.log(f"Streaming gunzip -c {self.entry.path} from pod {backup_pod} into psql in the leader {leader}")
        source = _PodLines(self.driver, backup_pod, ["gunzip", "-c", "--", self.entry.path],
                           container=getattr(self.driver, "backup_container", None), timeout=self.timeout)
        sink = _QueueWriter(source.stop)
        threads: list[threading.Thread] = []
        try:
            pending, roles = self._read_roles(source)
            self.check()
            role_result = self._apply_backup_roles(roles)
            if self.line_filter is not None:
                raw = restore.LineSource(self.line_filter(itertools.chain(pending, source)))
            else:
                raw = restore._Source(b"".join(pending), source)
            reader = restore._LoadReader(raw, benign_extensions=self.benign_extensions, available=available,
                                         chunk_size=self.chunk_size)

            def pump():
                try:
                    self._pump(reader, sink, state)
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
                yield reader.preamble + b"BEGIN;\n"
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
                marker_holder["text"] = self._finish(source, state, reader, role_result)
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
            self.log(f"Loaded {state.bytes / 1e6:,.1f} MB of SQL, {len(reader.copy_rows)} tables, "
                     f"{sum(reader.copy_rows.values()):,} rows ({len(reader.frozen)} tables written frozen: COPY FREEZE)")
            for item in reader.benign:
                self.log(f"  skipped (known benign): {item}")
            return self._load_result(staging_oid, self.entry.name, reader, role_result, state.bytes)
        finally:
            source.close()
            for thread in threads:
                thread.join(timeout=30)

    def _finish(self, source: _PodLines, state, reader, role_result) -> bytes:
        """After the last line: every condition for COMMIT, then the marker
        and COMMIT itself (raising here leaves the transaction uncommitted)."""
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
        if reader.in_copy or not reader.complete:
            raise restore.RestoreFailed("the file ends before pg_dump's 'dump complete' line: it is truncated")
        now = self.driver.backup_checksum(self.entry, check=self.check)
        if now != self.sha256:
            raise restore.RestoreFailed("the backup file in its pod no longer has the approved sha256; "
                                        "nothing loaded")
        result = self._load_result(0, self.entry.name, reader, role_result, state.bytes)
        self.check()  # the last moment a cancel still leaves nothing behind
        return self._commit_sql(result)
