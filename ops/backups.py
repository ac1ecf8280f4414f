"""Backups in backup-container's format (plain Python, no Django).

Layout: ``<root>/{daily|weekly|monthly}/YYYY-MM-DD/<host>-<database>_YYYY-MM-DD_HH-MM-SS.sql.gz``;
a backup being written is ``<name>.sql.gz.in_progress``.  A PostgreSQL backup
is the gzip of ``pg_dumpall --roles-only --no-role-passwords`` followed by
``pg_dump -Fp``.

``local_backup`` streams both dumps straight into one compressor process
(pigz when installed, else gzip) whose output goes to the ``.in_progress``
file: the data never passes through Python and never touches disk
uncompressed, so memory stays flat whatever the database size, and dumping
and compressing run in parallel.  Passwords travel in ``PGPASSWORD``, never
on a command line.

``verify_local`` restores a backup into a throwaway server of the backup's
major version (``ops.pgsandbox``), never the live one.  Whatever is fed to
psql -- by verification now, by restores later -- goes through
``SafeSQLReader``, which refuses psql meta-commands other than the ones
pg_dump writes and puts psql in ``\\restrict`` mode.
"""

from __future__ import annotations

import calendar
import gzip
import hashlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from ops.errors import Invalid, NotFound, OpsError, Unavailable

KINDS = ("daily", "weekly", "monthly")
NAME_RE = re.compile(
    r"^(?P<host>[A-Za-z0-9][A-Za-z0-9.-]*)-(?P<database>[A-Za-z0-9_]+)"
    r"_(?P<date>\d{4}-\d{2}-\d{2})_(?P<time>\d{2}-\d{2}-\d{2})\.sql\.gz(?P<in_progress>\.in_progress)?$"
)
ROLES_END_MARKER = "-- PostgreSQL database cluster dump complete"
ROLES_START_MARKER = "-- PostgreSQL database cluster dump"
# Errors a roles section restored onto a server that already has the roles
# is expected to produce; anything else fails the verification.
BENIGN_ROLE_ERRORS = (
    re.compile(r'^ERROR:\s+role ".+" already exists$'),
)

Check = Callable[[], None]
Log = Callable[[str], None]


class VerifyFailed(OpsError):
    """The backup could not be restored or failed a check."""


@dataclass
class BackupEntry:
    name: str
    path: str
    host: str
    database: str
    kind: str
    created_at: datetime
    size_bytes: int
    in_progress: bool
    engine: str = "postgres"  # "postgres" or "mongo" (the log database; see ops.logbackups)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        return data


def folder_kind(day: date) -> str:
    """backup-container's rolling strategy: last day of the month -> monthly,
    Sunday -> weekly, otherwise daily."""
    if day.day == calendar.monthrange(day.year, day.month)[1]:
        return "monthly"
    if day.weekday() == 6:
        return "weekly"
    return "daily"


def backup_name(host: str, database: str, when: datetime) -> str:
    return f"{host}-{database}_{when:%Y-%m-%d_%H-%M-%S}.sql.gz"


def parse_name(name: str):
    """The regex match for a backup file name, or None."""
    if not isinstance(name, str) or len(name) > 255:
        return None
    return NAME_RE.fullmatch(name)


def entry_from_path(relpath: str, size: int, root: str) -> BackupEntry | None:
    parts = relpath.strip("/").split("/")
    match = parse_name(parts[-1])
    if match is None:
        return None
    kind = parts[0] if len(parts) >= 2 and parts[0] in KINDS else "other"
    created = datetime.strptime(match["date"] + " " + match["time"], "%Y-%m-%d %H-%M-%S").replace(tzinfo=timezone.utc)
    return BackupEntry(
        name=parts[-1], path=root.rstrip("/") + "/" + "/".join(parts), host=match["host"], database=match["database"],
        kind=kind, created_at=created, size_bytes=int(size), in_progress=bool(match["in_progress"]),
    )


