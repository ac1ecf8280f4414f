"""node-pg-migrate state: which migration files exist, which are applied, and
what ``node-pg-migrate up`` will do with them.

Plain Python (no Django).  The ordering and the order check copy
node-pg-migrate 8.0.4 (``dist/legacy/migration.js`` and ``runner.js``):

* a migration file is a directory entry that is a file or a symlink and whose
  name does not start with a dot; subfolders are ignored;
* files are sorted by the numeric value of the prefix before the first ``_``
  (13 digits: milliseconds since the epoch; 17 digits: ``YYYYMMDDHHmmssSSS``
  UTC; anything else: logged as an error and taken as ``Number(prefix) || 0``),
  ties by a numeric-aware, punctuation-ignoring name comparison;
* applied rows are read ``ORDER BY run_on, id``;
* ``up`` compares the i-th applied row with the i-th file for every i up to
  the shorter list and refuses at the first mismatch with
  ``Not run migration X is preceding already run migration Y``.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import NamedTuple
from datetime import datetime, timezone

from ops.errors import Invalid, NotFound, OpsError, Timeout, Unavailable

APPLIED, PENDING, MISSING, OUT_OF_ORDER, UNKNOWN = "applied", "pending", "missing", "out_of_order", "unknown"
STATUS_LABELS = {APPLIED: "applied", PENDING: "pending", MISSING: "missing", OUT_OF_ORDER: "out of order",
                 UNKNOWN: "unknown"}
KNOWN_EXTENSIONS = ("js", "cjs", "mjs", "ts", "sql")
NAME_PATTERN = re.compile(r"^(?P<ts>\d{13}|\d{17})_(?P<title>[^/]+)\.(?P<ext>[A-Za-z0-9]+)$")
# What a migration name in a URL or a form may look like: anything a file
# name or a varchar(255) row can hold, minus path separators, control
# characters and a leading dot.  Names are only ever looked up in what was
# read, never used to build a path.
_CONTROL = re.compile(r"[\x00-\x1f\x7f/\\]")


def valid_name(name: str) -> bool:
    return isinstance(name, str) and 0 < len(name) <= 255 and not name.startswith(".") and not _CONTROL.search(name)


class SourceMissing(NotFound):
    """The migrations folder (or the server pod holding it) is not there."""


class DatabaseUnavailable(Unavailable):
    """The managed database cannot be reached."""


class MigrationsTableError(OpsError):
    """The database answered, but the migrations table cannot be read."""


# --------------------------------------------------------------------------
# node-pg-migrate's ordering
# --------------------------------------------------------------------------
_JS_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*(e[+-]?\d+)?|\.\d+(e[+-]?\d+)?)$", re.I)


def _js_number(text: str) -> float:
    """``Number(text) || 0`` for the strings a file-name prefix can be."""
    s = text.strip()
    if s == "":
        return 0
    low = s.lower()
    try:
        if re.fullmatch(r"0x[0-9a-f]+", low):
            return int(low, 16)
        if re.fullmatch(r"0o[0-7]+", low):
            return int(low[2:], 8)
        if re.fullmatch(r"0b[01]+", low):
            return int(low[2:], 2)
        if s in ("Infinity", "+Infinity"):
            return float("inf")
        if s == "-Infinity":
            return float("-inf")
        if _JS_NUMBER.match(s):
            value = float(s)
            if value.is_integer() and abs(value) < 2**53:
                return int(value)
            return value
    except ValueError:
        pass
    return 0  # NaN || 0


def _utc17_ms(prefix: str) -> int | None:
    try:
        moment = datetime(int(prefix[0:4]), int(prefix[4:6]), int(prefix[6:8]), int(prefix[8:10]),
                          int(prefix[10:12]), int(prefix[12:14]), int(prefix[14:17]) * 1000, tzinfo=timezone.utc)
    except ValueError:
        return None  # JavaScript: Invalid Date -> NaN
    return int(moment.timestamp()) * 1000 + int(prefix[14:17])


def numeric_prefix(filename: str) -> tuple[float | None, bool]:
    """(sort value, prefix readable) like node-pg-migrate's getNumericPrefix.
    The value is None where JavaScript would compute NaN (an impossible
    17-digit date); node-pg-migrate then falls back to the name comparison."""
    prefix = filename.split("_")[0]
    if prefix and prefix.isascii() and prefix.isdigit():
        if len(prefix) == 13:
            return int(prefix), True
        if len(prefix) == 17:
            value = _utc17_ms(prefix)
            return value, value is not None
    return _js_number(prefix), False


# names that are not "<13 digits>_<name>.js|.sql" (the common case, which needs no warning)
_SUSPICIOUS = re.compile(r"^(?!\d{13}_[^\n]*[^\n.]\.(?:js|sql)$)[^\n]*$", re.M)
_TOKEN = re.compile(r"\d+|.", re.S)


def name_key(name: str) -> tuple:
    """Sort key approximating ``a.localeCompare(b, undefined, {numeric: true,
    sensitivity: 'variant', ignorePunctuation: true})``: punctuation and spaces
    ignored, digit runs compared as numbers and before letters, letters
    compared without case first, lower case before upper case on a tie."""
    import unicodedata

    primary, secondary, tertiary = [], [], []
    for token in _TOKEN.findall(unicodedata.normalize("NFD", name)):
        if token[0].isdigit() and token.isascii():
            primary.append((0, int(token), ""))
        elif unicodedata.combining(token):
            if secondary:
                secondary[-1] = secondary[-1] + (ord(token),)
        elif token.isalpha():
            primary.append((1, 0, token.casefold()))
            secondary.append(())
            tertiary.append(0 if token.islower() or not token.isupper() else 1)
        elif token.isspace() or _is_punctuation(token):
            continue
        else:  # symbols ($, +, =, ...) are not ignored by ICU; they sort before digits
            primary.append((-1, ord(token), ""))
    return tuple(primary), tuple(secondary), tuple(tertiary)


def _is_punctuation(ch: str) -> bool:
    import unicodedata

    return unicodedata.category(ch)[0] == "P"


def migration_name(filename: str) -> str:
    """``basename(path, extname(path))`` (names never start with a dot here)."""
    i = filename.rfind(".")
    return filename[:i] if i > 0 else filename


def is_migration_entry(filename: str) -> bool:
    return bool(filename) and not filename.startswith(".") and "/" not in filename and "\0" not in filename


def _sort_value(filename: str):
    prefix = filename.split("_", 1)[0]
    if len(prefix) == 13 and prefix.isdigit() and prefix.isascii():
        return int(prefix)  # the common case, fast
    value, _ok = numeric_prefix(filename)
    return 0 if value is None else value


def sort_filenames(filenames) -> list[str]:
    """node-pg-migrate's order.  Timestamps first (cheap), the name
    comparison only among equal timestamps.  (An impossible 17-digit date is
    NaN in JavaScript, which Array.prototype.sort's comparator treats as
    "equal", falling back to the name comparison; it is placed at 0 here, the
    closest total order.)"""
    filenames = list(filenames)
    values = [int(f[:13]) if f[13:14] == "_" and f[:13].isdigit() and f[:13].isascii() else _sort_value(f)
              for f in filenames]
    order = sorted(range(len(filenames)), key=values.__getitem__)
    if len(set(values)) == len(values):
        return [filenames[i] for i in order]
    out: list[str] = []
    i = 0
    while i < len(order):
        j = i + 1
        while j < len(order) and values[order[j]] == values[order[i]]:
            j += 1
        group = [filenames[k] for k in order[i:j]]
        if len(group) > 1:
            group.sort(key=name_key)  # stable: ties keep directory order
        out.extend(group)
        i = j
    return out


def name_warning(filename: str) -> str | None:
    match = NAME_PATTERN.match(filename)
    if match:
        if len(match["ts"]) == 17 and _utc17_ms(match["ts"]) is None:
            return (f"{filename}: the 17-digit prefix is not a valid UTC date; node-pg-migrate cannot "
                    "order it by time")
        if match["ext"].lower() not in KNOWN_EXTENSIONS:
            return (f"{filename}: extension .{match['ext']} is not .js/.cjs/.mjs/.ts/.sql; node-pg-migrate cannot "
                    "load it and `up` fails")
        return None
    value, _ok = numeric_prefix(filename)
    return (f"{filename}: name does not follow <timestamp>_<name>.<ext> (13- or 17-digit timestamp); "
            f"node-pg-migrate sorts it as {value:g}")


def unloadable(filename: str) -> bool:
    """node-pg-migrate imports every non-.sql file as a module; Node refuses
    unknown extensions (ERR_UNKNOWN_FILE_EXTENSION), so `up` fails to start."""
    ext = os.path.splitext(filename)[1]
    return bool(ext) and ext[1:].lower() not in KNOWN_EXTENSIONS


def encoded_date(filename: str) -> datetime | None:
    value, ok = numeric_prefix(filename)
    if not ok or value is None:
        return None
    try:
        return datetime.fromtimestamp(value / 1000, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


# --------------------------------------------------------------------------
# Where the files come from
# --------------------------------------------------------------------------
class LocalFolder:
    """The migrations folder on this machine (local platform)."""

    kind = "local"

    def __init__(self, path: str):
        self.path = path

    def describe(self) -> str:
        return f"folder {self.path}"

    def list(self) -> list[str]:
        try:
            with os.scandir(self.path) as entries:
                names = [e.name for e in entries if e.is_symlink() or e.is_file(follow_symlinks=False)]
        except FileNotFoundError:
            raise SourceMissing(f"migrations folder {self.path} does not exist") from None
        except NotADirectoryError:
            raise SourceMissing(f"migrations folder {self.path} is not a folder") from None
        except PermissionError:
            raise SourceMissing(f"migrations folder {self.path} cannot be read (permission denied)") from None
        return [n for n in names if is_migration_entry(n)]

    def read(self, filename: str, listing: list[str] | None = None) -> str:
        listing = self.list() if listing is None else listing
        if filename not in listing:
            raise NotFound(f"no migration file {filename}")
        try:
            with open(os.path.join(self.path, filename), encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except OSError as exc:
            raise SourceMissing(f"cannot read {filename}: {exc.strerror}") from None

    def location(self) -> str:
        return self.path


class StaticFiles:
    """Files given as a list of (filename, source) pairs, e.g. fetched earlier."""

    kind = "static"

    def __init__(self, files):
        self.files = dict(files)

    def describe(self) -> str:
        return "given files"

    def list(self) -> list[str]:
        return [n for n in self.files if is_migration_entry(n)]

    def read(self, filename: str, listing=None) -> str:
        if filename not in self.files:
            raise NotFound(f"no migration file {filename}")
        return self.files[filename]


class PodFolder:
    """The migrations folder inside a running HCAP server pod, listed and read
    by exec (argv lists only), so the list is what that image will apply."""

    kind = "openshift"

    def __init__(self, driver, label_selector: str, path: str, container: str | None = None, timeout: float = 30):
        if not path.startswith("/") or "\0" in path:
            raise Invalid("the pod's migrations folder must be an absolute path")
        self.driver = driver
        self.label_selector = label_selector
        self.path = path.rstrip("/") or "/"
        self.container = container
        self.timeout = timeout
        self._pod: str | None = None

    def describe(self) -> str:
        return f"pod {self._pod or '(' + self.label_selector + ')'}:{self.path}"

    def pod(self) -> str:
        if self._pod is None:
            pods = self.driver.running_pods(self.label_selector)
            if not pods:
                raise SourceMissing(f"no running server pod matches {self.label_selector}")
            self._pod = pods[-1]  # the newest: what the latest rollout runs
        return self._pod

    def _exec(self, argv, **kwargs):
        return self.driver.exec(self.pod(), argv, container=self.container, timeout=kwargs.pop("timeout", self.timeout),
                                **kwargs)

    def list(self) -> list[str]:
        argv = ["find", self.path + "/", "-mindepth", "1", "-maxdepth", "1", "(", "-type", "f", "-o", "-type", "l",
                ")", "-printf", "%f\\0"]
        result = self._exec(argv)
        if result.returncode != 0:
            detail = (result.stderr or "").strip().splitlines()
            if any("No such file" in line or "Not a directory" in line for line in detail):
                raise SourceMissing(f"migrations folder {self.path} does not exist in pod {self.pod()}")
            raise SourceMissing(f"listing {self.path} in pod {self.pod()} failed (exit {result.returncode}): "
                                f"{detail[0][:200] if detail else 'no output'}")
        return [n for n in result.stdout.split("\0") if is_migration_entry(n)]

    def read(self, filename: str, listing: list[str] | None = None) -> str:
        listing = self.list() if listing is None else listing
        if filename not in listing or not is_migration_entry(filename):
            raise NotFound(f"no migration file {filename}")
        result = self._exec(["cat", "--", f"{self.path}/{filename}"])
        if result.returncode != 0:
            raise SourceMissing(f"reading {filename} in pod {self.pod()} failed (exit {result.returncode})")
        return result.stdout

    def location(self) -> str:
        return self.path


# --------------------------------------------------------------------------
# Applied rows
# --------------------------------------------------------------------------
class AppliedRow(NamedTuple):
    id: int
    name: str
    run_on: datetime | None


@dataclass
class AppliedState:
    rows: list[AppliedRow]
    table_exists: bool


def read_applied(conninfo: str, table: str = "pgmigrations", schema: str = "public", timeout: float = 5) -> AppliedState:
    """Rows of the migrations table ``ORDER BY run_on, id``.  A missing table
    is not an error (nothing applied yet); an unreachable database is."""
    import psycopg
    from psycopg import sql

    try:
        conn = psycopg.connect(conninfo, connect_timeout=max(1, int(timeout)), autocommit=True)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatabaseUnavailable(f"managed database unreachable: {first}") from None
    try:
        with conn:
            cur = conn.cursor()
            cur.execute("SELECT set_config('statement_timeout', %s, false)", [str(int(timeout * 1000))])
            cur.execute(
                "SELECT c.relkind FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
                [schema, table],
            )
            if cur.fetchone() is None:
                return AppliedState([], False)
            cur.row_factory = lambda _cursor: AppliedRow._make
            cur.execute(sql.SQL("SELECT id, name, run_on FROM {} ORDER BY run_on, id").format(
                sql.Identifier(schema, table)))
            return AppliedState(cur.fetchall(), True)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"managed database connection lost: {str(exc).strip()[:200]}") from None
    except psycopg.Error as exc:
        raise MigrationsTableError(f"cannot read {schema}.{table}: {str(exc).strip().splitlines()[0][:200]}") from None


# --------------------------------------------------------------------------
# Merging and predicting
# --------------------------------------------------------------------------
@dataclass(slots=True)
class Item:
    name: str
    status: str
    file: str | None = None
    run_on: datetime | None = None
    row_id: int | None = None
    warning: str | None = None

    @property
    def date(self) -> datetime | None:
        return encoded_date(self.file or self.name)

    @property
    def status_label(self) -> str:
        return STATUS_LABELS[self.status]

    def as_api(self) -> dict:
        return {"name": self.name, "run_on": self.run_on.isoformat() if self.run_on else None, "file": self.file}


@dataclass
class Report:
    items: list[Item] = field(default_factory=list)
    table_exists: bool | None = None
    refusal: str | None = None          # node-pg-migrate's own message when `up` would refuse
    refusal_pair: tuple[str, str] | None = None  # (not run X, already run Y)
    load_error: str | None = None       # a file node-pg-migrate cannot load: `up` fails before anything
    warnings: list[str] = field(default_factory=list)
    source_error: str | None = None
    database_error: str | None = None
    source: str = ""
    _counts: dict | None = None
    _attention: list | None = None
    _to_apply: list | None = None
    # Rendered fragments of this (memoised, never mutated) report, shared by
    # the copies build_report() makes with dataclasses.replace().
    _fragments: dict = field(default_factory=dict, repr=False, compare=False)

    def fragment(self, key, build):
        """``build()`` once per key for this report's items."""
        value = self._fragments.get(key)
        if value is None:
            value = self._fragments[key] = build()
        return value

    @property
    def complete(self) -> bool:
        return self.source_error is None and self.database_error is None

    def by_status(self, status: str) -> list[Item]:
        return [i for i in self.items if i.status == status]

    @property
    def counts(self) -> dict:
        if self._counts is None:
            self._index()
        return self._counts

    @property
    def to_apply(self) -> list[Item]:
        """What `up` runs when it does not refuse: every file not applied, in order."""
        if self._to_apply is None:
            self._index()
        return self._to_apply

    @property
    def attention(self) -> list[Item]:
        """Pending, out-of-order and missing migrations, in order."""
        if self._attention is None:
            self._index()
        return self._attention

    def _index(self) -> None:
        counts = {APPLIED: 0, PENDING: 0, MISSING: 0, OUT_OF_ORDER: 0, UNKNOWN: 0}
        attention = []
        files = 0
        for item in self.items:
            counts[item.status] += 1
            if item.status != APPLIED and item.status != UNKNOWN:
                attention.append(item)
            if item.file:
                files += 1
        counts["files"] = files
        self._counts = counts
        self._attention = attention
        self._to_apply = [i for i in attention if i.status != MISSING]

    @property
    def will_refuse(self) -> bool:
        return self.refusal is not None

    @property
    def summary(self) -> str:
        if self.source_error and self.database_error:
            return "Cannot predict what `up` will do: neither the files nor the applied rows could be read."
        if self.source_error:
            return "Cannot predict what `up` will do: the migration files could not be read."
        if self.database_error:
            return "Cannot predict what `up` will do: the database could not be read."
        if self.load_error:
            return (f"`up` will fail before applying anything: node-pg-migrate cannot load {self.load_error} "
                    "(unknown file extension). Remove it from the migrations folder or move it into a subfolder.")
        if self.refusal_pair:
            x, y = self.refusal_pair
            return f"`up` will refuse: not-run migration {x} precedes already-run migration {y}."
        counts = self.counts
        parts = []
        n = counts[PENDING] + counts[OUT_OF_ORDER]
        if n:
            parts.append(f"{n} pending; the next deploy will apply {'it' if n == 1 else 'them'}.")
        else:
            parts.append("Up to date: the next deploy will apply nothing.")
        if counts[MISSING]:
            m = counts[MISSING]
            parts.append(f"{m} applied migration{'s have' if m != 1 else ' has'} no file (the database is ahead "
                         "of the code).")
        if self.table_exists is False:
            parts.append("The migrations table does not exist yet: nothing has been applied; `up` will create it.")
        return " ".join(parts)


