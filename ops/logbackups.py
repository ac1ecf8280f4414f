"""Backups of the log database (MongoDB), beside the PostgreSQL ones (plain
Python, no Django).

HCAP's ``hcap-backup-mongo-log`` runs backup-container for the log database:
each file is ``mongodump --gzip --archive=<file>`` in the same folder layout
and with the same ``<host>-<database>_YYYY-MM-DD_HH-MM-SS.sql.gz`` name as
the PostgreSQL backups.  The name does not tell the engine (backup-container
uses one extension for every engine); the folder does: the log backups live
in their own backup pod on OpenShift and in their own folder locally, so every
entry listed from there is a ``mongo`` entry.  Inside a file, the first bytes
of the decompressed stream tell (``sniff_engine``).

What runs where:

* OpenShift: listing is the same ``find`` as for PostgreSQL, in the log backup
  pod; a manual backup is ``./backup.sh -1`` there and a verification is
  ``./backup.sh -v all -f <file>`` (backup-container restores into its own
  throwaway mongod).  Only ``exec``/``running_pods`` of the driver are used.
* Locally: ``mongodump`` cannot be installed here (no Debian package, and the
  Go module proxy does not serve github.com/mongodb/mongo-tools), so log
  backups are listed, never taken, and "verify" is a structural check of the
  file (``check_archive``): gzip integrity and the framing of the mongodump
  archive.  It restores nothing.

Warnings (staleness, shrink) are ``ops.backups.backup_warnings`` computed
per engine, so a log backup's size is never compared with a PostgreSQL one.
"""

from __future__ import annotations

import gzip
import re
import struct
import zlib
from datetime import datetime
from pathlib import Path
from typing import Callable

from ops.backups import BackupEntry, VerifyFailed, backup_name, backup_warnings, find_argv, folder_kind
from ops.backups import parse_find_output
from ops.backups import scan_local as scan_backup_folder
from ops.errors import Invalid, NotFound, OpsError, Unavailable

POSTGRES = "postgres"
MONGO = "mongo"
ENGINES = (POSTGRES, MONGO)
ENGINE_LABELS = {POSTGRES: "PostgreSQL", MONGO: "MongoDB"}

# The mongodump archive format: magic number 0x8199e26d (little-endian), a
# header document, collection metadata documents, a terminator, then
# namespace segments (header document, data documents, terminator) and one
# EOF block (header document with EOF true, terminator) per namespace.
ARCHIVE_MAGIC = 0x8199E26D
MAGIC_BYTES = struct.pack("<I", ARCHIVE_MAGIC)
TERMINATOR = b"\xff\xff\xff\xff"
MAX_BSON_BYTES = 48 * 1024 * 1024  # a BSON document is at most 16 MB; mongodump's batch limit is below this

MONGODUMP_UNAVAILABLE = ("mongodump is not available on this platform; log backups are taken by backup-container "
                         "in OpenShift")
STRUCTURAL_ONLY = ("structural check only: gzip integrity and the mongodump archive's framing were checked; "
                   "the file was not restored (no mongorestore here) and the documents' content and the "
                   "archive's CRC-64 were not checked")

Log = Callable[[str], None]
Check = Callable[[], None]


def parse_engine(value, *, default: str = POSTGRES) -> str:
    """The engine named by user input: missing or empty -> ``default``;
    anything but "postgres" or "mongo" -> Invalid."""
    if value is None or value == "":
        return default
    if not isinstance(value, str) or value not in ENGINES:
        raise Invalid(f"engine must be one of {', '.join(ENGINES)}")
    return value


def engine_of_target(line: str) -> str | None:
    """The engine of a ``backup.conf`` target line (``mongo=hcap-mongodb:27017/logs``,
    ``postgres=hcap-patroni:5432/hcap``), or None for other lines (cron lines, comments)."""
    match = re.match(r"^\s*(postgres|mongo)=\S+", line or "")
    return match.group(1) if match else None


def sniff_engine(head: bytes) -> str | None:
    """The engine of a backup from the first bytes of its *decompressed*
    stream: a mongodump archive starts with its magic number, a PostgreSQL
    backup with pg_dumpall's SQL comment header.  None when neither."""
    if head.startswith(MAGIC_BYTES):
        return MONGO
    if head.lstrip(b"\r\n").startswith(b"--"):
        return POSTGRES
    return None


def tagged(entries: list[BackupEntry], engine: str = MONGO) -> list[BackupEntry]:
    for entry in entries:
        entry.engine = engine
    return entries