def scan_local(root: str) -> list[BackupEntry]:
    """Every backup file under ``root``, newest first."""
    base = Path(root)
    entries: list[BackupEntry] = []
    if not base.is_dir():
        return entries
    for dirpath, _dirnames, filenames in os.walk(base):
        for filename in filenames:
            if ".sql.gz" not in filename:
                continue
            full = Path(dirpath) / filename
            try:
                size = full.stat().st_size
            except OSError:  # renamed or pruned meanwhile
                continue
            entry = entry_from_path(str(full.relative_to(base)), size, str(base))
            if entry is not None:
                entries.append(entry)
    entries.sort(key=lambda e: (e.created_at, e.name), reverse=True)
    return entries


def find_argv(root: str = "/backups") -> list[str]:
    """The listing command run in the backup pod: one ``path<TAB>size`` line per file."""
    return ["find", root, "-type", "f", "-name", "*.sql.gz*", "-printf", "%P\\t%s\\n"]


def parse_find_output(text: str, root: str = "/backups") -> list[BackupEntry]:
    entries = []
    for line in text.splitlines():
        rel, sep, size = line.rpartition("\t")
        if not sep or not size.isdigit():
            continue
        entry = entry_from_path(rel, int(size), root)
        if entry is not None:
            entries.append(entry)
    entries.sort(key=lambda e: (e.created_at, e.name), reverse=True)
    return entries


