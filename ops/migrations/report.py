"""Files and applied rows merged into one list in node-pg-migrate's order,
with a status per migration and a prediction of what ``up`` (and so the
next deploy) will do.  ``merge`` is a pure function of its inputs and is
memoised on them; ``build_report`` reads both sides at once."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

from ops.errors import OpsError
from ops.migrations.applied import AppliedState, read_applied
from ops.migrations.ordering import (check_order, encoded_date, migration_name, name_key, name_warning,
                                     numeric_prefix, refusal_message, sort_filenames, suspicious_names,
                                     unloadable)
from ops.migrations.sources import MigrationFiles

APPLIED, PENDING, MISSING, OUT_OF_ORDER, UNKNOWN = "applied", "pending", "missing", "out_of_order", "unknown"
STATUS_LABELS = {APPLIED: "applied", PENDING: "pending", MISSING: "missing", OUT_OF_ORDER: "out of order",
                 UNKNOWN: "unknown"}


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
    source: str = ""                    # where the files were listed
    files: MigrationFiles | None = None  # that listing (set by build_report)
    _counts: dict | None = None
    _attention: list | None = None
    _to_apply: list | None = None
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
        for filename in suspicious_names(ordered):
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


class FileSource(Protocol):
    """What build_report needs from a platform driver (or a LocalFolder)."""

    def migrations_location(self) -> str: ...

    def migration_files(self) -> MigrationFiles: ...


def build_report(source: FileSource, conninfo: str | None, table: str, schema: str,
                 timeout: float = 5) -> Report:
    """Read both sides (the files and the applied rows), telling their errors
    apart.  The files are listed in a worker thread while the database
    answers.  The report keeps the listing it was built from (``files``, None
    when the files could not be listed), so that a file is read, or ``up``
    run, where the listing was taken."""
    files = applied = None
    source_error = database_error = None
    listing = _pool().submit(source.migration_files)
    if conninfo is None:
        database_error = "the managed database connection is not configured (HCAPADMIN_MANAGED_DATABASE_URL)"
    else:
        try:
            applied = read_applied(conninfo, table, schema, timeout=timeout)
        except OpsError as exc:
            database_error = str(exc)
    try:
        files = listing.result()
    except OpsError as exc:
        source_error = str(exc)
    report = _merge_memo(None if files is None else files.names, applied)
    location = files.location if files is not None else source.migrations_location()
    return replace(report, source_error=source_error, database_error=database_error, source=location, files=files)


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