def scan_local(root: str | None) -> list[BackupEntry]:
    """Every log backup in the local log backup folder, newest first; none
    when no folder is configured."""
    if not root:
        return []
    return tagged(scan_backup_folder(root))


def engine_warnings(entries: list[BackupEntry], *, now: datetime, stale_hours: int, shrink_percent: int) -> list[dict]:
    """``ops.backups.backup_warnings`` per engine: each warning also names its
    engine, and a backup is only ever compared with earlier backups of the
    same engine and database."""
    found = []
    for engine in ENGINES:
        mine = [e for e in entries if getattr(e, "engine", POSTGRES) == engine]
        for warning in backup_warnings(mine, now=now, stale_hours=stale_hours, shrink_percent=shrink_percent):
            warning["engine"] = engine
            if engine != POSTGRES:
                warning["message"] = f"{ENGINE_LABELS[engine]} {warning['message'][0].lower()}{warning['message'][1:]}"
            found.append(warning)
    return found


# --- OpenShift: the log backup pod ----------------------------------------------------
def backup_sh_take_argv() -> list[str]:
    return ["./backup.sh", "-1"]


def backup_sh_verify_argv(path: str) -> list[str]:
    """backup-container's verify of one file: ``-v <spec|all> -f <file>``."""
    return ["./backup.sh", "-v", "all", "-f", path]


_NAME_IN_OUTPUT = re.compile(r"([A-Za-z0-9.-]+-[A-Za-z0-9_]+_\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}\.sql\.gz)(?!\.in_progress)")
_VERIFY_FAIL = re.compile(r"\b(fail(ed|ure)?|error)\b", re.IGNORECASE)
_VERIFY_PASS = re.compile(r"\b(pass(ed)?|verified|succeeded|successful(ly)?)\b", re.IGNORECASE)


def written_name(output: str) -> str | None:
    """The backup file ``backup.sh -1`` reports having written (the last one
    named without ``.in_progress``), or None."""
    names = _NAME_IN_OUTPUT.findall(output or "")
    return names[-1] if names else None


def verify_outcome(returncode: int, stdout: str, stderr: str) -> tuple[bool, str]:
    """(passed, the line that says so) from ``backup.sh -v``'s output: failed
    on a non-zero exit or a line saying failed/error, passed only when a line
    says passed/verified/succeeded (backup-container's wording varies)."""
    text = (stdout or "") + "\n" + (stderr or "")
    failed = [line.strip() for line in text.splitlines() if _VERIFY_FAIL.search(line)]
    passed = [line.strip() for line in text.splitlines() if _VERIFY_PASS.search(line)]
    if returncode != 0 or failed or not passed:
        return False, (failed[0] if failed else _last_line(stderr) or _last_line(stdout) or "no output")[:500]
    return True, passed[-1][:500]


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


class _Lines:
    """Streamed exec output chunks -> whole lines for a job log."""

    def __init__(self, log: Log | None):
        self.log, self.buffer = log, ""

    def feed(self, chunk: str) -> None:
        if self.log:
            self.buffer += chunk
            *lines, self.buffer = self.buffer.split("\n")
            for line in lines:
                self.log(line.rstrip("\r"))

    def close(self) -> None:
        if self.log and self.buffer:
            self.log(self.buffer)
        self.buffer = ""


