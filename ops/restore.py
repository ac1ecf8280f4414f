"""The PostgreSQL core of an audited restore (plain Python, no Django).

backup-container's own restore drops the live database, recreates it and
pipes the backup into it: from the drop to the end of the load the service
has no usable database, and a bad file leaves it half loaded.  This module
restores beside the live database instead and swaps names at the end:

1. ``preflight``        the file is the approved one (size, streamed sha256),
                        the target exists, the disk estimate fits.
2. (safety backup)      the runbook calls ``ops.backups.local_backup``.
3. ``LoadStaging``      ``<db>_restore_<stamp>`` is created and the backup is
                        streamed into it in one transaction; missing roles are
                        created, existing roles are never altered.
4. ``check_staging``    every table's row count equals its COPY block in the
                        backup; staging gets the target's owner, privileges,
                        settings and connection limit.
5. ``Cutover``          block connections, end sessions, rename the target to
                        ``<db>_pre_restore_<stamp>`` and staging to ``<db>``,
                        allow connections.  Only this step interrupts clients.
6. ``report``           downtime, step durations, row counts.

``BlockConnections`` (offline mode) closes the target to the application
from step 2 on.  ``discard_previous`` drops a kept pre-restore database.

Every step checks the world before it acts, so running or undoing it twice
is safe, and returns a JSON-serialisable dataclass that the job machine
persists so that another worker can continue or undo.  Databases are found
by OID as well as by name, so a step that died between two renames is
recognised when it runs again.  Audit events are written by the job machine
around each step; nothing here imports Django.  See docs/restores.md.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ops.backups import (ROLES_END_MARKER, ROLES_START_MARKER, TABLE_NAME, LineSource, SafeSQLReader, UnsafeSQL,
                         sha256_file, split_conninfo)
from ops.errors import Invalid, NotFound, OpsError

Check = Callable[[], None]
Log = Callable[[str], None]
LineFilter = Callable[[Iterable[bytes]], Iterable[bytes]]

# Database names the runbook accepts as a target: the shape backup-container
# file names allow, short enough that ``<db>_pre_restore_<14 digits>`` still
# fits PostgreSQL's 63-byte identifiers.
TARGET_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,35}")
STAMP_RE = re.compile(r"\d{14}")
MAINTENANCE_DB = "postgres"
# Extensions that exist only in the Patroni image HCAP runs (DOMAIN.md): a
# backup taken there creates them, a server without them cannot.  Their
# CREATE EXTENSION / COMMENT ON EXTENSION lines are left out (and reported)
# when this server does not offer them; any other error stops the load.
BENIGN_MISSING_EXTENSIONS = ("pg_stat_kcache", "set_user")
DUMP_START_LINE = b"-- PostgreSQL database dump\n"
DUMP_COMPLETE_LINE = b"-- PostgreSQL database dump complete\n"
MARKER_KEY = "hcapadmin_restore"
ROLES_SECTION_LIMIT = 16 << 20
# GUCs whose values pg_dump splits into a list of literals (GUC_LIST_QUOTE).
LIST_QUOTE_GUCS = {"local_preload_libraries", "search_path", "session_preload_libraries",
                   "shared_preload_libraries", "temp_tablespaces", "unix_socket_directories"}
# Minimum psql versions with \restrict (the fix for CVE-2025-8714), by major.
PSQL_RESTRICT_MIN = {13: (13, 22), 14: (14, 19), 15: (15, 14), 16: (16, 10), 17: (17, 6)}


class RestoreFailed(OpsError):
    """A restore step could not be completed; the message says what is left."""


class RestoreRefused(RestoreFailed):
    """The backup contains something the restore will not run."""


class CheckFailed(RestoreFailed):
    """The staging database does not match the backup."""


class CutoverFailed(RestoreFailed):
    """The names could not be swapped; the message says which database is where."""


# --- small helpers -----------------------------------------------------------------
def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


def utc_stamp(when: datetime | None = None) -> str:
    """``YYYYMMDDHHMMSS`` in UTC, the suffix of staging and pre-restore names."""
    return (when or _now()).astimezone(timezone.utc).strftime("%Y%m%d%H%M%S")


def validate_target(name) -> str:
    if not isinstance(name, str) or not TARGET_RE.fullmatch(name):
        raise Invalid(f"{name!r} is not an acceptable database name (letters, digits, underscore; at most 36)")
    if name in (MAINTENANCE_DB, "template0", "template1"):
        raise Invalid(f"{name} cannot be restored over")
    return name


def validate_stamp(stamp) -> str:
    if not isinstance(stamp, str) or not STAMP_RE.fullmatch(stamp):
        raise Invalid(f"{stamp!r} is not a UTC timestamp YYYYMMDDHHMMSS")
    try:
        datetime(int(stamp[:4]), int(stamp[4:6]), int(stamp[6:8]), int(stamp[8:10]), int(stamp[10:12]),
                 int(stamp[12:]))
    except ValueError:
        raise Invalid(f"{stamp!r} is not a UTC timestamp YYYYMMDDHHMMSS") from None
    return stamp


def staging_name(target: str, stamp: str) -> str:
    return f"{validate_target(target)}_restore_{validate_stamp(stamp)}"


def pre_restore_name(target: str, stamp: str) -> str:
    return f"{validate_target(target)}_pre_restore_{validate_stamp(stamp)}"


def stamp_of(staging: str, target: str) -> str:
    prefix = f"{validate_target(target)}_restore_"
    if not isinstance(staging, str) or not staging.startswith(prefix):
        raise Invalid(f"{staging!r} is not a staging database of {target}")
    return validate_stamp(staging[len(prefix):])


def with_dbname(conninfo: str, dbname: str) -> str:
    params = conninfo_to_dict(conninfo)
    params["dbname"] = dbname
    return make_conninfo(**params)


def _admin(conninfo: str) -> psycopg.Connection:
    """An autocommit connection to the maintenance database: never to the
    target, which must be renamable."""
    try:
        return psycopg.connect(with_dbname(conninfo, MAINTENANCE_DB), autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise RestoreFailed(f"PostgreSQL unreachable: {str(exc).strip().splitlines()[0]}") from None


def _db(conn, name: str) -> dict | None:
    row = conn.execute(
        "SELECT oid, datallowconn, datconnlimit, pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
        (name,)).fetchone()
    return None if row is None else {"oid": int(row[0]), "allow": row[1], "limit": row[2], "owner": row[3]}


def _name_of(conn, oid: int) -> str | None:
    row = conn.execute("SELECT datname FROM pg_database WHERE oid = %s", (oid,)).fetchone()
    return row[0] if row else None


def _drop(conn, name: str) -> bool:
    existed = _db(conn, name) is not None
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    return existed


def _pg_error(exc: Exception) -> str:
    diag = getattr(exc, "diag", None)
    text = (getattr(diag, "message_primary", None) or str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _as(cls, value):
    """A step result from its dataclass or from the dict the job machine stored."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise Invalid(f"expected a {cls.__name__} record")
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in value.items() if k in names})


@dataclass
class Timed:
    started_at: str | None = None
    finished_at: str | None = None
    seconds: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


class _Clock:
    def __init__(self):
        self.start = _now()
        self.t0 = time.monotonic()

    def stamp(self, result: Timed) -> None:
        result.started_at = _iso(self.start)
        result.finished_at = _iso(_now())
        result.seconds = round(time.monotonic() - self.t0, 3)


# --- 1. preflight --------------------------------------------------------------------
@dataclass
class PreflightResult(Timed):
    backup_path: str = ""
    backup_size: int = 0
    sha256: str = ""
    target: str = ""
    target_oid: int = 0
    target_size: int = 0
    connection_limit: int = -1
    backups_folder: str = ""
    free_bytes: int = 0
    needed_bytes: int = 0
    psql_version: str = ""