def check_order(run_names: list[str], file_names: list[str]) -> tuple[str, str] | None:
    """node-pg-migrate's checkOrder: (not run X, already run Y) at the first mismatch."""
    for run_name, file_name in zip(run_names, file_names):
        if run_name != file_name:
            return file_name, run_name
    return None


def refusal_message(pair: tuple[str, str]) -> str:
    return f"Not run migration {pair[0]} is preceding already run migration {pair[1]}"


def merge(filenames: list[str] | None, applied: AppliedState | None, *, presorted: bool = False) -> Report:
    """One list in node-pg-migrate's order with a status per migration
    (``presorted``: ``filenames`` already went through sort_filenames)."""
    report = Report()
    if filenames is None:
        ordered = []
    else:
        ordered = list(filenames) if presorted else sort_filenames(filenames)
    warnings: dict[str, str] = {}
    if filenames is not None and ordered:
        # one regex pass over all names finds the few that need a closer look
        for filename in _SUSPICIOUS.findall("\n".join(ordered)):
            warning = name_warning(filename)
            if warning:
                warnings[filename] = warning
            if report.load_error is None and unloadable(filename):
                report.load_error = filename
        report.warnings = list(warnings.values())
    if applied is not None:
        report.table_exists = applied.table_exists
    if filenames is None or applied is None:
        # Show what could be read; without both sides no status is known.
        if filenames is not None:
            report.items = [Item(migration_name(f), UNKNOWN, f) for f in ordered]
        elif applied is not None:
            report.items = [Item(r.name, UNKNOWN, None, r.run_on, r.id) for r in applied.rows]
        return report

    rows = applied.rows
    rows_by_name = {row.name: row for row in reversed(rows)}  # the first row of a name wins
    file_names = list(map(migration_name, ordered))
    last_applied_index = -1
    for index in range(len(file_names) - 1, -1, -1):
        if file_names[index] in rows_by_name:
            last_applied_index = index
            break
    get = rows_by_name.get
    items = [
        Item(name, APPLIED, filename, row.run_on, row.id) if (row := get(name)) is not None
        else Item(name, OUT_OF_ORDER if index < last_applied_index else PENDING, filename)
        for index, (name, filename) in enumerate(zip(file_names, ordered))
    ]
    file_name_set = set(file_names)
    missing = [Item(r.name, MISSING, None, r.run_on, r.id) for r in rows if r.name not in file_name_set]
    if missing:
        items = _insert_missing(items, missing)
    if warnings:
        for item in items:
            if item.file in warnings:
                item.warning = warnings[item.file]
    report.items = items
    pair = check_order([r.name for r in rows], file_names)
    if pair:
        report.refusal_pair = pair
        report.refusal = refusal_message(pair)
    return report