# --- running the PostgreSQL client tools ---------------------------------------
def split_conninfo(conninfo: str) -> tuple[str, dict, str]:
    """(conninfo without password, environment with PGPASSWORD, dbname)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(conninfo)
    password = params.pop("password", None)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    if password:
        env["PGPASSWORD"] = str(password)
    return make_conninfo(**params), env, str(params.get("dbname") or "postgres")


def _with_dbname(conninfo: str, dbname: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(conninfo)
    params["dbname"] = dbname
    return make_conninfo(**params)


def _stderr_text(fh) -> str:
    fh.seek(0)
    return fh.read().decode("utf-8", "replace").strip()


def _kill(procs) -> None:
    for proc in procs:
        if proc is not None and proc.poll() is None:
            proc.kill()
    for proc in procs:
        if proc is not None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


def _wait(proc: subprocess.Popen, check: Check | None, tick: Callable[[], None] | None = None) -> int:
    last_tick = time.monotonic()
    while True:
        try:
            return proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            pass
        if check:
            check()
        if tick and time.monotonic() - last_tick >= 5:
            last_tick = time.monotonic()
            tick()


def _failure(program: str, rc: int, err) -> str:
    """"<program> failed (exit N | killed by SIGX): <its last stderr line>"."""
    detail = _stderr_text(err).splitlines()
    if rc < 0:
        try:
            how = f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            how = f"killed by signal {-rc}"
    else:
        how = f"exit {rc}"
    return f"{program} failed ({how}): {detail[-1] if detail else 'no output'}"


def compressor_argv() -> list[str]:
    return ["pigz", "-c"] if shutil.which("pigz") else ["gzip", "-c"]


def local_backup(conninfo: str, backup_dir: str, host: str, *, now: datetime | None = None, log: Log | None = None,
                 check: Check | None = None) -> BackupEntry:
    """Take one backup of the database named by ``conninfo`` into
    ``backup_dir`` with backup-container's name and format.  ``now`` (for
    seeding demo data) sets the name's timestamp, the folder and the mtime.
    ``check`` is called while waiting and may raise to abort (cancel)."""
    log = log or (lambda line: None)
    when = (now or datetime.now(timezone.utc))
    when = when.astimezone(timezone.utc) if when.tzinfo else when.replace(tzinfo=timezone.utc)
    safe_conninfo, env, dbname = split_conninfo(conninfo)
    if not re.fullmatch(r"[A-Za-z0-9_]+", dbname):
        raise Invalid(f"database name {dbname!r} cannot be used in a backup-container file name")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*", host or ""):
        raise Invalid(f"backup host {host!r} cannot be used in a backup-container file name")
    kind = folder_kind(when.date())
    folder = Path(backup_dir) / kind / f"{when:%Y-%m-%d}"
    folder.mkdir(parents=True, exist_ok=True)
    name = backup_name(host, dbname, when)
    final = folder / name
    partial = folder / (name + ".in_progress")
    if final.exists():
        raise Invalid(f"backup {name} already exists")
    compressor = compressor_argv()
    log(f"Writing {kind}/{when:%Y-%m-%d}/{name} ({compressor[0]})")
    procs: list[subprocess.Popen | None] = []
    errors = [tempfile.TemporaryFile() for _ in range(3)]
    done = False
    try:
        try:
            out = open(partial, "xb")
        except FileExistsError:
            raise Invalid(f"a backup named {name} is already being written") from None
        with out:
            comp = subprocess.Popen(compressor, stdin=subprocess.PIPE, stdout=out, stderr=errors[0])
            procs.append(comp)

            def written():
                try:
                    log(f"  {partial.stat().st_size / 1e6:,.1f} MB compressed so far")
                except OSError:
                    pass

            steps = (
                ("roles", ["pg_dumpall", "--roles-only", "--no-role-passwords", f"--dbname={safe_conninfo}",
                           "-l", dbname], errors[1]),
                ("database", ["pg_dump", "-Fp", f"--dbname={safe_conninfo}"], errors[2]),
            )
            for label, argv, err in steps:
                log(f"Dumping {label} ({argv[0]})")
                try:
                    proc = subprocess.Popen(argv, stdout=comp.stdin, stderr=err, env=env, stdin=subprocess.DEVNULL)
                except FileNotFoundError:
                    raise Unavailable(f"{argv[0]} is not installed on the worker") from None
                procs.append(proc)
                rc = _wait(proc, check, written)
                if rc != 0:
                    if rc == -signal.SIGPIPE or comp.poll() is not None:
                        # The dump lost its reader: the compressor stopped (a full disk, a write error).
                        # Its exit and message are the real cause; a dump killed by SIGPIPE says nothing.
                        comp_rc = _wait(comp, check)
                        if comp_rc != 0:
                            raise OpsError(_failure(compressor[0], comp_rc, errors[0]))
                    raise OpsError(_failure(argv[0], rc, err))
            comp.stdin.close()
            rc = _wait(comp, check)
            if rc != 0:
                raise OpsError(_failure(compressor[0], rc, errors[0]))
            try:
                os.fsync(out.fileno())
            except OSError as exc:
                raise OpsError(f"writing {name} failed: {exc.strerror}") from None
        stamp = when.timestamp()
        os.utime(partial, (stamp, stamp))
        os.rename(partial, final)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        done = True
    finally:
        if not done:
            _kill(procs)
            try:
                partial.unlink()
            except OSError:
                pass
        for fh in errors:
            fh.close()
    size = final.stat().st_size
    log(f"Backup complete: {name}, {size / 1e6:,.1f} MB")
    return entry_from_path(str(final.relative_to(backup_dir)), size, str(backup_dir))


# --- what may reach psql -----------------------------------------------------------
class UnsafeSQL(VerifyFailed):
    """A file meant for psql holds something psql must not run (a meta-command)."""


# pg_dump's own COPY line: ``COPY schema.table (col, ...) FROM stdin;`` with
# identifiers either plain lower-case or double-quoted.  Only such a line opens a
# data block: a looser match (``COPY (SELECT 1) TO stdout -- FROM stdin;``) could
# make data of what psql runs as commands.
_IDENT = rb'(?:[a-z_][a-z0-9_$]*|"(?:[^"\n]|"")+")'
# a table's name as pg_dump writes it (schema-qualified, quoted when needed)
TABLE_NAME = _IDENT + rb"(?:\." + _IDENT + rb")?"
COPY_START_RE = re.compile(rb"COPY (?P<table>" + TABLE_NAME + rb") (?:\(" + _IDENT + rb"(?:, "
                           + _IDENT + rb")*\))? FROM stdin;\r?\n?")
# The meta-commands pg_dump and pg_dumpall write, in the forms they write them
# (appendPsqlMetaConnect: a plain name, or -reuse-previous=on "dbname='...'").
# A database name holding "=" or ":" is refused: libpq would read it as a
# connection string or URI, which can name another host.
RESTRICT_RE = re.compile(rb"\\(?P<un>un)?restrict [A-Za-z0-9]+")
CONNECT_RE = re.compile(rb"""\\connect (?:[A-Za-z0-9_.]+|-reuse-previous=on "dbname='(?:[^'"\\\n=:]|'')*'")""")
# Lines worth a closer look outside COPY data: a COPY line, or one whose
# first non-blank character is a backslash (psql runs it as a meta-command).
_INTERESTING_RE = re.compile(rb"^(?:[ \t\r\f\v]*\\|COPY |-- PostgreSQL database cluster dump)", re.M)
# psql versions with ``\restrict`` (the fix for CVE-2025-8714): major -> first minor.
_RESTRICT_SINCE = {13: 22, 14: 19, 15: 14, 16: 10, 17: 6}