def psql_version() -> tuple[int, int]:
    try:
        out = subprocess.run(["psql", "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        raise RestoreFailed("psql is not installed on the worker") from None
    match = re.search(r"(\d+)\.(\d+)", out)
    if not match:
        raise RestoreFailed(f"cannot read the psql version from {out.strip()!r}")
    return int(match[1]), int(match[2])


def _require_restricted_psql() -> str:
    major, minor = psql_version()
    if major < 13 or (major in PSQL_RESTRICT_MIN and (major, minor) < PSQL_RESTRICT_MIN[major]):
        raise RestoreFailed(f"psql {major}.{minor} on the worker has no \\restrict; a restore needs "
                            "13.22, 14.19, 15.14, 16.10, 17.6 or newer")
    return f"{major}.{minor}"


def preflight(conninfo: str, path: str, *, expected_size: int, expected_sha256: str, target: str,
              backups_folder: str | None = None, check: Check | None = None, log: Log | None = None) -> PreflightResult:
    """Read-only checks before anything changes.  Raises Invalid / NotFound /
    RestoreFailed with a message for people.

    Disk: PostgreSQL's data directory is not visible from the worker (on
    OpenShift it is another pod's volume), so the estimate is what the
    restore will add: a staging copy about the size of the target
    (``pg_database_size``) plus a safety backup about the size of this backup
    file, compared with the free space of the filesystem holding the backups
    folder.  That is exact only when both live on one filesystem (the local
    driver's usual setup); otherwise it is a rough guard, and PostgreSQL's
    own disk must be watched separately."""
    log = log or (lambda line: None)
    clock = _Clock()
    validate_target(target)
    if not isinstance(expected_sha256, str) or not re.fullmatch(r"[0-9a-f]{64}", expected_sha256):
        raise Invalid("the approved checksum is not a sha256 hex digest")
    if not isinstance(expected_size, int) or isinstance(expected_size, bool) or expected_size <= 0:
        raise Invalid("the approved size is not a positive number of bytes")
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise Invalid("no backup file given")
    file = Path(path)
    if not file.is_file():
        raise NotFound(f"backup file {file.name} is gone")
    size = file.stat().st_size
    if size != expected_size:
        raise RestoreFailed(f"{file.name} is {size:,} bytes, the approved file was {expected_size:,}: "
                            "the file changed since the request was approved")
    log(f"Checksumming {file.name}")
    digest = sha256_file(str(file), check=check)
    if digest != expected_sha256:
        raise RestoreFailed(f"{file.name} does not have the approved sha256: the file changed since approval")
    version = _require_restricted_psql()
    with _admin(conninfo) as conn:
        info = _db(conn, target)
        if info is None:
            raise NotFound(f"database {target} does not exist on the server")
        if not info["allow"]:
            raise RestoreFailed(f"database {target} does not accept connections (ALLOW_CONNECTIONS false): "
                                "a previous cutover may not have finished")
        target_size = conn.execute("SELECT pg_database_size(%s)", (target,)).fetchone()[0]
    folder = Path(backups_folder) if backups_folder else file.parent
    free = shutil.disk_usage(folder).free
    needed = int(target_size) + size
    if needed > free:
        raise RestoreFailed(f"not enough free space: the restore needs about {needed / 1e6:,.0f} MB "
                            f"(staging {target_size / 1e6:,.0f} MB + safety backup {size / 1e6:,.0f} MB), "
                            f"{free / 1e6:,.0f} MB are free")
    result = PreflightResult(backup_path=str(file), backup_size=size, sha256=digest, target=target,
                             target_oid=info["oid"], target_size=int(target_size), connection_limit=info["limit"],
                             backups_folder=str(folder), free_bytes=free, needed_bytes=needed, psql_version=version)
    clock.stamp(result)
    log(f"Preflight passed: {target} is {target_size / 1e6:,.1f} MB, {free / 1e6:,.0f} MB free")
    return result


# --- offline mode: keep the application out from step 2 on -----------------------------
@dataclass
class BlockResult(Timed):
    target: str = ""
    target_oid: int = 0
    previous_connection_limit: int = -1
    sessions_ended: int = 0
    undone: bool = False


class BlockConnections:
    """Offline mode: ``CONNECTION LIMIT 0`` on the target and its sessions
    ended, so the application stays out while the safety backup (a superuser
    connection, which a connection limit does not stop) and the load run.
    The original limit comes from the preflight record, so running this
    twice never mistakes its own 0 for the original.  Undo finds the
    database by OID (it may be the pre-restore database by then)."""

    def __init__(self, conninfo: str, target: str, *, original_connection_limit: int, target_oid: int,
                 log: Log | None = None):
        self.conninfo = conninfo
        self.target = validate_target(target)
        self.original = int(original_connection_limit)
        self.target_oid = int(target_oid)
        self.log = log or (lambda line: None)

    def run(self) -> BlockResult:
        clock = _Clock()
        with _admin(self.conninfo) as conn:
            info = _db(conn, self.target)
            if info is None or info["oid"] != self.target_oid:
                raise RestoreFailed(f"database {self.target} is not the one the preflight checked")
            conn.execute(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT 0").format(sql.Identifier(self.target)))
            ended, refused = _end_sessions(conn, [self.target], superusers=False)
        if refused:
            self.log(f"Sessions that could not be ended: {'; '.join(refused)}")
        self.log(f"{self.target} closed to the application ({ended} sessions ended)")
        result = BlockResult(target=self.target, target_oid=self.target_oid,
                             previous_connection_limit=self.original, sessions_ended=ended)
        clock.stamp(result)
        return result

    def undo(self, result) -> BlockResult:
        result = _as(BlockResult, result)
        with _admin(self.conninfo) as conn:
            name = _name_of(conn, result.target_oid)
            if name is not None:
                conn.execute(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(
                    sql.Identifier(name), sql.Literal(int(result.previous_connection_limit))))
                self.log(f"{name}: connection limit back to {result.previous_connection_limit}")
        result.undone = True
        return result


def _end_sessions(conn, names: list[str], *, superusers: bool = True) -> tuple[int, list[str]]:
    """End every other session on the databases ``names`` and wait until each
    has exited (``pg_terminate_backend`` with a timeout waits for it).
    Returns (ended, [descriptions of sessions that could not be ended])."""
    rows = conn.execute(
        """SELECT a.pid, a.usename, coalesce(r.rolsuper, false) FROM pg_stat_activity a
             LEFT JOIN pg_roles r ON r.oid = a.usesysid
            WHERE a.datname = ANY(%s) AND a.pid <> pg_backend_pid()""", (names,)).fetchall()
    ended, refused = 0, []
    waits = conn.info.server_version >= 140000  # pg_terminate_backend(pid, timeout) waits for the exit
    for pid, user, is_super in rows:
        if is_super and not superusers:
            continue
        try:
            if waits:
                done = conn.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,)).fetchone()[0]
            else:
                done = conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0] and _gone(conn, pid)
        except psycopg.Error as exc:
            refused.append(f"pid {pid} ({user}): {_pg_error(exc)}")
            continue
        if done:
            ended += 1
        else:
            refused.append(f"pid {pid} ({user}): still running after 10 s")
    return ended, refused