def _insert_missing(items: list[Item], missing: list[Item]) -> list[Item]:
    """Place rows without a file where their name would sort among the files."""
    def key(name):
        value, _ok = numeric_prefix(name)
        return (0 if value is None else value, name_key(name))

    missing = sorted(missing, key=lambda m: key(m.name))
    out: list[Item] = []
    mi = 0
    for item in items:
        k = key(item.name)
        while mi < len(missing) and key(missing[mi].name) < k:
            out.append(missing[mi])
            mi += 1
        out.append(item)
    out.extend(missing[mi:])
    return out


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool() -> ThreadPoolExecutor:
    """One small pool per process (a forked RQ work horse must not inherit
    the parent's pool, whose threads do not exist in the child)."""
    pid = os.getpid()
    pool = _POOLS.get(pid)
    if pool is None:
        pool = _POOLS[pid] = ThreadPoolExecutor(max_workers=4, thread_name_prefix="migrations-read")
    return pool


def build_report(source, conninfo: str | None, table: str, schema: str, timeout: float = 5) -> Report:
    """Read both sides (the files and the applied rows), telling their errors
    apart.  The files are listed in a worker thread while the database
    answers."""
    filenames = applied = None
    source_error = database_error = None
    listing = _pool().submit(source.list)
    if conninfo is None:
        database_error = "the managed database connection is not configured (HCAPADMIN_MANAGED_DATABASE_URL)"
    else:
        try:
            applied = read_applied(conninfo, table, schema, timeout=timeout)
        except OpsError as exc:
            database_error = str(exc)
    try:
        filenames = listing.result()
    except OpsError as exc:
        source_error = str(exc)
    report = _merge_memo(filenames, applied)
    return replace(report, source_error=source_error, database_error=database_error, source=source.describe())