class SafeSQLReader:
    """A read-only, streaming view of a plain SQL file (``readline``, ``read``,
    iteration) that lets through only what psql may run: it refuses, with
    ``UnsafeSQL`` naming the line, every psql meta-command outside COPY data
    except the ``\\connect``, ``\\restrict`` and ``\\unrestrict`` lines
    pg_dump and pg_dumpall write.  Lines inside a ``COPY ... FROM stdin;``
    block up to its ``\\.`` line are data (rows may begin with ``\\N`` and
    other escapes) and pass unexamined, found with ``bytes.find`` so the
    data moves at C speed; nothing is held but one chunk.  The rows of each
    block are counted on the way (``copy_rows``, by the table as the COPY
    line names it) with ``bytes.count``.  ``read_chunk`` hands out checked
    data a chunk at a time, for a caller that feeds psql in large writes.

    ``restricted`` (the default) prepares a second line of defence: the
    reader draws a secret key, and a psql fed ``reader.preamble`` first
    (``\\restrict <key>``) refuses every meta-command but
    ``\\unrestrict <key>``, which the file cannot know.  The file's own
    ``\\restrict``/``\\unrestrict`` lines become blank lines and an allowed
    ``\\connect`` is wrapped in ``\\unrestrict``/``\\restrict``, so psql
    itself refuses any other meta-command, including one this line-based
    filter cannot see (after SQL on the same line, or after a COPY
    statement the server rejected).  Inside pg_dumpall's roles section
    (from its "cluster dump" header to its "cluster dump complete" line),
    which never holds COPY data and is restored without ON_ERROR_STOP,
    every line counts as commands."""

    # where a line worth a closer look (``_line``) starts; a subclass may look at more
    interesting = _INTERESTING_RE

    def __init__(self, raw, *, restricted: bool = True, chunk_size: int = 1 << 20, allow_connect: bool = True):
        self._raw = raw
        # A restore into a staging database must never switch databases.
        self.allow_connect = allow_connect
        self._chunk = chunk_size
        self._rest = b""  # raw bytes after the last complete line read so far
        self._ready = b""  # checked bytes not yet handed out
        self._off = 0
        self._eof = False
        self.restrict_key = secrets.token_hex(24) if restricted else None
        self.allow_copy = True
        self.in_copy = False
        self.lines_checked = 0
        self.copy_rows: dict[str, int] = {}  # "schema.table" as the COPY line writes it -> data lines
        self.copy_lines = 0  # data lines of every COPY block so far
        self._table = ""

    @property
    def preamble(self) -> bytes:
        """What psql must read first for the restricted mode (see above)."""
        return b"\\restrict " + self.restrict_key.encode() + b"\n" if self.restrict_key else b""

    # -- file-like interface -----------------------------------------------------
    def readline(self) -> bytes:
        while True:
            end = self._ready.find(b"\n", self._off)
            if end >= 0 or self._eof:
                end = len(self._ready) if end < 0 else end + 1
                line = self._ready[self._off:end]
                self._off = end
                return line
            self._fill()

    def read(self, size: int = -1) -> bytes:
        while not self._eof and (size < 0 or len(self._ready) - self._off < size):
            self._fill()
        end = len(self._ready) if size < 0 else min(len(self._ready), self._off + size)
        data = self._ready[self._off:end]
        self._off = end
        return data

    def read_chunk(self) -> bytes:
        """The next checked data: whole lines, about ``chunk_size`` bytes of
        input at a time (more when a line is longer); b"" at the end."""
        while self._off >= len(self._ready):
            if self._eof:
                return b""
            self._fill()
        data = self._ready[self._off:] if self._off else self._ready
        self._ready, self._off = b"", 0
        return data

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    # -- checking --------------------------------------------------------------------
    def _fill(self) -> None:
        data = self._raw.read(self._chunk)
        if not data:
            self._eof = True
            block, self._rest = self._rest, b""
        else:
            data = self._rest + data if self._rest else data
            cut = data.rfind(b"\n") + 1
            block, self._rest = data[:cut], data[cut:]
        checked = self._scan(block) if block else b""
        self._ready = self._ready[self._off:] + checked
        self._off = 0

    def _scan(self, block: bytes) -> bytes:
        """Check ``block`` (whole lines, or the file's last bytes)."""
        out = []
        pos, size = 0, len(block)
        while pos < size:
            if self.in_copy:
                at, end = _copy_end(block, pos)
                stop = size if end < 0 else end
                rows = block.count(b"\n", pos, size if at < 0 else at)
                self.copy_rows[self._table] += rows
                self.copy_lines += rows
                self.lines_checked += block.count(b"\n", pos, stop)
                out.append(block[pos:stop])
                pos = stop
                if end >= 0:
                    self.in_copy = False
                continue
            match = self.interesting.search(block, pos)
            if match is None:
                self.lines_checked += block.count(b"\n", pos)
                out.append(block[pos:])
                break
            start = match.start()
            self.lines_checked += block.count(b"\n", pos, start)
            out.append(block[pos:start])
            eol = block.find(b"\n", start)
            pos = size if eol < 0 else eol + 1
            out.append(self._line(block[start:pos], self.lines_checked + 1))
            self.lines_checked += 1
        return b"".join(out)

    def _line(self, line: bytes, number: int) -> bytes:
        if line.startswith(b"-- "):
            self.allow_copy = ROLES_END_MARKER.encode() in line
            return line
        if line.startswith(b"COPY "):
            match = COPY_START_RE.fullmatch(line) if self.allow_copy else None
            if match:
                self.in_copy = True
                self._table = match["table"].decode("utf-8", "replace")
                self.copy_rows.setdefault(self._table, 0)
            return line
        command = line.strip()
        if RESTRICT_RE.fullmatch(command):
            return b"\n" if self.restrict_key else line
        if CONNECT_RE.fullmatch(command) and self.allow_connect:
            if self.restrict_key:
                key = self.restrict_key.encode()
                return b"\\unrestrict " + key + b"\n" + command + b"\n\\restrict " + key + b"\n"
            return line
        name = re.match(rb"\\[^\s\\]{0,20}", command).group().decode("utf-8", "replace")
        where = " outside a COPY ... FROM stdin block" if self.allow_copy else ""
        raise UnsafeSQL(f"line {number}: psql meta-command {name}{where} is not allowed in a backup "
                        "(only \\connect, \\restrict and \\unrestrict, as pg_dump writes them)")

    def peek_major(self) -> int:
        """The PostgreSQL major version in pg_dump's "Dumped from database
        version" header line, read ahead (and checked) without consuming."""
        from ops.pgsandbox import DUMPED_FROM_RE, HEADER_SEARCH_BYTES as limit

        pos = self._off
        while True:
            end = self._ready.find(b"\n", pos)
            if end < 0:
                if self._eof or len(self._ready) - self._off > limit:
                    raise VerifyFailed("no pg_dump header (\"-- Dumped from database version\") found: "
                                       "this is not a pg_dump plain-format file")
                pos -= self._off
                self._fill()
                pos += self._off
                continue
            match = DUMPED_FROM_RE.match(self._ready, pos)
            if match:
                return int(match.group(1))
            pos = end + 1