def _gone(conn, pid: int, limit: float = 10.0) -> bool:
    """Wait until backend ``pid`` has exited (servers before 14, whose
    pg_terminate_backend does not wait); ``limit`` only guards against a
    backend that never exits."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() is None:
            return True
        time.sleep(0.05)
    return False


# --- 3. load into staging ----------------------------------------------------------
@dataclass
class LoadResult(Timed):
    target: str = ""
    staging: str = ""
    staging_oid: int = 0
    stamp: str = ""
    backup: str = ""
    sha256: str = ""
    roles_created: list = field(default_factory=list)
    role_oids: dict = field(default_factory=dict)  # role created by this restore -> its OID
    roles_existing: list = field(default_factory=list)
    roles_statements_skipped: list = field(default_factory=list)
    benign_skipped: list = field(default_factory=list)
    copy_rows: dict = field(default_factory=dict)
    copy_freeze: list = field(default_factory=list)  # tables loaded with COPY ... WITH (FREEZE)
    sql_bytes: int = 0
    already_loaded: bool = False
    undone: bool = False
    roles_dropped: list = field(default_factory=list)
    roles_kept: list = field(default_factory=list)


class _LoadReader(SafeSQLReader):
    """ops.backups' check of what psql may run, as the load needs it: the
    dump section only (the roles section is parsed, never run), ``\\connect``
    refused as well (a load into staging never switches databases), psql kept
    in ``\\restrict`` mode with the reader's key (which also refuses a
    meta-command in the middle of a line), and, found the same chunk-wise way
    as the meta-commands: CREATE/COMMENT ON EXTENSION lines of a known-benign
    extension this server lacks left out (``benign``), pg_dump's "dump
    complete" line noted (``complete``), and a ``COPY ... FROM stdin;`` line
    whose table cannot be read refused (its data would reach psql as
    commands).

    COPY FREEZE: the whole load is one transaction, so a table whose
    ``CREATE TABLE`` line came earlier in this load was created in it, and
    its ``COPY`` gets ``WITH (FREEZE)`` (``frozen`` lists them).  Its rows
    are written frozen and all-visible, so the check's ``count(*)`` right
    after the load reads them without first rewriting every page to set
    hint bits (that first scan cost as much as a tenth of the load at
    1 GB).  Left as they are: COPY into a table this load did not create
    (a data-only dump: FREEZE would be refused) and into a partitioned
    table (``PARTITION BY`` after its CREATE TABLE, as pg_dump writes it;
    the parent of ``--load-via-partition-root``), where PostgreSQL refuses
    FREEZE too."""

    interesting = re.compile(
        rb"^(?:[ \t\r\f\v]*\\|COPY |-- PostgreSQL database |CREATE EXTENSION |COMMENT ON EXTENSION "
        rb"|CREATE (?:UNLOGGED )?TABLE |PARTITION BY )", re.M)

    def __init__(self, raw, *, benign_extensions: Iterable[str], available: set, chunk_size: int):
        super().__init__(raw, restricted=True, chunk_size=chunk_size, allow_connect=False)
        self.benign_extensions = tuple(benign_extensions)
        self.available = available
        self.benign: list[str] = []
        self.complete = False
        self.created: set[str] = set()  # tables this load creates and may COPY FREEZE into
        self._last_created: str | None = None
        self.frozen: list[str] = []

    def _line(self, line: bytes, number: int) -> bytes:
        if line.startswith(b"CREATE ") and (match := _CREATE_TABLE_LINE.match(line)):
            self._last_created = match["table"].decode("utf-8", "replace")
            self.created.add(self._last_created)
            return line
        if line.startswith(b"PARTITION BY "):
            self.created.discard(self._last_created)
            return line
        if line.startswith(b"-- PostgreSQL database dump"):
            if line.rstrip(b"\r\n") == DUMP_COMPLETE_LINE.rstrip(b"\n"):
                self.complete = True
            return line
        if line.startswith(b"-- "):
            return super()._line(line, number)
        if line.startswith((b"CREATE EXTENSION ", b"COMMENT ON EXTENSION ")):
            match = _EXTENSION_LINE.match(line)
            if match and line.rstrip(b"\r\n").endswith(b";"):
                name = match[2].decode()
                if name in self.benign_extensions and name not in self.available:
                    self.benign.append(f"{line.decode('utf-8', 'replace').strip()[:120]} "
                                       f"(extension {name} is not available on this server)")
                    return b""
            return line
        out = super()._line(line, number)
        if line.startswith(b"COPY ") and not self.in_copy and line.rstrip().endswith(b"FROM stdin;"):
            raise RestoreRefused("cannot read the table name of a COPY line: " + line[:80].decode("utf-8", "replace"))
        if line.startswith(b"COPY ") and self.in_copy and self._table in self.created:
            self.frozen.append(self._table)
            body = out.rstrip(b"\r\n")
            return body[:-1] + b" WITH (FREEZE);" + out[len(body):]
        return out


class _Source:
    """``read(n)`` for the load's reader: the lines already taken from the
    decompressor's output, then whatever it has ready (``read1``: no waiting
    for a full chunk while psql could be fed)."""

    def __init__(self, head: bytes, stream):
        self._head = head
        self._stream = stream

    def read(self, size: int) -> bytes:
        if self._head:
            data, self._head = self._head, b""
            return data
        return self._stream.read1(size)


def _grow_pipe(stream, size: int = 1 << 20) -> None:
    """Give a pipe a larger kernel buffer (best effort: up to the system's
    pipe-max-size), so the decompressor and psql keep working while the
    load's thread is busy with the other end."""
    try:
        fcntl.fcntl(stream.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except (OSError, ValueError):
        pass


_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_ROLE_STATEMENT = re.compile(
    rf"^(?P<kind>CREATE ROLE|ALTER ROLE|COMMENT ON ROLE|SECURITY LABEL FOR {_IDENT} ON ROLE) (?P<role>{_IDENT})"
    rf"(?P<rest>[ ;].*)$", re.S)
_GRANT_ROLE = re.compile(rf"^GRANT (?P<granted>{_IDENT}) TO (?P<member>{_IDENT})(?P<rest>[ ;].*)$", re.S)
# pg_dump's CREATE TABLE line (a partitioned table's "PARTITION BY ..." follows on its own line)
_CREATE_TABLE_LINE = re.compile(rb"CREATE (?:UNLOGGED )?TABLE (?P<table>" + TABLE_NAME + rb") ")
_EXTENSION_LINE = re.compile(rb'^(?:CREATE EXTENSION (?:IF NOT EXISTS )?|COMMENT ON EXTENSION )("?)([A-Za-z0-9_]+)\1[ ;]')


def _unquote(ident: str) -> str:
    return ident[1:-1].replace('""', '"') if ident.startswith('"') else ident.lower()


def _split_statements(text: str) -> list[str]:
    """Statements of the roles section, split at semicolons outside quotes."""
    out, buf, quote = [], [], None
    for ch in text:
        buf.append(ch)
        if quote:
            if ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
        elif ch == ";":
            out.append("".join(buf).strip())
            buf = []
    if quote or "".join(buf).strip():
        raise RestoreRefused("the roles section ends inside a statement")
    return out


def parse_roles_section(lines: list[bytes]) -> list[tuple[str, str, str]]:
    """[(kind, role, statement)] of pg_dumpall --roles-only output; kind is
    'create', 'alter' (ALTER/COMMENT/SECURITY LABEL on the role) or 'grant'
    (role is the member).  Anything else is refused."""
    body = []
    for number, raw in enumerate(lines, 1):
        line = raw.decode("utf-8", "replace")
        stripped = line.strip()
        if stripped.startswith("\\"):
            command = stripped.split(None, 1)[0]
            if command in ("\\restrict", "\\unrestrict"):
                continue
            raise RestoreRefused(f"the roles section contains a psql meta-command ({command[:20]}) on line {number}")
        if stripped.startswith("--"):
            continue
        body.append(line)
    parsed = []
    for statement in _split_statements("".join(body)):
        if re.match(r"^SET [a-z_]+ = [A-Za-z0-9_']+;$", statement):
            continue  # session settings of the dump's own psql session
        match = _ROLE_STATEMENT.match(statement)
        if match:
            kind = "create" if match["kind"] == "CREATE ROLE" else "alter"
            if kind == "create" and match["rest"] != ";":
                raise RestoreRefused(f"unexpected statement in the roles section: {statement[:80]}")
            parsed.append((kind, _unquote(match["role"]), statement))
            continue
        match = _GRANT_ROLE.match(statement)
        if match:
            parsed.append(("grant", _unquote(match["member"]), statement))
            continue
        raise RestoreRefused(f"unexpected statement in the roles section: {statement[:80]}")
    return parsed


def apply_roles(conninfo: str, statements: list[tuple[str, str, str]], *, own: dict | None = None,
                record: Callable[[dict], None] | None = None) -> dict:
    """Create the roles the server lacks, with the attributes, settings and
    memberships the backup gives them; leave every existing role exactly as
    it is (no ALTER ROLE, so never its password or LOGIN, and no new
    memberships for it).  One transaction: all or nothing.

    ``own`` ({role: OID}) names roles an earlier, interrupted run of the same
    restore created: a role of that name and OID is this restore's own and
    is reused as it is (that run's transaction gave it everything).
    ``record`` receives {role: OID} of every role of this restore once they
    are created and before the transaction commits, so that a caller can
    persist them first: if the process dies after the commit, undo still
    knows exactly which roles to drop, and a role made later by someone else
    under the same name has another OID."""
    created, existing, skipped, reused = [], [], [], []
    own = {str(k): int(v) for k, v in (own or {}).items()}
    oids: dict[str, int] = {}
    with psycopg.connect(with_dbname(conninfo, MAINTENANCE_DB), connect_timeout=10) as conn:
        with conn.transaction():
            present = {r[0]: int(r[1]) for r in conn.execute("SELECT rolname, oid FROM pg_roles").fetchall()}
            for kind, role, statement in statements:
                if kind == "create":
                    if role in oids:
                        continue
                    if role in present and own.get(role) == present[role]:
                        reused.append(role)
                        created.append(role)
                        oids[role] = present[role]
                        continue
                    if role in present:
                        if role not in existing:
                            existing.append(role)
                        continue
                    conn.execute(statement)
                    oids[role] = int(conn.execute("SELECT oid FROM pg_roles WHERE rolname = %s",
                                                  (role,)).fetchone()[0])
                    present[role] = oids[role]
                    created.append(role)
                elif role in reused:
                    continue
                elif role in created:
                    conn.execute(statement)
                else:
                    skipped.append(statement[:200])
            if record is not None and oids:
                record(dict(oids))
    return {"created": created, "existing": existing, "skipped": skipped, "reused": reused, "oids": oids}


def _drop_roles(conn, roles: list[str], oids: dict | None = None) -> tuple[list[str], list[str]]:
    """Drop roles a load created; one that something now depends on (DROP
    ROLE checks every database) is kept.  With ``oids`` ({role: OID}) a role
    is dropped only while its name still has the OID the load gave it.
    Returns (dropped, kept with why)."""
    dropped, kept = [], []
    oids = oids or {}
    for role in reversed(roles):
        row = conn.execute("SELECT oid FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        if row is None:
            continue
        if role in oids and int(oids[role]) != int(row[0]):
            kept.append(f"{role}: not the role this restore created (another role took its name)")
            continue
        try:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
            dropped.append(role)
        except psycopg.Error as exc:
            kept.append(f"{role}: {_pg_error(exc)}")
    return dropped, kept


def _decompressor() -> list[str]:
    return ["pigz", "-dc"] if shutil.which("pigz") else ["gunzip", "-c"]


def _killpg(pgid: int | None, procs) -> None:
    """Kill the load's process group.  Only while one of its processes is
    still alive (not yet reaped): then the group id cannot have been reused."""
    if pgid and any(proc is not None and proc.poll() is None for proc in procs):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for proc in procs:
        if proc is not None:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass


def _error_lines(text: str) -> list[str]:
    found = []
    for raw in text.splitlines():
        line = re.sub(r"^psql:[^:]*:\d+:\s*", "", raw.strip())
        if line.startswith(("ERROR:", "FATAL:", "error:")):
            found.append(line)
    return found


class _Stream:
    """State shared by the threads of one load: the feeder (file -> sha256
    -> decompressor) and the pump (decompressed chunks -> checks and counts
    -> psql)."""

    def __init__(self):
        self.sha = hashlib.sha256()
        self.error: BaseException | None = None
        self.bytes = 0


class LoadStaging:
    """Create ``<target>_restore_<stamp>`` and load the backup into it.

    One pass over the file: a feeder thread reads the compressed file,
    hashes it (the load is refused unless it is byte for byte the approved
    file) and feeds the decompressor (pigz -dc, else gunzip -c).  The roles
    section is read first and applied by ``apply_roles`` on the cluster,
    never inside the load.  The database dump then goes through ``_LoadReader``
    (ops.backups' meta-command check, which also counts each COPY block's
    rows) into ``psql -X -v ON_ERROR_STOP=1`` in \\restrict mode, after
    ``BEGIN``, in chunks of whole lines as large as the decompressor has
    ready (up to ``chunk_size``): every byte is looked at by C code
    (``bytes.find``, ``bytes.count``, one regular expression), and only the
    few lines worth a closer look (meta-commands, COPY, extension lines,
    pg_dump's comments) by Python, so psql is never kept waiting.
    ``COMMIT`` is sent
    only once the file was read to its end with the approved checksum, the
    decompressor succeeded and pg_dump's "dump complete" line was seen.  So a
    truncated, corrupt or cancelled load leaves nothing behind (psql ends an
    unfinished COPY at end of input as if it were complete: without the
    explicit transaction a truncated file would commit half the data).  The
    staging database is dropped on any failure.

    A marker (COMMENT ON DATABASE, written in the same transaction) records
    what was loaded, so running again with the same stamp finds a complete
    load and returns it instead of loading twice.  Pass ``stamp`` from the
    job's parameters so that a rerun after a crash finds its own staging.

    Roles: ``record_roles`` receives {role: OID} of the roles this load
    creates before they are committed (persist it: a worker killed later
    leaves them behind otherwise), and ``own_roles`` passes such a record
    back on a rerun, so the roles an interrupted run made are reused and
    stay listed as this restore's, never mistaken for pre-existing ones.

    ``line_filter`` (optional) sees the dump's lines before the check and
    yields those to run (slower: a Python step per line).
    ``after_copy_data`` is called once, from the pump thread, after the
    first chunk holding COPY data was written to psql.

    ``check`` is called every few hundred milliseconds and before COMMIT;
    when it raises, the child processes (their own process group) are
    killed, staging is dropped and the exception propagates."""

    def __init__(self, conninfo: str, path: str, target: str, *, sha256: str, stamp: str | None = None,
                 check: Check | None = None, log: Log | None = None, line_filter: LineFilter | None = None,
                 benign_extensions: Iterable[str] = BENIGN_MISSING_EXTENSIONS, own_roles: dict | None = None,
                 record_roles: Callable[[dict], None] | None = None,
                 after_copy_data: Callable[[], None] | None = None, chunk_size: int = 1 << 20):
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise Invalid("no backup file given")
        self.conninfo = conninfo
        self.path = str(path)
        self.target = validate_target(target)
        if not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise Invalid("the approved checksum is not a sha256 hex digest")
        self.sha256 = sha256
        self.stamp = validate_stamp(stamp) if stamp is not None else utc_stamp()
        self.staging = staging_name(self.target, self.stamp)
        self.check = check or (lambda: None)
        self.log = log or (lambda line: None)
        self.line_filter = line_filter
        self.benign_extensions = tuple(benign_extensions)
        self.own_roles = dict(own_roles or {})
        self.record_roles = record_roles
        self.after_copy_data = after_copy_data
        self.chunk_size = chunk_size

    # -- run ----------------------------------------------------------------------
    def run(self) -> LoadResult:
        clock = _Clock()
        with _admin(self.conninfo) as conn:
            if _db(conn, self.target) is None:
                raise NotFound(f"database {self.target} does not exist on the server")
            info = _db(conn, self.staging)
            if info is not None:
                done = self._marker(conn)
                if done is not None and done.sha256 == self.sha256:
                    self.log(f"{self.staging} already holds this backup")
                    done.already_loaded = True
                    return done
                self.log(f"Dropping the unfinished {self.staging}")
                _drop(conn, self.staging)
            self.check()
            self._create_staging(conn)
            available = {r[0] for r in conn.execute("SELECT name FROM pg_available_extensions").fetchall()}
            staging_oid = _db(conn, self.staging)["oid"]
        self._roles_created: list[str] = []
        self._role_oids: dict[str, int] = {}
        try:
            result = self._load(staging_oid, available)
        except BaseException:
            with _admin(self.conninfo) as conn:
                _drop(conn, self.staging)
                _drop_roles(conn, self._roles_created, self._role_oids)
            self.log(f"Dropped {self.staging}" + (f" and the roles it created ({', '.join(self._roles_created)})"
                                                   if self._roles_created else ""))
            raise
        clock.stamp(result)
        return result

    def _create_staging(self, conn) -> None:
        version = conn.info.server_version
        columns = "pg_encoding_to_char(encoding), datcollate, datctype"
        if version >= 170000:
            columns += ", datlocprovider, datlocale"
        elif version >= 150000:
            columns += ", datlocprovider, daticulocale"
        row = conn.execute(f"SELECT {columns} FROM pg_database WHERE datname = %s", (self.target,)).fetchone()
        parts = [sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
            sql.Identifier(self.staging), sql.Literal(row[0]), sql.Literal(row[1]), sql.Literal(row[2]))]
        if len(row) > 3:
            provider = {"c": "libc", "i": "icu", "b": "builtin"}.get(row[3], "libc")
            parts.append(sql.SQL("LOCALE_PROVIDER {}").format(sql.SQL(provider)))
            if provider == "icu" and row[4]:
                parts.append(sql.SQL("ICU_LOCALE {}").format(sql.Literal(row[4])))
            elif provider == "builtin" and row[4]:
                parts.append(sql.SQL("BUILTIN_LOCALE {}").format(sql.Literal(row[4])))
        conn.execute(sql.SQL(" ").join(parts))
        self.log(f"Created {self.staging} (encoding {row[0]}, collation {row[1]})")

    def _marker(self, conn) -> LoadResult | None:
        row = conn.execute("SELECT shobj_description(oid, 'pg_database'), oid FROM pg_database WHERE datname = %s",
                           (self.staging,)).fetchone()
        try:
            data = json.loads(row[0] or "")
        except ValueError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get(MARKER_KEY), dict):
            return None
        result = _as(LoadResult, data[MARKER_KEY])
        result.staging_oid = int(row[1])
        return result

    def _load(self, staging_oid: int, available: set) -> LoadResult:
        safe_conninfo, env, _ = split_conninfo(with_dbname(self.conninfo, self.staging))
        state = _Stream()
        err = tempfile.TemporaryFile()
        procs: list = []
        pgid = None
        threads: list[threading.Thread] = []
        try:
            psql = subprocess.Popen(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", f"--dbname={safe_conninfo}"],
                                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err, env=env,
                                    process_group=0)
            procs.append(psql)
            pgid = psql.pid
            decomp = subprocess.Popen(self._decompressor_argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, process_group=pgid, bufsize=1 << 20)
            procs.append(decomp)
            _grow_pipe(psql.stdin)
            _grow_pipe(decomp.stdout)
            feeder = threading.Thread(target=self._feed, args=(decomp, state), daemon=True)
            feeder.start()
            threads.append(feeder)
            # the roles section, then the rest of the stream
            pending, roles = self._read_roles(decomp.stdout)
            self.check()
            role_result = self._apply_backup_roles(roles)
            if self.line_filter is not None:
                source = LineSource(self.line_filter(itertools.chain(pending, decomp.stdout)))
            else:
                source = _Source(b"".join(pending), decomp.stdout)
            reader = _LoadReader(source, benign_extensions=self.benign_extensions, available=available,
                                 chunk_size=self.chunk_size)
            psql.stdin.write(reader.preamble + b"BEGIN;\n")
            pump = threading.Thread(target=self._pump, args=(reader, psql.stdin, state), daemon=True)
            pump.start()
            threads.append(pump)
            last_log = time.monotonic()
            while pump.is_alive():
                pump.join(0.2)
                self.check()
                if time.monotonic() - last_log > 5:
                    last_log = time.monotonic()
                    self.log(f"  {state.bytes / 1e6:,.0f} MB of SQL loaded")
            if isinstance(state.error, OpsError):  # refused by the filter or the pump
                raise state.error
            if isinstance(state.error, (BrokenPipeError, ValueError)) or psql.poll() is not None:
                raise RestoreFailed(f"loading the dump stopped: {self._psql_error(psql, err)}")
            if state.error is not None:
                raise RestoreFailed(f"reading the backup failed: {state.error}")
            while feeder.is_alive():  # the pump read everything, so the decompressor has taken all input
                feeder.join(0.2)
                self.check()
            decomp_rc = decomp.wait()
            decomp_err = decomp.stderr.read().decode("utf-8", "replace").strip()
            if decomp_rc != 0:
                raise RestoreFailed(f"the file is truncated or corrupt "
                                    f"({decomp_err.splitlines()[-1] if decomp_err else f'exit {decomp_rc}'})")
            if state.sha.hexdigest() != self.sha256:
                raise RestoreFailed("the file read during the load does not have the approved sha256; nothing loaded")
            if reader.in_copy or not reader.complete:
                raise RestoreFailed("the file ends before pg_dump's 'dump complete' line: it is truncated")
            result = self._load_result(staging_oid, Path(self.path).name, reader, role_result, state.bytes)
            self.check()  # the last moment a cancel still leaves nothing behind
            psql.stdin.write(self._commit_sql(result))
            psql.stdin.close()
            while True:
                try:
                    rc = psql.wait(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    self.check()
            if rc != 0:
                raise RestoreFailed(f"loading the dump stopped: {self._psql_error(psql, err)}")
            self.log(f"Loaded {state.bytes / 1e6:,.1f} MB of SQL, {len(reader.copy_rows)} tables, "
                     f"{sum(reader.copy_rows.values()):,} rows ({len(reader.frozen)} tables written frozen: COPY FREEZE)")
            for item in reader.benign:
                self.log(f"  skipped (known benign): {item}")
            return result
        finally:
            _killpg(pgid, procs)
            for thread in threads:
                thread.join(timeout=30)
            for proc in procs:
                for stream in (proc.stdin, proc.stdout, proc.stderr):
                    if stream is not None:
                        try:
                            stream.close()
                        except OSError:
                            pass
            err.close()

    def _apply_backup_roles(self, roles: list[bytes] | None) -> dict:
        """Apply the backup's roles section (``apply_roles``), remembering the
        roles created before they are committed, so that a failure below
        drops them (and ``record_roles`` can persist them)."""
        if roles is None:
            return {"created": [], "existing": [], "skipped": [], "reused": [], "oids": {}}

        def record(oids):
            self._roles_created, self._role_oids = list(oids), dict(oids)
            if self.record_roles is not None:
                self.record_roles(dict(oids))

        result = apply_roles(self.conninfo, parse_roles_section(roles), own=self.own_roles, record=record)
        self._roles_created, self._role_oids = list(result["created"]), dict(result["oids"])
        reused = result["reused"]
        self.log(f"Roles: {len(result['created']) - len(reused)} created, "
                 + (f"{len(reused)} created by an earlier run of this restore reused, " if reused else "")
                 + f"{len(result['existing'])} already present and left untouched")
        return result

    def _load_result(self, staging_oid: int, backup: str, reader, role_result: dict, sql_bytes: int) -> LoadResult:
        return LoadResult(target=self.target, staging=self.staging, staging_oid=staging_oid, stamp=self.stamp,
                          backup=backup, sha256=self.sha256, roles_created=role_result["created"],
                          role_oids=role_result["oids"], roles_existing=role_result["existing"],
                          roles_statements_skipped=role_result["skipped"], benign_skipped=reader.benign,
                          copy_rows=reader.copy_rows, copy_freeze=reader.frozen, sql_bytes=sql_bytes)

    def _commit_sql(self, result: LoadResult) -> bytes:
        """The load's last statements: the marker (what was loaded, so a rerun
        finds it) and COMMIT, in the load's own transaction."""
        marker = json.dumps({MARKER_KEY: {k: v for k, v in asdict(result).items()
                                          if k in ("target", "staging", "stamp", "backup", "sha256", "roles_created",
                                                   "role_oids", "roles_existing", "benign_skipped", "copy_rows",
                                                   "sql_bytes")}}, separators=(",", ":"))
        return (b"SET standard_conforming_strings = on;\nCOMMENT ON DATABASE \"" + self.staging.encode()
                + b"\" IS '" + marker.replace("'", "''").encode() + b"';\nCOMMIT;\n")

    def _decompressor_argv(self) -> list[str]:
        return _decompressor()

    def _feed(self, decomp, state: _Stream) -> None:
        try:
            with open(self.path, "rb") as fh:
                while True:
                    block = fh.read(1 << 20)
                    if not block:
                        break
                    state.sha.update(block)
                    decomp.stdin.write(block)
        except (BrokenPipeError, ValueError, OSError):
            pass  # the decompressor died or was killed: reported from its exit code
        finally:
            try:
                decomp.stdin.close()
            except (BrokenPipeError, OSError):
                pass

    def _read_roles(self, stream) -> tuple[list[bytes], list[bytes] | None]:
        """(lines read past the roles section, roles section lines or None
        when the file starts directly with the database dump)."""
        head = []
        while len(head) < 5:
            line = stream.readline()
            if not line:
                break
            head.append(line)
            if line.rstrip(b"\n") == ROLES_START_MARKER.encode() or line == DUMP_START_LINE:
                break
        if not any(l.rstrip(b"\n") == ROLES_START_MARKER.encode() for l in head):
            return head, None
        roles = list(head)
        size = sum(len(l) for l in roles)
        for line in stream:
            if line.startswith(ROLES_END_MARKER.encode()):
                return [], roles
            if line == DUMP_START_LINE:
                return [line], roles
            roles.append(line)
            size += len(line)
            if size > ROLES_SECTION_LIMIT:
                raise RestoreRefused("the roles section is larger than 16 MB: not a pg_dumpall --roles-only output")
        raise RestoreFailed("the file ends inside the roles section: it is truncated or corrupt")

    def _pump(self, reader: _LoadReader, out, state: _Stream) -> None:
        """Checked chunks from ``reader`` to psql's stdin, as they come."""
        hook = self.after_copy_data
        try:
            while True:
                chunk = reader.read_chunk()
                if not chunk:
                    break
                out.write(chunk)
                state.bytes += len(chunk)
                if hook is not None and reader.copy_lines:
                    out.flush()
                    called, hook = hook, None
                    called()
            out.flush()
        except UnsafeSQL as exc:
            state.error = RestoreRefused(f"the backup is not restored: {exc}")
        except BaseException as exc:  # reported by the main thread
            state.error = exc

    def _psql_error(self, psql, err) -> str:
        try:
            psql.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        err.seek(0)
        text = err.read().decode("utf-8", "replace").strip()
        found = _error_lines(text)
        return found[0] if found else (text[-300:] or f"psql exit {psql.returncode}")

    # -- undo ---------------------------------------------------------------------
    def undo(self, result) -> LoadResult:
        """Drop staging (found by OID, so never a database that took its name)
        and the roles this load created, unless something now depends on them
        (DROP ROLE refuses then; such roles are kept and listed).  The roles
        are ``roles_created`` and those of ``role_oids`` (all a load that
        never finished may have recorded), each dropped only while its name
        still has the recorded OID."""
        result = _as(LoadResult, result)
        roles = list(result.roles_created) + [r for r in result.role_oids if r not in result.roles_created]
        with _admin(self.conninfo) as conn:
            name = _name_of(conn, result.staging_oid) if result.staging_oid else None
            if name is not None:
                if name != result.staging:
                    raise RestoreFailed(f"the staging database is now named {name}: undo the cutover first")
                _drop(conn, name)
                self.log(f"Dropped {name}")
            dropped, kept = _drop_roles(conn, roles, result.role_oids)
            if dropped:
                self.log(f"Dropped the roles this restore created: {', '.join(dropped)}")
        result.undone = True
        result.roles_dropped = sorted(set(result.roles_dropped) | set(dropped))
        result.roles_kept = kept
        return result


# --- 4. check staging and give it the target's database-level properties ---------------
@dataclass
class CheckResult(Timed):
    target: str = ""
    staging: str = ""
    tables: int = 0
    row_counts: dict = field(default_factory=dict)
    owner: str = ""
    privileges: list = field(default_factory=list)
    settings: list = field(default_factory=list)
    connection_limit: int = -1


def _acl(conn, name: str) -> set:
    rows = conn.execute(
        """SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END, a.privilege_type,
                  a.is_grantable
             FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
            WHERE d.datname = %s""", (name,)).fetchall()
    return {(r[0], r[1], r[2]) for r in rows}


def _settings(conn, name: str) -> set:
    rows = conn.execute(
        """SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END, s.setconfig
             FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = %s""",
        (name,)).fetchall()
    return {(r[0], tuple(sorted(r[1] or []))) for r in rows}


def _split_guc_list(value: str) -> list[str]:
    """Elements of a list GUC as stored (``"$user", public``), like
    PostgreSQL's SplitGUCList."""
    items, i = [], 0
    while i < len(value):
        while i < len(value) and value[i] in " \t":
            i += 1
        if i >= len(value):
            break
        if value[i] == '"':
            j, buf = i + 1, []
            while j < len(value):
                if value[j] == '"':
                    if j + 1 < len(value) and value[j + 1] == '"':
                        buf.append('"')
                        j += 2
                        continue
                    break
                buf.append(value[j])
                j += 1
            items.append("".join(buf))
            i = j + 1
        else:
            j = i
            while j < len(value) and value[j] != ",":
                j += 1
            items.append(value[i:j].strip())
            i = j
        while i < len(value) and value[i] in " \t":
            i += 1
        if i < len(value) and value[i] == ",":
            i += 1
    return items


def _set_statement(staging: str, role: str | None, entry: str) -> sql.Composed:
    name, _, value = entry.partition("=")
    if name.lower() in LIST_QUOTE_GUCS:
        values = sql.SQL(", ").join(sql.Literal(v) for v in _split_guc_list(value)) if value else sql.Literal("")
    else:
        values = sql.Literal(value)
    if role is None:
        return sql.SQL("ALTER DATABASE {} SET {} TO {}").format(sql.Identifier(staging), sql.Identifier(name), values)
    return sql.SQL("ALTER ROLE {} IN DATABASE {} SET {} TO {}").format(
        sql.Identifier(role), sql.Identifier(staging), sql.Identifier(name), values)


def _grantee(role: str | None):
    return sql.SQL("PUBLIC") if role is None else sql.Identifier(role)


def check_staging(conninfo: str, load, *, connection_limit: int | None = None, log: Log | None = None) -> CheckResult:
    """Compare staging with the backup, then give it the target's
    database-level properties, which a plain dump does not carry: owner,
    privileges (pg_database.datacl), per-database settings
    (pg_db_role_setting, including ALTER ROLE ... IN DATABASE) and the
    connection limit (``connection_limit`` overrides the live value: pass
    the preflight's in offline mode, where the live one is 0).  Raises
    CheckFailed; staging is left for inspection (undoing the load drops it).
    Safe to run again: it compares and corrects, so a second run changes
    nothing."""
    log = log or (lambda line: None)
    load = _as(LoadResult, load)
    clock = _Clock()
    target, staging = validate_target(load.target), load.staging
    stamp_of(staging, target)
    with _admin(conninfo) as conn:
        info = _db(conn, staging)
        if info is None or info["oid"] != load.staging_oid:
            raise CheckFailed(f"{staging} is not the database the load created")
        if _db(conn, target) is None:
            raise CheckFailed(f"database {target} does not exist")
    with psycopg.connect(with_dbname(conninfo, staging), autocommit=True, connect_timeout=10) as sconn:
        # tables and partitioned tables, each with its parent when it is a partition
        parent_of = {r[0]: (r[1], r[2]) for r in sconn.execute(
            """SELECT format('%I.%I', n.nspname, c.relname), c.relkind,
                      (SELECT format('%I.%I', pn.nspname, p.relname) FROM pg_inherits i
                         JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = p.relnamespace
                        WHERE i.inhrelid = c.oid AND c.relispartition)
                 FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
                  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                                     AND d.objid = c.oid AND d.deptype = 'e')
                ORDER BY 1""").fetchall()}
        problems, counts, expected = [], {}, {}
        for key, rows in load.copy_rows.items():
            try:
                found = sconn.execute(
                    """SELECT format('%%I.%%I', n.nspname, c.relname), n.nspname, c.relname, c.relkind FROM pg_class c
                         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)""",
                    (key,)).fetchone()
            except psycopg.Error:
                found = None
            if found is None:
                problems.append(f"{key} is missing from staging")
                continue
            expected[found[0]] = (rows, found[1], found[2], found[3])

        def covered(table: str) -> bool:
            """Its rows are counted: it has a data section, or it is a partition
            of a table with one (pg_dump --load-via-partition-root)."""
            seen = set()
            while table is not None and table not in seen:
                if table in expected:
                    return True
                seen.add(table)
                table = parent_of.get(table, (None, None))[1]
            return False

        for table, (kind, _parent) in parent_of.items():
            if kind == "r" and not covered(table):
                problems.append(f"{table} is in staging but has no data section in the backup")
        for table, (rows, schema, name, kind) in sorted(expected.items()):
            # a partitioned table's data section holds the rows of all its partitions
            query = "SELECT count(*) FROM {}" if kind == "p" else "SELECT count(*) FROM ONLY {}"
            counted = sconn.execute(sql.SQL(query).format(sql.Identifier(schema, name))).fetchone()[0]
            counts[table] = counted
            if counted != rows:
                problems.append(f"{table} has {counted:,} rows, the backup {rows:,}")
    if problems:
        raise CheckFailed(f"{staging} does not match the backup: {problems[0]}"
                          + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    log(f"{len(counts)} tables, {sum(counts.values()):,} rows: every count equals the backup's")
    with _admin(conninfo) as conn:
        t = _db(conn, target)
        ident = sql.Identifier(staging)
        if _db(conn, staging)["owner"] != t["owner"]:
            conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(ident, sql.Identifier(t["owner"])))
        want, have = _acl(conn, target), _acl(conn, staging)
        for role, privilege, grantable in sorted(have - want, key=str):
            if grantable and (role, privilege, False) in want:
                conn.execute(sql.SQL("REVOKE GRANT OPTION FOR {} ON DATABASE {} FROM {}").format(
                    sql.SQL(privilege), ident, _grantee(role)))
            else:
                conn.execute(sql.SQL("REVOKE {} ON DATABASE {} FROM {} CASCADE").format(
                    sql.SQL(privilege), ident, _grantee(role)))
        have = _acl(conn, staging)
        for role, privilege, grantable in sorted(want - have, key=str):
            conn.execute(sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                sql.SQL(privilege), ident, _grantee(role), sql.SQL(" WITH GRANT OPTION" if grantable else "")))
        want_settings = _settings(conn, target)
        if _settings(conn, staging) != want_settings:
            for role, _config in _settings(conn, staging):
                if role is None:
                    conn.execute(sql.SQL("ALTER DATABASE {} RESET ALL").format(ident))
                else:
                    conn.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} RESET ALL").format(sql.Identifier(role), ident))
            for role, config in sorted(want_settings, key=str):
                for entry in config:
                    conn.execute(_set_statement(staging, role, entry))
        limit = t["limit"] if connection_limit is None else int(connection_limit)
        conn.execute(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(ident, sql.Literal(limit)))
        final_acl, final_settings = _acl(conn, staging), _settings(conn, staging)
        if final_acl != want or final_settings != want_settings:
            raise CheckFailed(f"could not give {staging} the privileges and settings of {target}")
    log(f"{staging} now has {target}'s owner ({t['owner']}), privileges, settings and connection limit ({limit})")
    result = CheckResult(target=target, staging=staging, tables=len(counts), row_counts=counts, owner=t["owner"],
                         privileges=sorted([list(x) for x in final_acl], key=str),
                         settings=sorted([[r, list(c)] for r, c in final_settings], key=str), connection_limit=limit)
    clock.stamp(result)
    return result