_MEMO: dict = {}
_MEMO_LOCK = threading.Lock()
_MEMO_SIZE = 4


def _merge_memo(filenames, applied) -> Report:
    """merge() is a pure function of the listing and the applied rows;
    the page is mostly re-read with nothing changed, so the last few results
    are kept, keyed on the exact inputs (compared in full, not by a digest).
    Callers get a copy of the Report (items are shared and never mutated)."""
    key = (None if filenames is None else tuple(filenames),
           None if applied is None else (applied.table_exists, tuple(applied.rows)))
    with _MEMO_LOCK:
        hit = _MEMO.get(key)
    if hit is not None:
        return hit
    report = merge(filenames, applied)
    report._index()  # kept with the memo: the page needs the counts every time
    with _MEMO_LOCK:
        if len(_MEMO) >= _MEMO_SIZE:
            _MEMO.pop(next(iter(_MEMO)))
        _MEMO[key] = report
    return report


def find_item(report: Report, name: str) -> Item | None:
    for item in report.items:
        if item.name == name or item.file == name:
            return item
    return None


# --------------------------------------------------------------------------
# Source display
# --------------------------------------------------------------------------
_UP_DOWN = [
    ("up", re.compile(r"^\s*(exports\.up\b|module\.exports\.up\b|export\s+(async\s+)?(const|function|let|var)\s+up\b"
                      r"|(async\s+)?function\s+up\b|up\s*[:(]|--[\s-]*up\s+migration)", re.I)),
    ("down", re.compile(r"^\s*(exports\.down\b|module\.exports\.down\b|export\s+(async\s+)?(const|function|let|var)\s+"
                        r"down\b|(async\s+)?function\s+down\b|down\s*[:(]|--[\s-]*down\s+migration)", re.I)),
]