def _copy_end(block: bytes, pos: int) -> tuple[int, int]:
    """(start, end) of the ``\\.`` line ending the COPY data that starts at
    ``pos`` (a line start), end just after its newline; (-1, -1) if it is not
    in ``block``.  psql ends COPY data at a line that is exactly ``\\.``
    (with ``\\n`` or ``\\r\\n``)."""
    at = pos
    while True:
        # backslash-dot is rare inside data (a data backslash is doubled), a newline is everywhere: find the former
        at = block.find(b"\\.", at)
        if at < 0:
            return -1, -1
        if (at == pos or block[at - 1] == 0x0A) and (block[at + 2:at + 3] in (b"\n", b"")
                                                    or block.startswith(b"\r\n", at + 2)):
            eol = block.find(b"\n", at)
            return at, (len(block) if eol < 0 else eol + 1)
        at += 2


class LineSource:
    """A ``read(n)`` over an iterable of byte lines (SafeSQLReader's input)."""

    def __init__(self, lines):
        self._lines = iter(lines)

    def read(self, size: int) -> bytes:
        out, have = [], 0
        for line in self._lines:
            out.append(line)
            have += len(line)
            if have >= size:
                break
        return b"".join(out)


def safe_sql_lines(lines, *, allow_connect: bool = True, chunk_size: int = 1 << 16):
    """The lines of a plain SQL stream that psql may run, checked as
    SafeSQLReader checks a file (no restricted-mode rewriting: the caller
    runs psql in ``\\restrict`` mode itself).  Raises UnsafeSQL naming the line."""
    return iter(SafeSQLReader(LineSource(lines), restricted=False, chunk_size=chunk_size,
                              allow_connect=allow_connect))