# --- 5. cutover ----------------------------------------------------------------------
@dataclass
class CutoverResult(Timed):
    target: str = ""
    staging: str = ""
    pre_restore: str = ""
    staging_oid: int = 0
    original_oid: int = 0
    blocked_at: str | None = None
    allowed_at: str | None = None
    downtime_seconds: float | None = None
    sessions_ended: int = 0
    renames: list = field(default_factory=list)
    resumed: bool = False
    already_done: bool = False
    undone: bool = False


class Cutover:
    """Swap the names in the shortest window possible.

    ``ALLOW_CONNECTIONS false`` on the target (unlike a connection limit it
    also stops superusers), end its sessions and staging's, rename the target
    to ``<db>_pre_restore_<stamp>`` (the stamp is staging's, so a rerun
    computes the same name), rename staging to ``<db>``, which accepts
    connections.  The pre-restore database stays closed
    (ALLOW_CONNECTIONS false) so nothing writes to it by mistake; undo or
    ``ALTER DATABASE ... ALLOW_CONNECTIONS true`` opens it.

    If a rename fails (a session that could not be ended keeps the database
    open), what was done is reversed: the target keeps or gets back its own
    name and accepts connections again, and CutoverFailed says so.

    Undo puts the pre-restore database back under the target's name and the
    restored one back under its staging name (kept, not dropped: cutover can
    run again, or undoing the load drops it)."""

    def __init__(self, conninfo: str, load, *, log: Log | None = None, attempts: int = 3):
        load = _as(LoadResult, load)
        self.conninfo = conninfo
        self.target = validate_target(load.target)
        self.staging = load.staging
        self.stamp = stamp_of(self.staging, self.target)
        self.pre = pre_restore_name(self.target, self.stamp)
        self.staging_oid = int(load.staging_oid)
        self.log = log or (lambda line: None)
        self.attempts = max(1, attempts)

    def _result(self, **kw) -> CutoverResult:
        return CutoverResult(target=self.target, staging=self.staging, pre_restore=self.pre,
                             staging_oid=self.staging_oid, **kw)

    def _set_allow(self, conn, name: str, allow: bool) -> None:
        conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
            sql.Identifier(name), sql.SQL("true" if allow else "false")))

    def _rename(self, conn, old: str, new: str, holders: list[str]) -> tuple[int, list[str]]:
        """Rename, ending the sessions that hold ``old`` (and ``holders``) first;
        retried a few times.  Returns (sessions ended, refusals) or raises the
        last psycopg error."""
        ended, refused = 0, []
        for attempt in range(self.attempts):
            n, refused = _end_sessions(conn, [old, *holders])
            ended += n
            try:
                conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new)))
                return ended, refused
            except psycopg.errors.ObjectInUse as exc:
                if attempt == self.attempts - 1:
                    exc.refused = refused
                    raise

    def run(self) -> CutoverResult:
        clock = _Clock()
        with _admin(self.conninfo) as conn:
            t, s, p = _db(conn, self.target), _db(conn, self.staging), _db(conn, self.pre)
            if t and t["oid"] == self.staging_oid and p:
                if not t["allow"]:
                    self._set_allow(conn, self.target, True)
                self.log(f"Cutover already done: {self.target} is the restored database")
                result = self._result(original_oid=p["oid"], already_done=True)
                clock.stamp(result)
                return result
            if t is None and p and s and s["oid"] == self.staging_oid:
                # a previous run died between the two renames
                result = self._result(original_oid=p["oid"], resumed=True, blocked_at=_iso(_now()))
                try:
                    self._rename(conn, self.staging, self.target, [])
                except psycopg.Error as exc:
                    self._compensate(conn, renamed_target=True)
                    raise CutoverFailed(f"could not rename {self.staging} to {self.target}: {_pg_error(exc)}; "
                                        f"{self.target} was given back its data and accepts connections") from None
                self._set_allow(conn, self.target, True)
                result.renames = [[self.staging, self.target]]
                result.allowed_at = _iso(_now())
                clock.stamp(result)
                return result
            if t is None:
                raise CutoverFailed(f"database {self.target} does not exist; nothing was changed")
            if s is None or s["oid"] != self.staging_oid:
                raise CutoverFailed(f"{self.staging} is not the database the load created; nothing was changed")
            if p is not None:
                raise CutoverFailed(f"{self.pre} already exists; nothing was changed")
            result = self._result(original_oid=t["oid"])
            blocked = time.monotonic()
            result.blocked_at = _iso(_now())
            self._set_allow(conn, self.target, False)
            self.log(f"{self.target} closed to new connections")
            try:
                ended, _ = self._rename(conn, self.target, self.pre, [self.staging])
            except psycopg.Error as exc:
                refused = getattr(exc, "refused", [])
                self._set_allow(conn, self.target, True)
                raise CutoverFailed(
                    f"could not rename {self.target}: {_pg_error(exc)}"
                    + (f" (sessions that could not be ended: {'; '.join(refused)})" if refused else "")
                    + f". Nothing was changed: {self.target} keeps its data and accepts connections again") from None
            result.sessions_ended = ended
            result.renames.append([self.target, self.pre])
            try:
                n, _ = self._rename(conn, self.staging, self.target, [])
                result.sessions_ended += n
            except psycopg.Error as exc:
                self._compensate(conn, renamed_target=True)
                raise CutoverFailed(f"could not rename {self.staging} to {self.target}: {_pg_error(exc)}. "
                                    f"{self.pre} was renamed back: {self.target} keeps its data and accepts "
                                    "connections again") from None
            result.renames.append([self.staging, self.target])
            self._set_allow(conn, self.target, True)
            result.allowed_at = _iso(_now())
            result.downtime_seconds = round(time.monotonic() - blocked, 3)
        self.log(f"Cutover done: {self.target} is the restored database; the previous one is {self.pre} "
                 f"(downtime {result.downtime_seconds:.3f} s)")
        clock.stamp(result)
        return result

    def _compensate(self, conn, *, renamed_target: bool) -> None:
        if renamed_target:
            try:
                self._rename(conn, self.pre, self.target, [])
            except psycopg.Error as exc:
                raise CutoverFailed(f"could not rename {self.pre} back to {self.target}: {_pg_error(exc)}. "
                                    f"{self.target} is MISSING: its data is in {self.pre}; rename it back by hand "
                                    f"(ALTER DATABASE {self.pre} RENAME TO {self.target}; ALTER DATABASE "
                                    f"{self.target} ALLOW_CONNECTIONS true)") from None
        self._set_allow(conn, self.target, True)

    def undo(self, result) -> CutoverResult:
        result = _as(CutoverResult, result)
        original = int(result.original_oid)
        with _admin(self.conninfo) as conn:
            t, s, p = _db(conn, self.target), _db(conn, self.staging), _db(conn, self.pre)
            if t and t["oid"] == original and (s is None or s["oid"] == self.staging_oid):
                if not t["allow"]:
                    self._set_allow(conn, self.target, True)
                if s and not s["allow"]:
                    self._set_allow(conn, self.staging, True)
                result.undone = True
                return result
            if t is None and p and p["oid"] == original:
                # a previous undo died between the renames
                self._rename(conn, self.pre, self.target, [])
                self._set_allow(conn, self.target, True)
                if s:
                    self._set_allow(conn, self.staging, True)
                result.undone = True
                return result
            if not (t and t["oid"] == self.staging_oid and p and p["oid"] == original and s is None):
                raise CutoverFailed(f"cannot undo: {self.target}, {self.staging} and {self.pre} are not where the "
                                    "cutover left them; nothing was changed")
            self._set_allow(conn, self.target, False)
            try:
                self._rename(conn, self.target, self.staging, [self.pre])
            except psycopg.Error as exc:
                self._set_allow(conn, self.target, True)
                raise CutoverFailed(f"could not rename {self.target} back to {self.staging}: {_pg_error(exc)}. "
                                    f"Nothing was changed: {self.target} is still the restored database") from None
            try:
                self._rename(conn, self.pre, self.target, [])
            except psycopg.Error as exc:
                self._rename(conn, self.staging, self.target, [])
                self._set_allow(conn, self.target, True)
                raise CutoverFailed(f"could not rename {self.pre} to {self.target}: {_pg_error(exc)}. "
                                    f"{self.target} is still the restored database") from None
            self._set_allow(conn, self.target, True)
            self._set_allow(conn, self.staging, True)
        self.log(f"Cutover undone: {self.target} holds its data from before the restore again; "
                 f"the restored database is {self.staging}")
        result.undone = True
        return result