class PodBackups:
    """The log backup pod of an OpenShift driver: ``driver`` needs only
    ``running_pods(selector)`` and ``exec(pod, argv, container=, timeout=,
    on_stdout=, on_stderr=, check=)`` (argv lists, never shell strings)."""

    def __init__(self, driver, *, selector: str, root: str = "/backups", container: str | None = None):
        self.driver = driver
        self.selector = selector
        self.root = root.rstrip("/") or "/backups"
        self.container = container

    def pod(self) -> str:
        pods = self.driver.running_pods(self.selector)
        if not pods:
            raise Unavailable(f"no running log backup pod (label {self.selector}) in {self.driver.namespace}")
        return pods[0]

    def list(self) -> list[BackupEntry]:
        pod = self.pod()
        result = self.driver.exec(pod, find_argv(self.root), container=self.container, timeout=60)
        if result.returncode != 0:
            raise OpsError(f"listing log backups in pod {pod} failed (exit {result.returncode}): "
                           f"{_last_line(result.stderr) or 'no output'}")
        return tagged(parse_find_output(result.stdout, self.root))

    def _run(self, argv: list[str], *, log: Log | None, check: Check | None, timeout: float):
        pod = self.pod()
        out, err = _Lines(log), _Lines(log)
        if log:
            log(f"Running {' '.join(argv)} in pod {pod}")
        try:
            result = self.driver.exec(pod, argv, container=self.container, timeout=timeout, on_stdout=out.feed,
                                      on_stderr=err.feed, check=check)
        finally:
            out.close()
            err.close()
        return pod, result

    def take(self, *, log: Log | None = None, check: Check | None = None, timeout: float = 3 * 3600):
        """``./backup.sh -1`` in the log backup pod; the new entry, or None
        when the output does not name the file."""
        argv = backup_sh_take_argv()
        pod, result = self._run(argv, log=log, check=check, timeout=timeout)
        if result.returncode != 0:
            raise OpsError(f"backup.sh -1 in pod {pod} failed (exit {result.returncode}): "
                           f"{_last_line(result.stderr) or _last_line(result.stdout) or 'no output'}")
        name = written_name(result.stdout + "\n" + result.stderr)
        if name:
            for entry in self.list():
                if entry.name == name and not entry.in_progress:
                    return entry
        return None

    def verify(self, entry: BackupEntry, *, log: Log | None = None, check: Check | None = None,
               timeout: float = 3 * 3600) -> dict:
        """``./backup.sh -v all -f <file>`` in the log backup pod: backup-container
        restores into its own throwaway mongod and checks it."""
        pod, result = self._run(backup_sh_verify_argv(entry.path), log=log, check=check, timeout=timeout)
        ok, line = verify_outcome(result.returncode, result.stdout, result.stderr)
        if not ok:
            raise VerifyFailed(f"backup.sh -v in pod {pod} reported failure (exit {result.returncode}): {line}")
        return {"pod": pod, "summary": line, "engine": MONGO, "check": "restore"}


# --- the archive ------------------------------------------------------------------------
class _Reader:
    """Exact-size reads from a decompressing stream, counting bytes."""

    def __init__(self, raw):
        self.raw, self.offset = raw, 0

    def read(self, n: int, what: str) -> bytes:
        data = self.raw.read(n)
        while len(data) < n:
            more = self.raw.read(n - len(data))
            if not more:
                raise VerifyFailed(f"the archive ends inside {what} at byte {self.offset + len(data)}: "
                                   "the file is truncated")
            data += more
        self.offset += n
        return data

    def skip(self, n: int, what: str) -> bytes:
        """Skip ``n`` bytes (in bounded chunks); return the last byte."""
        last = b""
        while n:
            chunk = self.read(min(n, 1 << 20), what)
            last = chunk[-1:]
            n -= len(chunk)
        return last


def _document(reader: _Reader, what: str, *, decode: bool, head: bytes | None = None):
    """The next BSON document (decoded when ``decode``), or None at a
    terminator.  ``head``: its first four bytes, when already read."""
    import bson

    head = head if head is not None else reader.read(4, what)
    if head == TERMINATOR:
        return None
    size = struct.unpack("<i", head)[0]
    if size < 5 or size > MAX_BSON_BYTES:
        raise VerifyFailed(f"{what} at byte {reader.offset - 4} has an impossible length ({size}): "
                           "this is not a well-formed mongodump archive")
    if decode:
        body = reader.read(size - 4, what)
        try:
            return bson.decode(head + body)
        except Exception as exc:  # bson.errors.InvalidBSON and friends
            raise VerifyFailed(f"{what} at byte {reader.offset - size} is not valid BSON ({exc})") from None
    if reader.skip(size - 4, what) != b"\x00":
        raise VerifyFailed(f"{what} ending at byte {reader.offset} is not valid BSON (no terminating zero)")
    return {}