def sha256_file(path: str, *, check: Check | None = None, chunk: int = 1 << 20) -> str:
    """The SHA-256 (hex) of a file, streamed; ``check`` is called between chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
            if check:
                check()
    return digest.hexdigest()


def check_sql_file(fh, *, chunk_size: int = 1 << 20) -> int:
    """Read a whole decompressed SQL stream through SafeSQLReader without
    running it (a restore can refuse a file before touching anything);
    returns the number of lines.  Raises UnsafeSQL."""
    reader = SafeSQLReader(fh, restricted=False, chunk_size=chunk_size)
    while reader.read(chunk_size):
        pass
    return reader.lines_checked


def require_restrict(psql: str = "psql") -> None:
    """Unavailable unless ``psql`` has ``\\restrict`` (SafeSQLReader's second
    line of defence)."""
    try:
        out = subprocess.run([psql, "--version"], capture_output=True, text=True, stdin=subprocess.DEVNULL).stdout
    except FileNotFoundError:
        raise Unavailable(f"{psql} is not installed on the worker") from None
    match = re.search(r"\b(\d+)\.(\d+)", out)
    major, minor = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if major < 13 or minor < _RESTRICT_SINCE.get(major, 0):
        raise Unavailable(f"{psql} is version {major}.{minor}, which lacks \\restrict; "
                          "update the PostgreSQL client packages (13.22, 14.19, 15.14, 16.10, 17.6 or later)")


# --- verification ----------------------------------------------------------------
def _benign(line: str) -> bool:
    return any(p.match(line) for p in BENIGN_ROLE_ERRORS)


def _error_lines(text: str) -> list[str]:
    lines = []
    for raw in text.splitlines():
        line = re.sub(r"^psql:[^:]*:\d+:\s*", "", raw.strip())
        if line.startswith(("ERROR:", "FATAL:")) or "backslash commands are restricted" in line:
            lines.append(line)
    return lines


def restore_stream(fh, conninfo: str, env: dict, *, log: Log, check: Check | None = None, psql: str = "psql") -> dict:
    """Restore a decompressed backup stream (binary file object) into the
    database of ``conninfo``: the roles section without ON_ERROR_STOP, each
    error checked against BENIGN_ROLE_ERRORS, then the dump with
    ``ON_ERROR_STOP=1``.  Everything passes through SafeSQLReader and each
    psql runs restricted (its ``preamble``).  Raises VerifyFailed (UnsafeSQL
    for a refused meta-command)."""
    require_restrict(psql)
    if not isinstance(fh, SafeSQLReader) or not fh.restrict_key:
        fh = SafeSQLReader(fh)
    preamble = fh.preamble
    argv = [psql, "-X", "-q", f"--dbname={conninfo}"]
    first = fh.readline()
    benign = 0
    pending = first
    if first.decode("utf-8", "replace").startswith("--"):
        # look for the pg_dumpall header within the first lines
        head = [first]
        while len(head) < 5:
            line = fh.readline()
            head.append(line)
            if not line or ROLES_START_MARKER.encode() in line:
                break
        is_roles = any(ROLES_START_MARKER.encode() in line and b"complete" not in line for line in head)
        pending = b"".join(head)
        if is_roles:
            with tempfile.TemporaryFile() as err:
                proc = subprocess.Popen(argv + ["-v", "ON_ERROR_STOP=0"], stdin=subprocess.PIPE,
                                        stdout=subprocess.DEVNULL, stderr=err, env=env)
                try:
                    proc.stdin.write(preamble + pending)
                    for line in fh:
                        proc.stdin.write(line)
                        if line.startswith(ROLES_END_MARKER.encode()):
                            break
                    else:
                        raise VerifyFailed("the file ends inside the roles section: the database dump is missing")
                    proc.stdin.close()
                    _wait(proc, check)
                except BaseException:
                    _kill([proc])
                    raise
                errors = _error_lines(_stderr_text(err))
            real = [e for e in errors if not _benign(e)]
            benign = len(errors) - len(real)
            if real:
                raise VerifyFailed(f"roles section: {real[0]}" + (f" (and {len(real) - 1} more)" if len(real) > 1 else ""))
            log(f"Roles restored ({benign} expected 'already exists' errors ignored)")
            pending = b""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv + ["-v", "ON_ERROR_STOP=1"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=err, env=env)
        try:
            proc.stdin.write(preamble + pending)
            total = len(pending)
            last_log = time.monotonic()
            while True:
                if check:
                    check()
                chunk = fh.read(1 << 20)
                if not chunk:
                    break
                try:
                    proc.stdin.write(chunk)
                except BrokenPipeError:
                    break  # psql stopped on an error; reported below
                total += len(chunk)
                if time.monotonic() - last_log > 5:
                    last_log = time.monotonic()
                    log(f"  {total / 1e6:,.0f} MB of SQL restored")
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
            rc = _wait(proc, check)
        except BaseException:
            _kill([proc])
            raise
        if rc != 0:
            text = _stderr_text(err)
            errors = _error_lines(text) or [text.splitlines()[-1][-300:] if text else f"psql exit {rc}"]
            raise VerifyFailed(f"restoring the dump stopped: {errors[0]}")
    return {"benign_role_errors": benign}


def check_restored(conninfo: str, env: dict, *, largest: int = 5) -> dict:
    import psycopg

    with psycopg.connect(conninfo, password=env.get("PGPASSWORD"), autocommit=True) as conn:
        tables = conn.execute(
            """SELECT n.nspname, c.relname, pg_total_relation_size(c.oid)
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                  AND n.nspname NOT LIKE 'pg_toast%%'
                ORDER BY 3 DESC, 1, 2"""
        ).fetchall()
        counts = {}
        for schema, table, _size in tables[:largest]:
            ident = psycopg.sql.Identifier(schema, table)
            counts[f"{schema}.{table}"] = conn.execute(
                psycopg.sql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone()[0]
    return {"tables": len(tables), "row_counts": counts}


def verify_local(path: str, *, log: Log | None = None, check: Check | None = None, workdir: str | None = None) -> dict:
    """Restore the backup at ``path`` into a throwaway PostgreSQL server of
    the backup's major version that this process starts in a temporary
    folder (under ``workdir``, default the system temporary folder), check
    it (tables present, row counts of the largest tables), stop the server
    and remove the folder.  The live server is never touched.  Returns the
    findings; raises VerifyFailed, or Unavailable when the backup's major
    version is not installed."""
    import psycopg

    from ops.pgsandbox import ThrowawayPostgres

    log = log or (lambda line: None)
    if not Path(path).is_file():
        raise NotFound(f"backup file {Path(path).name} is gone")
    match = parse_name(Path(path).name)
    dbname = match["database"] if match else "verify"
    try:
        with gzip.open(path, "rb") as raw:
            reader = SafeSQLReader(raw)
            major = reader.peek_major()
            with ThrowawayPostgres(major, check=check, parent=workdir) as server:
                log(f"Started a throwaway PostgreSQL {major} server in {server.folder}")
                env = server.env()
                with psycopg.connect(server.conninfo("postgres"), autocommit=True) as admin:
                    if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
                        admin.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(dbname)))
                if check:
                    check()
                log(f"Restoring into database {dbname} of the throwaway server")
                target = server.conninfo(dbname)
                found = restore_stream(reader, target, env, log=log, check=check, psql=server.psql)
                log("Checking the restored database")
                found.update(check_restored(target, env))
                folder = server.folder
            log(f"Stopped the throwaway server and removed {folder}")
    except (EOFError, gzip.BadGzipFile, zlib_error()) as exc:
        raise VerifyFailed(f"the file is truncated or corrupt ({exc})") from None
    if found["tables"] == 0:
        raise VerifyFailed("the restored database has no tables")
    for table, count in found["row_counts"].items():
        log(f"  {table}: {count:,} rows")
    found["postgres_major"] = major
    return found


def zlib_error():
    import zlib

    return zlib.error


# --- warnings ------------------------------------------------------------------------
def backup_warnings(entries: list[BackupEntry], *, now: datetime, stale_hours: int, shrink_percent: int) -> list[dict]:
    """What a person would want to know: no recent completed backup of a
    database; a backup much smaller than the one before it."""
    found = []
    by_db: dict[str, list[BackupEntry]] = {}
    for entry in entries:
        if not entry.in_progress:
            by_db.setdefault(entry.database, []).append(entry)
    for database, items in sorted(by_db.items()):
        items.sort(key=lambda e: e.created_at)
        latest = items[-1]
        if now - latest.created_at > timedelta(hours=stale_hours):
            found.append({"kind": "stale", "database": database, "name": latest.name,
                          "message": f"No completed backup of {database} in the last {stale_hours} hours "
                                     f"(latest: {latest.name})."})
        for before, after in zip(items, items[1:]):
            if before.size_bytes and after.size_bytes < before.size_bytes * (100 - shrink_percent) / 100:
                drop = 100 - after.size_bytes * 100 // before.size_bytes
                found.append({"kind": "shrunk", "database": database, "name": after.name,
                              "message": f"{after.name} is {drop}% smaller than the backup before it "
                                         f"({before.name}); a shrinking dump can mean lost data."})
    return found