def up_down_lines(source: str) -> dict[str, int | None]:
    """1-based line numbers where ``up`` and ``down`` are defined (or None)."""
    found: dict[str, int | None] = {"up": None, "down": None}
    for number, line in enumerate(source.splitlines(), start=1):
        for which, pattern in _UP_DOWN:
            if found[which] is None and pattern.search(line):
                found[which] = number
    return found


def highlight(filename: str, source: str, marked_lines=()) -> tuple[str, str]:
    """(HTML, CSS) for the source, with line numbers and ``marked_lines`` marked."""
    from pygments import highlight as _highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import JavascriptLexer, PostgresLexer, TextLexer, TypeScriptLexer

    ext = os.path.splitext(filename)[1].lower()
    lexer = {".js": JavascriptLexer, ".cjs": JavascriptLexer, ".mjs": JavascriptLexer, ".ts": TypeScriptLexer,
             ".sql": PostgresLexer}.get(ext, TextLexer)()
    formatter = HtmlFormatter(linenos="table", cssclass="source", hl_lines=[n for n in marked_lines if n],
                              lineanchors="L", anchorlinenos=True, wrapcode=True)
    return _highlight(source, lexer, formatter), formatter.get_style_defs(".source")


# --------------------------------------------------------------------------
# Running node-pg-migrate
# --------------------------------------------------------------------------
def local_up_argv(binary: str, migrations_dir: str, table: str, schema: str) -> list[str]:
    return [binary, "up", "--migrations-dir", migrations_dir, "--migrations-table", table,
            "--migrations-schema", schema]


