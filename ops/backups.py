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
"""

from __future__ import annotations

import calendar
import gzip
import os
import re
import secrets
import shutil
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
                    detail = _stderr_text(err).splitlines()
                    raise OpsError(f"{argv[0]} failed (exit {rc}): {detail[-1] if detail else 'no output'}")
            comp.stdin.close()
            rc = _wait(comp, check)
            if rc != 0:
                detail = _stderr_text(errors[0]).splitlines()
                raise OpsError(f"{compressor[0]} failed (exit {rc}): {detail[-1] if detail else 'no output'}")
            out.flush()
            os.fsync(out.fileno())
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


# --- verification ----------------------------------------------------------------
def _benign(line: str) -> bool:
    return any(p.match(line) for p in BENIGN_ROLE_ERRORS)


def _error_lines(text: str) -> list[str]:
    lines = []
    for raw in text.splitlines():
        line = re.sub(r"^psql:[^:]*:\d+:\s*", "", raw.strip())
        if line.startswith(("ERROR:", "FATAL:")):
            lines.append(line)
    return lines


def restore_stream(fh, conninfo: str, env: dict, *, log: Log, check: Check | None = None) -> dict:
    """Restore a decompressed backup stream (binary file object) into the
    database of ``conninfo``: the roles section without ON_ERROR_STOP, each
    error checked against BENIGN_ROLE_ERRORS, then the dump with
    ``ON_ERROR_STOP=1``.  Raises VerifyFailed."""
    psql = ["psql", "-X", "-q", f"--dbname={conninfo}"]
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
                proc = subprocess.Popen(psql + ["-v", "ON_ERROR_STOP=0"], stdin=subprocess.PIPE,
                                        stdout=subprocess.DEVNULL, stderr=err, env=env)
                try:
                    proc.stdin.write(pending)
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
        proc = subprocess.Popen(psql + ["-v", "ON_ERROR_STOP=1"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=err, env=env)
        try:
            if pending:
                proc.stdin.write(pending)
            total = len(pending)
            last_log = time.monotonic()
            while True:
                chunk = fh.read(1 << 20)
                if not chunk:
                    break
                try:
                    proc.stdin.write(chunk)
                except BrokenPipeError:
                    break  # psql stopped on an error; reported below
                total += len(chunk)
                if check:
                    check()
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
            errors = _error_lines(_stderr_text(err)) or [_stderr_text(err)[-300:] or f"psql exit {rc}"]
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


def verify_local(conninfo: str, path: str, *, log: Log | None = None, check: Check | None = None) -> dict:
    """Restore the backup at ``path`` into a throwaway database on the server
    of ``conninfo``, check it (tables present, row counts of the largest
    tables), drop it.  Returns the findings; raises VerifyFailed."""
    import psycopg

    log = log or (lambda line: None)
    safe_conninfo, env, _dbname = split_conninfo(conninfo)
    throwaway = f"hcapadmin_verify_{secrets.token_hex(6)}"
    target = _with_dbname(safe_conninfo, throwaway)
    if not Path(path).is_file():
        raise NotFound(f"backup file {Path(path).name} is gone")
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(throwaway)))
    log(f"Restoring into throwaway database {throwaway}")
    try:
        try:
            with gzip.open(path, "rb") as fh:
                found = restore_stream(fh, target, env, log=log, check=check)
        except (EOFError, gzip.BadGzipFile, OSError, zlib_error()) as exc:
            raise VerifyFailed(f"the file is truncated or corrupt ({exc})") from None
        log("Checking the restored database")
        found.update(check_restored(target, env))
        if found["tables"] == 0:
            raise VerifyFailed("the restored database has no tables")
        for table, count in found["row_counts"].items():
            log(f"  {table}: {count:,} rows")
    finally:
        with psycopg.connect(conninfo, autocommit=True) as admin:
            admin.execute(psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                psycopg.sql.Identifier(throwaway)))
        log(f"Dropped {throwaway}")
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