def check_archive(path: str, *, log: Log | None = None, check: Check | None = None) -> dict:
    """Check a ``mongodump --gzip --archive`` file without restoring it: the
    gzip stream is complete and its CRC matches, the decompressed stream
    starts with the archive's magic number, the header and collection
    metadata documents are valid BSON, every namespace segment is a run of
    length-framed BSON documents closed by a terminator, and every
    namespace listed in the metadata ends with its EOF block.  Raises
    VerifyFailed (NotFound when the file is gone); returns the findings."""
    log = log or (lambda line: None)
    file = Path(path)
    if not file.is_file():
        raise NotFound(f"backup file {file.name} is gone")
    namespaces: dict[str, dict] = {}
    try:
        with gzip.open(file, "rb") as raw:
            reader = _Reader(raw)
            head = raw.read(4)
            reader.offset = len(head)
            if head != MAGIC_BYTES:
                kind = sniff_engine(head)
                what = ("a PostgreSQL (SQL) backup" if kind == POSTGRES
                        else "not a mongodump archive")
                raise VerifyFailed(f"the file does not start with the mongodump archive magic number "
                                   f"0x{ARCHIVE_MAGIC:08x}: it is {what}")
            header = _document(reader, "the archive header", decode=True)
            if header is None:
                raise VerifyFailed("the archive has no header document")
            log(f"mongodump archive format {header.get('version', '?')}, server {header.get('server_version', '?')}, "
                f"tool {header.get('tool_version', '?')}")
            while True:
                meta = _document(reader, "collection metadata", decode=True)
                if meta is None:
                    break
                ns = f"{meta.get('db', '?')}.{meta.get('collection', '?')}"
                namespaces[ns] = {"documents": 0, "closed": False}
            blocks = 0
            while True:
                if check and blocks % 64 == 0:
                    check()
                probe = raw.read(1)
                if not probe:
                    break
                reader.offset += 1
                head = probe + reader.read(3, "a namespace header")
                block = _document(reader, "a namespace header", decode=True, head=head)
                if block is None:
                    raise VerifyFailed(f"a stray terminator at byte {reader.offset - 4}")
                ns = f"{block.get('db', '?')}.{block.get('collection', '?')}"
                state = namespaces.setdefault(ns, {"documents": 0, "closed": False, "unlisted": True})
                if state["closed"]:
                    raise VerifyFailed(f"data for {ns} after its EOF block")
                if block.get("EOF"):
                    state["closed"] = True
                    if _document(reader, f"the EOF block of {ns}", decode=False) is not None:
                        raise VerifyFailed(f"the EOF block of {ns} is not followed by a terminator")
                else:
                    while _document(reader, f"a document of {ns}", decode=False) is not None:
                        state["documents"] += 1
                blocks += 1
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise VerifyFailed(f"the file is truncated or corrupt ({exc})") from None
    except OSError as exc:
        raise VerifyFailed(f"the file cannot be read ({exc.strerror or exc})") from None
    unclosed = sorted(ns for ns, state in namespaces.items() if not state["closed"])
    if unclosed:
        raise VerifyFailed(f"namespace {unclosed[0]} has no EOF block: the dump did not finish"
                           + (f" (and {len(unclosed) - 1} more)" if len(unclosed) > 1 else ""))
    for ns, state in sorted(namespaces.items()):
        log(f"  {ns}: {state['documents']:,} documents")
    return {"engine": MONGO, "check": "structural", "archive_version": str(header.get("version", "")),
            "server_version": str(header.get("server_version", "")),
            "documents": {ns: state["documents"] for ns, state in sorted(namespaces.items())},
            "bytes_decompressed": reader.offset, "not_checked": STRUCTURAL_ONLY}


def build_archive(database: str, collections: dict[str, list[dict]], *, server_version: str = "4.4.0",
                  tool_version: str = "hcapadmin-demo") -> bytes:
    """A minimal, valid (uncompressed) mongodump archive holding
    ``collections`` of ``database`` (for the sandbox and tests)."""
    import bson

    out = [MAGIC_BYTES, bson.encode({"concurrent_collections": 1, "version": "0.1",
                                     "server_version": server_version, "tool_version": tool_version})]
    for name in collections:
        out.append(bson.encode({"db": database, "collection": name, "metadata": '{"indexes":[]}', "size": 0,
                                "type": "collection"}))
    out.append(TERMINATOR)
    for name, docs in collections.items():
        if docs:
            out.append(bson.encode({"db": database, "collection": name, "EOF": False, "CRC": bson.Int64(0)}))
            out.extend(bson.encode(doc) for doc in docs)
            out.append(TERMINATOR)
        out.append(bson.encode({"db": database, "collection": name, "EOF": True, "CRC": bson.Int64(0)}))
        out.append(TERMINATOR)
    return b"".join(out)


def write_local(root: str, host: str, database: str, when: datetime, archive: bytes) -> BackupEntry:
    """Put ``archive`` gzip-compressed into ``root`` as backup-container would
    have named it (the sandbox's demo log backups)."""
    kind = folder_kind(when.date())
    folder = Path(root) / kind / f"{when:%Y-%m-%d}"
    folder.mkdir(parents=True, exist_ok=True)
    name = backup_name(host, database, when)
    (folder / name).write_bytes(gzip.compress(archive, mtime=int(when.timestamp())))
    return next(e for e in scan_local(root) if e.name == name)