def run_local_up(binary: str, migrations_dir: str, database_url: str, table: str, schema: str, *, on_line=None,
                 timeout: float = 1800, check=None) -> tuple[int, str]:
    """Run the real ``node-pg-migrate up``.  The database URL goes in the
    environment (DATABASE_URL), never in argv.  Returns (exit code, output).

    ``check`` (optional) is called about every 0.2 s while the tool runs and
    may raise to stop it (cancel, lost lock).  Past ``timeout`` seconds it
    raises ``Timeout``.  Whenever the tool is stopped early (by ``check``, by
    the timeout, or by an exception such as the worker's own job timeout
    arriving here), its whole process group is killed, and its PostgreSQL
    sessions, found by their application_name, are terminated and gone before
    this returns or raises: a killed client does not end a statement its
    server is still running, nor the transaction and the advisory lock
    node-pg-migrate holds.  ``on_line`` is only called from the calling
    thread.
    """
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "NODE_OPTIONS",
                                                        "NODE_EXTRA_CA_CERTS")}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["DATABASE_URL"] = database_url
    env["NO_COLOR"] = "1"
    app_name = f"{UP_APPLICATION_NAME}-{uuid.uuid4().hex[:12]}"
    env["PGAPPNAME"] = app_name  # node-postgres reads it; the URL carries no application_name of its own
    lines: list[str] = []
    secret = _url_password(database_url)
    with tempfile.TemporaryDirectory(prefix="npm-") as cwd:  # no stray .env is picked up by dotenv
        try:
            proc = subprocess.Popen(local_up_argv(binary, migrations_dir, table, schema), cwd=cwd, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    text=True, errors="replace", bufsize=1, start_new_session=True)
        except OSError as exc:
            raise Unavailable(f"cannot start node-pg-migrate ({binary}): {exc.strerror}") from None
        output: queue.Queue = queue.Queue()

        def read():
            try:
                for raw in proc.stdout:
                    output.put(raw)
            finally:
                output.put(None)

        reader = threading.Thread(target=read, name="node-pg-migrate-output", daemon=True)
        reader.start()
        deadline = time.monotonic() + timeout
        finished = False
        try:
            while True:
                try:
                    raw = output.get(timeout=0.2)
                except queue.Empty:
                    raw = ""
                if raw is None:
                    break
                if raw:
                    line = raw.rstrip("\n")
                    if secret and secret in line:  # never let the password reach a log
                        line = line.replace(secret, "***")
                    lines.append(line)
                    if on_line:
                        on_line(line)
                    continue
                if check:
                    check()
                if time.monotonic() > deadline:
                    raise Timeout(f"node-pg-migrate up ran longer than {timeout:g} seconds and was stopped")
            returncode = proc.wait()
            finished = True
        finally:
            if not finished:
                stop_process_group(proc)
                try:
                    count = terminate_sessions(database_url, app_name)
                except Unavailable as exc:  # keep the reason the run stopped; say what is left behind
                    line = f"WARNING: {exc}"
                else:
                    line = (f"Stopped node-pg-migrate and ended its {count} database session(s)." if count
                            else "Stopped node-pg-migrate.")
                lines.append(line)
                if on_line:
                    on_line(line)
            reader.join(timeout=10)
    return returncode, "\n".join(lines)