# --- 6. report and clean-up -------------------------------------------------------------
def report(*, preflight=None, safety_backup: dict | None = None, block=None, load=None, check=None,
           cutover=None) -> dict:
    """What the restore did and what it cost: downtime (connections blocked
    to allowed at cutover, or from the offline block on), each step's
    duration, row counts.  Takes the stored step records (dataclasses or
    dicts)."""
    steps = {}
    for name, cls, value in (("preflight", PreflightResult, preflight), ("block", BlockResult, block),
                             ("load", LoadResult, load), ("check", CheckResult, check),
                             ("cutover", CutoverResult, cutover)):
        if value is not None:
            value = _as(cls, value)
            steps[name] = {"started_at": value.started_at, "finished_at": value.finished_at,
                           "seconds": value.seconds}
    if safety_backup:
        steps["safety_backup"] = dict(safety_backup)
    out: dict = {"steps": steps}
    if cutover is not None:
        cut = _as(CutoverResult, cutover)
        out.update(target=cut.target, pre_restore=cut.pre_restore, blocked_at=cut.blocked_at,
                   allowed_at=cut.allowed_at, downtime_seconds=cut.downtime_seconds)
        if block is not None and cut.allowed_at:
            blk = _as(BlockResult, block)
            if blk.started_at:
                out["application_downtime_seconds"] = round(
                    (datetime.fromisoformat(cut.allowed_at) - datetime.fromisoformat(blk.started_at)).total_seconds(), 3)
    if check is not None:
        chk = _as(CheckResult, check)
        out["row_counts"] = chk.row_counts
        out["rows"] = sum(chk.row_counts.values())
    if load is not None:
        ld = _as(LoadResult, load)
        out.update(backup=ld.backup, roles_created=ld.roles_created, benign_skipped=ld.benign_skipped)
    return out


def discard_previous(conninfo: str, name: str, *, target: str, log: Log | None = None) -> dict:
    """Drop a kept pre-restore database.  Only a name of the exact shape
    ``<target>_pre_restore_<YYYYMMDDHHMMSS>`` of the given target is
    accepted; dropping one that is already gone is a no-op."""
    log = log or (lambda line: None)
    validate_target(target)
    prefix = f"{target}_pre_restore_"
    if not isinstance(name, str) or not name.startswith(prefix):
        raise Invalid(f"{name!r} is not a pre-restore database of {target}")
    validate_stamp(name[len(prefix):])
    with _admin(conninfo) as conn:
        dropped = _drop(conn, name)
    log(f"Dropped {name}" if dropped else f"{name} was already gone")
    return {"database": name, "dropped": dropped}