UP_APPLICATION_NAME = "hcapadmin-node-pg-migrate"


def stop_process_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group ``proc`` leads (it was started with
    start_new_session=True) and wait until ``proc`` is reaped and no process
    of the group is left."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    # Grandchildren, if any, were killed too; wait until the group is empty.
    # The deadline only guards against a zombie nobody reaps (no init in a
    # container): a SIGKILLed process cannot run on.
    give_up = time.monotonic() + 10
    while time.monotonic() < give_up:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def terminate_sessions(database_url: str, application_name: str, timeout: float = 30) -> int:
    """Terminate the PostgreSQL sessions named ``application_name`` and wait
    until they are gone; returns how many there were.  Raises Unavailable
    when the database cannot be reached to do so."""
    import psycopg

    sql_terminate = ("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                     "WHERE application_name = %s AND pid <> pg_backend_pid()")
    sql_left = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND pid <> pg_backend_pid()"
    try:
        with psycopg.connect(database_url, connect_timeout=5, autocommit=True,
                             application_name="hcapadmin-cleanup") as conn:
            terminated = conn.execute(sql_terminate, [application_name]).fetchone()[0]
            give_up = time.monotonic() + timeout
            while conn.execute(sql_left, [application_name]).fetchone()[0]:
                if time.monotonic() > give_up:
                    raise Unavailable(f"the database sessions of the stopped node-pg-migrate ({application_name}) "
                                      f"were still there {timeout:g} s after being terminated")
                time.sleep(0.05)
    except psycopg.Error as exc:
        raise Unavailable("could not end the stopped node-pg-migrate's database sessions: "
                          f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from None
    return terminated


def _url_password(url: str) -> str | None:
    from urllib.parse import unquote, urlsplit

    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password and len(password) >= 4 else None


def pod_up_argv(project_dir: str) -> list[str]:
    return ["npm", "--prefix", project_dir, "run", "migrate", "up"]


def run_pod_up(source: PodFolder, project_dir: str, *, on_line=None, timeout: float = 1800,
               check=None) -> tuple[int, str]:
    """``npm run migrate up`` by exec in the server pod the files were read from.
    ``check`` is called while it runs and may raise to stop waiting."""
    buffer = {"text": ""}
    collected: list[str] = []

    def feed(chunk: str):
        buffer["text"] += chunk
        *complete, buffer["text"] = buffer["text"].split("\n")
        for line in complete:
            collected.append(line)
            if on_line:
                on_line(line)

    result = source._exec(pod_up_argv(project_dir), timeout=timeout, on_stdout=feed, on_stderr=feed, check=check)
    if buffer["text"]:
        collected.append(buffer["text"])
        if on_line:
            on_line(buffer["text"])
    return result.returncode, "\n".join(collected)


_ERROR_LINE = re.compile(r"^\s*(\w*[Ee]rror|Can't get migration files): ")


def error_excerpt(output: str, limit: int = 600) -> str:
    """The line of node-pg-migrate's output that says why it failed (the
    error it prints last, without the stack), else the last lines."""
    lines = [line for line in output.splitlines() if line.strip()]
    found = [line.strip() for line in lines if _ERROR_LINE.match(line)]
    if found:
        return found[-1][:limit]
    return "\n".join(lines[-5:])[:limit]
