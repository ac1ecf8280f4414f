"""Query layer for the winston-mongodb log collections.

Plain Python on a pymongo ``Collection``; no Django.  Everything a person
types is validated here and only ever reaches MongoDB as a *value*: the text
filter is ``re.escape``d into a case-insensitive ``$regex``, ``meta.<key>``
keys must match ``KEY_RE`` (no ``$``, no empty parts), levels come from a
fixed list, and times are parsed into datetimes.  No user string is ever used
as a field name or operator except a validated meta key under one of the
configured metadata fields.

Metadata: winston-mongodb stores each log call's metadata under its
``metaKey`` option, ``metadata`` by default (HCAP keeps the default); older or
customised setups use ``meta``.  ``meta_keys`` (``HCAPADMIN_LOG_META_KEYS``,
default ``metadata,meta``) lists the fields to read, in order: an item's
``meta`` in the API is the first of them present in the document, and
``meta.<key>=value`` matches when that path under any of them holds the
value (one top-level ``$or`` with a branch per field; one field, no ``$or``).

Operators used (all supported by both MongoDB and FerretDB 1.24): ``$and``,
``$or``, ``$in``, ``$gte``, ``$lte``, ``$lt``, ``$not`` with ``$type``,
``$regex`` with ``$options: "i"``, and the aggregation stages ``$match`` +
``$group`` with ``$sum``.  FerretDB 1.24 implements neither ``$dateTrunc``
nor ``$bucket``; the histogram is per-bucket ``$match``/``$group`` counts on
MongoDB and one projected find bucketed in Python on FerretDB (see
``histogram_plan``).

Every query carries ``maxTimeMS`` and a hard ``limit``.
"""

from __future__ import annotations

import base64
import bisect
import csv
import dataclasses
import io
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import ASCENDING, DESCENDING
from pymongo import errors as mongo_errors

from ops.csvsafe import cell
from ops.errors import Invalid, OpsError, Timeout, Unavailable

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# winston's npm levels, most severe first.
LEVELS = ("error", "warn", "info", "http", "verbose", "debug", "silly")
PRESETS = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}
KEY_RE = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")
MAX_TEXT = 500          # characters in any text filter
MAX_META = 10           # meta.<key> pairs
# Fields a document's metadata may live under, in the order they are read.
META_KEYS = ("metadata", "meta")
MAX_LIMIT = 500
DEFAULT_LIMIT = 50
SORT_DESC = [("timestamp", DESCENDING), ("_id", DESCENDING)]
SORT_ASC = [("timestamp", ASCENDING), ("_id", ASCENDING)]
# Indexes the browser needs: (name, key spec).  On MongoDB each serves the
# rows' sort (timestamp, then _id) whole, after an optional level equality:
# a first or keyset page reads one index range and stops at the page's end.
# An index on timestamp alone would not: the _id tie-break would make every
# sorted query read all matching documents to sort them.  The histogram's
# per-bucket counts use the same indexes' (level,) timestamp prefix.
REQUIRED_INDEXES = (
    ("timestamp_-1__id_-1", [("timestamp", DESCENDING), ("_id", DESCENDING)]),
    ("level_1_timestamp_-1__id_-1", [("level", ASCENDING), ("timestamp", DESCENDING), ("_id", DESCENDING)]),
)
# Bucket widths the histogram may use, smallest first.
BUCKET_SIZES = (
    timedelta(seconds=10), timedelta(seconds=30), timedelta(minutes=1), timedelta(minutes=5),
    timedelta(minutes=10), timedelta(minutes=15), timedelta(minutes=30), timedelta(hours=1),
    timedelta(hours=2), timedelta(hours=3), timedelta(hours=6), timedelta(hours=12), timedelta(days=1),
    timedelta(days=2), timedelta(days=7),
)
MAX_BUCKETS = 30
# Time formats accepted for since/until (besides full ISO 8601 with an offset).
_LOCAL_FORMATS = ("%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%d %H:%M",
                  "%Y-%m-%d %H:%M:%S", "%Y-%m-%d")
# The instants a since/until may name (see parse_time).
TIME_MIN = datetime(1970, 1, 1, tzinfo=UTC)
TIME_MAX = datetime(9001, 1, 1, tzinfo=UTC)
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class LogFilterError(Invalid):
    """The filter, cursor or parameter is not acceptable (-> 400)."""


class LogQueryTimeout(Timeout):
    """The server stopped the query at maxTimeMS."""


class LogUnavailable(Unavailable):
    """The log database cannot be reached (or answered with an error)."""


# --- filters ------------------------------------------------------------------------
def check_text(value: str, what: str) -> str:
    """A text filter value: stripped, bounded, without control characters."""
    if not isinstance(value, str):
        raise LogFilterError(f"{what}: expected text")
    value = value.strip()
    if len(value) > MAX_TEXT:
        raise LogFilterError(f"{what}: at most {MAX_TEXT} characters")
    if _CONTROL_RE.search(value):
        raise LogFilterError(f"{what}: control characters are not allowed")
    return value


def parse_timezone(name: str | None, default: str = "UTC") -> ZoneInfo:
    name = (name or "").strip() or default
    if len(name) > 64 or not re.fullmatch(r"[A-Za-z0-9_+\-/]+", name) or ".." in name or name.startswith("/"):
        raise LogFilterError(f"tz: unknown time zone {name[:64]!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise LogFilterError(f"tz: unknown time zone {name!r}") from None


def parse_time(value: str, tz: ZoneInfo, what: str) -> datetime:
    """An absolute time: ISO 8601 with an offset (or Z) is taken as is; a
    local time without offset is in ``tz``.  A wall-clock time that does not
    exist in ``tz`` (skipped by a DST change) is refused; an ambiguous one
    (repeated by a DST change) means its first occurrence.

    Only ASCII digits are read (``datetime`` and ``strptime`` would also take
    Arabic-Indic or full-width ones), and the instant must lie in
    ``[TIME_MIN, TIME_MAX)``: far enough from both ends of Python's calendar
    that showing it in any zone, adding a histogram bucket or a day to it
    can never overflow (year 1 at +01:00 is before year 1 in UTC)."""
    text = value.strip()
    bad = LogFilterError(f"{what}: expected a date/time like 2026-03-08T14:30 (got {text[:40]!r})")
    if len(text) > 40 or not text.isascii() or not re.fullmatch(r"[0-9T:.+\-Zz ]+", text):
        raise bad
    parsed = None
    try:
        candidate = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        if candidate.tzinfo is not None:
            return _in_bounds(candidate.astimezone(UTC), what, text)
        parsed = candidate
    except (ValueError, OverflowError):
        pass
    if parsed is None:
        for fmt in _LOCAL_FORMATS:
            try:
                parsed = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
    if parsed is None or not TIME_MIN.year <= parsed.year < TIME_MAX.year:
        raise bad
    local = parsed.replace(tzinfo=tz, fold=0)
    back = local.astimezone(UTC).astimezone(tz)
    if back.replace(tzinfo=None) != parsed:
        raise LogFilterError(f"{what}: {text} does not exist in {tz.key} (clocks skip it for daylight saving time)")
    return _in_bounds(local.astimezone(UTC), what, text)


def _in_bounds(moment: datetime, what: str, text: str) -> datetime:
    if not TIME_MIN <= moment < TIME_MAX:
        raise LogFilterError(f"{what}: expected a time from {TIME_MIN.year} to {TIME_MAX.year - 1} (got {text[:40]!r})")
    return moment


@dataclass(frozen=True)
class LogFilter:
    since: datetime | None = None        # inclusive, aware UTC
    until: datetime | None = None        # exclusive, aware UTC
    levels: tuple[str, ...] = ()
    label: str = ""
    host: str = ""
    text: str = ""
    meta: tuple[tuple[str, str], ...] = ()
    range: str = ""                      # preset name, "custom", or "" (no time bound)
    tz: str = "UTC"
    meta_keys: tuple[str, ...] = META_KEYS
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    # MongoDB filter document.  Values only; keys are fixed or validated.
    # One flat document (implicit AND), never "$and": FerretDB 1.24 pushes
    # top-level equality conditions (level, label, hostname) down to
    # PostgreSQL only in that form.
    def to_query(self, *, with_time: bool = True) -> dict:
        query: dict = {}
        if with_time and (self.since or self.until):
            bound = {}
            if self.since:
                bound["$gte"] = self.since
            if self.until:
                bound["$lt"] = self.until
            query["timestamp"] = bound
        if len(self.levels) == 1:
            query["level"] = self.levels[0]
        elif self.levels:
            query["level"] = {"$in": list(self.levels)}
        if self.label:
            query["label"] = self.label
        if self.host:
            query["hostname"] = self.host
        if self.text:
            query["message"] = {"$regex": re.escape(self.text), "$options": "i"}
        if self.meta:
            branches = [{f"{field}.{key}": {"$in": meta_candidates(value)} for key, value in self.meta}
                        for field in self.meta_keys]
            if len(branches) == 1:
                query.update(branches[0])
            else:
                # A document keeps all its metadata under one field, so every
                # pair must match under the same one.
                query["$or"] = branches
        return query

    def params(self, *, with_time: bool = True) -> list[tuple[str, str]]:
        """The filter as query-string pairs (for shareable URLs)."""
        out: list[tuple[str, str]] = []
        if with_time:
            if self.range in PRESETS or self.range == "all":
                out.append(("range", self.range))
            elif self.range == "custom":
                tz = ZoneInfo(self.tz)
                if self.since:
                    out.append(("since", self.since.astimezone(tz).strftime("%Y-%m-%dT%H:%M:%S")))
                if self.until:
                    out.append(("until", self.until.astimezone(tz).strftime("%Y-%m-%dT%H:%M:%S")))
        out.extend(("level", lv) for lv in self.levels)
        if self.label:
            out.append(("label", self.label))
        if self.host:
            out.append(("host", self.host))
        if self.text:
            out.append(("q", self.text))
        out.extend(("meta." + k, v) for k, v in self.meta)
        if self.tz != "UTC" or self.range == "custom":
            out.append(("tz", self.tz))
        return out

    def describe(self) -> dict:
        """JSON-safe description (audit details)."""
        return {
            "since": iso(self.since) if self.since else None,
            "until": iso(self.until) if self.until else None,
            "range": self.range or None,
            "levels": list(self.levels),
            "label": self.label or None,
            "host": self.host or None,
            "q": self.text or None,
            "meta": {k: v for k, v in self.meta},
        }


def meta_candidates(value: str) -> list:
    """``meta.<key>=500`` matches the string "500" and the number 500;
    ``true``/``false`` also match the JSON boolean."""
    out: list = [value]
    if re.fullmatch(r"-?[0-9]{1,18}", value):
        out.append(int(value))
    elif re.fullmatch(r"-?[0-9]+\.[0-9]+", value) and len(value) < 30:
        out.append(float(value))
    elif value == "true":
        out.append(True)
    elif value == "false":
        out.append(False)
    return out


def make_filter(*, since: str = "", until: str = "", range: str = "", tz: str = "",
                levels: tuple[str, ...] | list[str] = (), label: str = "", host: str = "", text: str = "",
                meta: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (), tz_default: str = "UTC",
                now: datetime | None = None, default_range: str = "",
                meta_keys: tuple[str, ...] = META_KEYS) -> LogFilter:
    """Build a ``LogFilter`` from the values a person gave, each already
    picked out of the request (``levels``: the given ``level`` values, each
    possibly comma-separated; ``meta``: (key, value) pairs of
    ``meta.<key>=value``).  Bad values raise ``LogFilterError`` with a message
    fit for a 400."""
    now = now or datetime.now(UTC)
    zone = parse_timezone(check_text(tz, "tz"), tz_default)
    chosen: list[str] = []
    for raw in levels:
        if not isinstance(raw, str):
            raise LogFilterError("level: expected text")
        for part in raw.split(","):
            part = part.strip().lower()
            if not part:
                continue
            if part not in LEVELS:
                raise LogFilterError(f"level: expected one of {', '.join(LEVELS)}")
            if part not in chosen:
                chosen.append(part)
    chosen.sort(key=LEVELS.index)
    pairs: list[tuple[str, str]] = []
    for key, value in meta:
        if not isinstance(key, str) or not KEY_RE.fullmatch(key) or len(key) > 100:
            raise LogFilterError("meta key: letters, digits and _ separated by dots (no $), e.g. meta.req.status")
        value = check_text(value, "meta." + key)
        if value:
            pairs.append((key, value))
    if len(pairs) > MAX_META:
        raise LogFilterError(f"meta: at most {MAX_META} pairs")
    pairs.sort()
    since_text, until_text = check_text(since, "since"), check_text(until, "until")
    range_name = check_text(range, "range")
    since_at = until_at = None
    if since_text or until_text:
        since_at = parse_time(since_text, zone, "since") if since_text else None
        until_at = parse_time(until_text, zone, "until") if until_text else None
        if since_at and until_at and since_at >= until_at:
            raise LogFilterError("since must be before until")
        range_name = "custom"
    else:
        range_name = range_name or default_range
        if range_name in PRESETS:
            since_at = now - PRESETS[range_name]
        elif range_name not in ("", "all"):
            raise LogFilterError(f"range: expected one of {', '.join(PRESETS)}, all")
    return LogFilter(
        since=since_at, until=until_at, levels=tuple(chosen), label=check_text(label, "label"),
        host=check_text(host, "host"), text=check_text(text, "q"), meta=tuple(pairs), range=range_name,
        tz=zone.key, meta_keys=tuple(meta_keys),
    )


def parse_filter(params: dict[str, str | list[str]], **kwargs) -> LogFilter:
    """``make_filter`` from a plain dict of query-string names to a value or
    a list of values (scripts and benchmarks; requests go through
    ``hcapadmin.logbrowser.forms.LogFilterForm``)."""
    def one(name: str) -> str:
        value = params.get(name, "")
        values = value if isinstance(value, list) else [value]
        if len(set(values)) > 1:
            raise LogFilterError(f"{name}: give it once")
        return values[0] if values else ""

    level = params.get("level", [])
    meta = [(name[len("meta."):], one(name)) for name in params if name.startswith("meta.")]
    return make_filter(since=one("since"), until=one("until"), range=one("range"), tz=one("tz"),
                       levels=level if isinstance(level, list) else [level], label=one("label"),
                       host=one("host"), text=one("q"), meta=meta, **kwargs)


def parse_limit(value, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT) -> int:
    if value in (None, ""):
        return default
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]{1,6}", value.strip()):
        raise LogFilterError(f"limit: expected a whole number from 1 to {maximum}")
    number = int(value)
    if not 1 <= number <= maximum:
        raise LogFilterError(f"limit: expected a whole number from 1 to {maximum}")
    return number


# --- cursors ----------------------------------------------------------------------
# The listing is two segments, each in a fixed order: documents whose
# ``timestamp`` is a date, by (timestamp, _id) descending, then the few whose
# ``timestamp`` is missing, null or not a date (written by hand or by another
# tool), by ``_id`` descending.  MongoDB and FerretDB both sort dates above
# every other type in a descending sort, so the first segment is also what the
# server returns first.  A Position in the second segment has timestamp None.
@dataclass(frozen=True)
class Position:
    timestamp: datetime | None
    id: object


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(milliseconds=1)


CURSOR_EXPECTED = "cursor: not a cursor this portal issued (follow the links instead of editing them)"


def cursor_value(position: Position) -> str:
    """``position`` as URL-safe text.  Unsigned: the caller signs it (the
    view layer, with a salt naming its use) so clients cannot make one up."""
    ms = None if position.timestamp is None else _ms(position.timestamp)
    ident = position.id
    if isinstance(ident, ObjectId):
        kind, text = "o", str(ident)
    elif isinstance(ident, int) and not isinstance(ident, bool):
        kind, text = "i", str(ident)
    else:
        kind, text = "s", str(ident)
    return _b64(json.dumps([2, ms, kind, text], separators=(",", ":")).encode("utf-8"))


def position_from(value: str) -> Position:
    """The position ``cursor_value`` wrote (after its signature was
    checked); ``LogFilterError`` for anything else."""
    bad = LogFilterError(CURSOR_EXPECTED)
    if not isinstance(value, str) or len(value) > 300 or not re.fullmatch(r"[A-Za-z0-9_-]+", value):
        raise bad
    try:
        version, ms, kind, ident = json.loads(_unb64(value))
        if version != 2 or kind not in ("o", "s", "i") or not isinstance(ident, str):
            raise ValueError
        if not (isinstance(ms, int) or ms is None) or isinstance(ms, bool):
            raise ValueError
        ts = None if ms is None else EPOCH + timedelta(milliseconds=ms)
        value = ObjectId(ident) if kind == "o" else int(ident) if kind == "i" else ident
        return Position(ts, value)
    except (ValueError, TypeError, InvalidId, OverflowError):
        raise bad from None


def _dated(value) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None


def position_of(doc: dict) -> Position:
    """Where ``doc`` sits in the listing (any document, whatever its
    ``timestamp`` holds)."""
    return Position(_dated(doc.get("timestamp")), doc.get("_id"))


# --- errors ---------------------------------------------------------------------------
class _db_errors:
    """Translate pymongo errors into ops errors with messages for people."""

    def __init__(self, max_time_ms: int):
        self.max_time_ms = max_time_ms

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or not isinstance(exc, mongo_errors.PyMongoError):
            return False
        if isinstance(exc, mongo_errors.ExecutionTimeout) or (
            isinstance(exc, mongo_errors.OperationFailure) and exc.code == 50
        ):
            raise LogQueryTimeout(
                f"The log query took longer than {self.max_time_ms / 1000:g} s and was stopped. "
                "Narrow the time range (or add a level, label or host filter) and try again."
            ) from None
        if isinstance(exc, (mongo_errors.ServerSelectionTimeoutError, mongo_errors.ConnectionFailure,
                            mongo_errors.NetworkTimeout, mongo_errors.AutoReconnect)):
            raise LogUnavailable(
                "The log database (MongoDB) cannot be reached right now; the rest of the portal still works. "
                "Try again in a minute."
            ) from None
        raise LogUnavailable(f"The log database refused the query ({type(exc).__name__}).") from None


# --- documents ------------------------------------------------------------------------
def iso(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def jsonable(value):
    """BSON values -> JSON-safe values (ObjectId/str, datetime/ISO string)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    return str(value)


def _timestamp_text(ts) -> str | None:
    """The API's ``timestamp``: ISO 8601 for a date; a document written
    with something else there shows that value as text."""
    if isinstance(ts, datetime):
        return iso(ts)
    if ts is None or isinstance(ts, str):
        return ts
    return json.dumps(jsonable(ts), ensure_ascii=False)


def metadata_of(doc: dict, meta_keys: tuple[str, ...] = META_KEYS):
    """The document's metadata: the first of ``meta_keys`` it holds (None
    when it holds none)."""
    for field in meta_keys:
        value = doc.get(field)
        if value is not None:
            return value
    return None


def serialize(doc: dict, meta_keys: tuple[str, ...] = META_KEYS) -> dict:
    """A log document in the API's shape (``meta`` whichever field held it)."""
    ts = doc.get("timestamp")
    message = doc.get("message")
    if message is not None and not isinstance(message, str):
        message = json.dumps(jsonable(message), ensure_ascii=False)
    meta = metadata_of(doc, meta_keys)
    return {
        "id": str(doc.get("_id")),
        "timestamp": _timestamp_text(ts),
        "level": doc.get("level") if isinstance(doc.get("level"), str) else jsonable(doc.get("level")),
        "message": message,
        "meta": jsonable(meta) if meta is not None else None,
        "label": jsonable(doc.get("label")),
        "hostname": jsonable(doc.get("hostname")),
    }


# --- queries --------------------------------------------------------------------------------
@dataclass
class Page:
    items: list[dict]            # raw documents, newest first
    older: Position | None       # pass as before= for the next (older) page
    newer: Position | None       # pass as after= for the previous (newer) page
    at_newest: bool              # True when nothing newer than the first item matched at query time


# Documents whose ``timestamp`` is not a date (the listing's second segment).
UNDATED = {"timestamp": {"$not": {"$type": "date"}}}
# A bound every BSON date passes: turns "any timestamp" into "a dated one".
ANY_DATE = {"$gte": datetime(1, 1, 1, tzinfo=UTC)}
SORT_ID_DESC = [("_id", DESCENDING)]
SORT_ID_ASC = [("_id", ASCENDING)]


def _keyset(base: dict, position: Position, older: bool) -> dict:
    """``base`` narrowed to the documents at or beyond ``position``'s
    timestamp, as one flat range on ``timestamp`` (cheap on FerretDB, an
    index range on MongoDB).  The few documents sharing that exact
    millisecond are told apart by ``_id`` afterwards (``_beyond``)."""
    query = dict(base)
    bound = dict(query.get("timestamp") or {})
    t = position.timestamp
    if older:
        bound["$lte"] = min(bound["$lte"], t) if "$lte" in bound else t
    else:
        bound["$gte"] = max(bound["$gte"], t) if "$gte" in bound else t
    query["timestamp"] = bound
    return query


def _id_key(value):
    # _id values in BSON's cross-type order (numbers < strings < ObjectIds),
    # which is the order the server sorts them in.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, float(value), "")
    if isinstance(value, str):
        return (2, 0.0, value)
    if isinstance(value, ObjectId):
        return (7, 0.0, value.binary.hex())
    return (9, 0.0, str(value))


def _beyond(doc: dict, position: Position, older: bool) -> bool:
    if position.timestamp is not None:
        ts = _dated(doc.get("timestamp"))
        if ts != position.timestamp:
            return True  # the query already holds it strictly beyond
    a, b = _id_key(doc.get("_id")), _id_key(position.id)
    return a < b if older else a > b


def _scan_beyond(collection, query: dict, sort, position: Position, *, older: bool, want: int,
                 max_time_ms: int) -> list[dict]:
    extra = 64  # room for documents sharing the cursor's millisecond (or all undated ones)
    while True:
        fetch = want + extra
        raw = list(collection.find(query, sort=sort, limit=fetch, max_time_ms=max_time_ms))
        docs = [d for d in raw if _beyond(d, position, older)]
        if len(docs) >= want or len(raw) < fetch or extra >= 1_000_000:
            return docs[:want]
        extra *= 16


def _find_beyond(collection, base: dict, position: Position, *, older: bool, want: int, max_time_ms: int,
                 undated: bool = False) -> list[dict]:
    """Up to ``want`` documents strictly beyond ``position`` in the listing
    order (older: the listing's order; newer: its reverse), crossing from one
    segment into the other when ``undated`` (the filter has no time bound,
    so undated documents can match)."""
    if position.timestamp is not None:
        query = _keyset(base, position, older)
        docs = _scan_beyond(collection, query, SORT_DESC if older else SORT_ASC, position, older=older,
                            want=want, max_time_ms=max_time_ms)
        if older and undated and len(docs) < want:
            docs += list(collection.find(_combine(base, UNDATED), sort=SORT_ID_DESC, limit=want - len(docs),
                                         max_time_ms=max_time_ms))
        return docs
    query = _combine(base, UNDATED)
    docs = _scan_beyond(collection, query, SORT_ID_DESC if older else SORT_ID_ASC, position, older=older,
                        want=want, max_time_ms=max_time_ms)
    if not older and len(docs) < want:
        docs += list(collection.find(_combine(base, {"timestamp": ANY_DATE}), sort=SORT_ASC,
                                     limit=want - len(docs), max_time_ms=max_time_ms))
    return docs


def _first(collection, base: dict, *, want: int, max_time_ms: int, undated: bool) -> list[dict]:
    """The first ``want`` documents of the listing, newest first."""
    docs = list(collection.find(base, sort=SORT_DESC, limit=want, max_time_ms=max_time_ms))
    if not undated:
        return docs
    # The server sorts dates first; any undated documents after them are
    # fetched again in the listing's own order for them (by _id).
    docs = [d for d in docs if _dated(d.get("timestamp")) is not None]
    if len(docs) < want:
        docs += list(collection.find(_combine(base, UNDATED), sort=SORT_ID_DESC, limit=want - len(docs),
                                     max_time_ms=max_time_ms))
    return docs


def _combine(*queries: dict) -> dict:
    """AND of filter documents: merged flat when their keys are distinct
    (keeps FerretDB's pushdown), else ``$and``."""
    parts = [q for q in queries if q]
    merged: dict = {}
    for part in parts:
        if set(part) & set(merged):
            return {"$and": parts}
        merged.update(part)
    return merged


def fetch_page(collection, flt: LogFilter, *, before: Position | None = None, after: Position | None = None,
               limit: int = DEFAULT_LIMIT, max_time_ms: int = 5000) -> Page:
    """One page, newest first, keyset-paginated on (timestamp desc, _id desc).
    ``before``: documents strictly older than that position; ``after``:
    strictly newer (the page just above, still newest first)."""
    if before is not None and after is not None:
        raise LogFilterError("give before or after, not both")
    limit = max(1, min(int(limit), MAX_LIMIT))
    base = flt.to_query()
    undated = "timestamp" not in base
    with _db_errors(max_time_ms):
        if after is not None:
            docs = _find_beyond(collection, base, after, older=False, want=limit + 1, max_time_ms=max_time_ms,
                                undated=undated)
            more_newer = len(docs) > limit
            docs = list(reversed(docs[:limit]))
            return Page(
                items=docs,
                older=position_of(docs[-1]) if docs else after,
                newer=position_of(docs[0]) if docs and more_newer else None,
                at_newest=not more_newer,
            )
        if before is not None:
            docs = _find_beyond(collection, base, before, older=True, want=limit + 1, max_time_ms=max_time_ms,
                                undated=undated)
        else:
            docs = _first(collection, base, want=limit + 1, max_time_ms=max_time_ms, undated=undated)
    more_older = len(docs) > limit
    docs = docs[:limit]
    return Page(
        items=docs,
        older=position_of(docs[-1]) if docs and more_older else None,
        newer=position_of(docs[0]) if docs and before is not None else None,
        at_newest=before is None,
    )


def fetch_newer(collection, flt: LogFilter, after: Position | None, *, limit: int = 200,
                max_time_ms: int = 5000) -> list[dict]:
    """Follow mode: matching documents newer than ``after`` (newest first),
    ignoring ``until`` so new arrivals show up."""
    base = dataclasses.replace(flt, until=None).to_query()
    undated = "timestamp" not in base
    with _db_errors(max_time_ms):
        if after is None:
            return _first(collection, base, want=limit, max_time_ms=max_time_ms, undated=undated)
        docs = _find_beyond(collection, base, after, older=False, want=limit, max_time_ms=max_time_ms,
                            undated=undated)
    return list(reversed(docs))


def find_document(collection, doc_id: str, *, max_time_ms: int = 5000) -> dict | None:
    if not isinstance(doc_id, str) or len(doc_id) > 200:
        return None
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in doc_id):
        return None  # no stored _id holds control characters (and FerretDB refuses NUL in queries)
    candidates: list = [doc_id]
    if re.fullmatch(r"[0-9a-f]{24}", doc_id):
        candidates.insert(0, ObjectId(doc_id))
    with _db_errors(max_time_ms):
        for ident in candidates:
            doc = collection.find_one({"_id": ident}, max_time_ms=max_time_ms)
            if doc is not None:
                return doc
    return None


# --- histogram ------------------------------------------------------------------------
@dataclass
class Bucket:
    start: datetime
    end: datetime
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def bucket_size(span: timedelta, max_buckets: int = MAX_BUCKETS) -> timedelta:
    for size in BUCKET_SIZES:
        if span / size <= max_buckets:
            return size
    return span / max_buckets


def bucket_edges(since: datetime, until: datetime, max_buckets: int = MAX_BUCKETS) -> list[tuple[datetime, datetime]]:
    size = bucket_size(until - since, max_buckets)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    # Align to whole multiples of the size (UTC) so bars are stable between reloads.
    start = epoch + ((since - epoch) // size) * size
    edges = []
    while start < until and len(edges) < max_buckets + 1:
        end = start + size
        edges.append((max(start, since), min(end, until)))
        start = end
    return edges


# How the histogram counts, by server.  MongoDB counts each bucket with an
# index range scan on ``timestamp`` (or ``level``+``timestamp``), so one small
# aggregation per bucket is cheap there and nothing but counts crosses the
# wire.  FerretDB 1.x cannot count a range with an index: every range query
# reads the whole collection, so per-bucket counting costs one full read per
# bucket (30 of them).  There one find fetches only ``timestamp`` and
# ``level`` of the matching documents and Python buckets them: one read.
MONGODB, FERRETDB = "mongodb", "ferretdb"


def server_kind(database) -> str:
    """``ferretdb`` when the server is FerretDB (its ``buildInfo`` carries a
    ``ferretdbVersion`` key), else ``mongodb``."""
    with _db_errors(5000):
        info = database.command("buildInfo")
    return FERRETDB if "ferretdbVersion" in info or "ferretdb" in info else MONGODB


@dataclass(frozen=True)
class HistogramPlan:
    """The histogram's queries as data: ``edges`` are the buckets; each
    query is ``{"op": "aggregate", "pipeline", "hint"}`` (one per bucket) or
    ``{"op": "find", "filter", "projection", "sort", "hint"}`` (one in all)."""
    server: str
    edges: list[tuple[datetime, datetime]]
    queries: list[dict]


def histogram_plan(flt: LogFilter, *, now: datetime | None = None, server: str = MONGODB,
                   max_buckets: int = MAX_BUCKETS) -> HistogramPlan:
    since = flt.since
    until = flt.until or (now or datetime.now(UTC))
    if since is None:
        raise LogFilterError("the histogram needs a time range")
    base = flt.to_query(with_time=False)
    edges = bucket_edges(since, until, max_buckets) if since < until else []
    if server == FERRETDB:
        queries = [{"op": "find", "filter": _combine({"timestamp": {"$gte": since, "$lt": until}}, base),
                    "projection": {"_id": 0, "timestamp": 1, "level": 1}, "sort": None, "hint": None}] if edges else []
    else:
        # No hint: with the indexes the planner takes the timestamp range; without
        # them a hint would be an error instead of a slower scan.
        queries = [{"op": "aggregate", "hint": None, "pipeline": [
            {"$match": _combine({"timestamp": {"$gte": start, "$lt": end}}, base)},
            {"$group": {"_id": "$level", "n": {"$sum": 1}}},
        ]} for start, end in edges]
    return HistogramPlan(server, edges, queries)


def _level_name(value) -> str:
    return value if isinstance(value, str) else str(value)


def run_histogram(collection, plan: HistogramPlan, *, max_time_ms: int = 5000) -> list[Bucket]:
    """Execute ``plan`` within one ``max_time_ms`` budget."""
    deadline = time.monotonic() + max_time_ms / 1000

    def remaining() -> int:
        left = int((deadline - time.monotonic()) * 1000)
        if left <= 0:
            raise mongo_errors.ExecutionTimeout("histogram budget exhausted")
        return left

    buckets = [Bucket(start, end, {}) for start, end in plan.edges]
    starts = [b.start for b in buckets]
    with _db_errors(max_time_ms):
        for i, query in enumerate(plan.queries):
            if query["op"] == "aggregate":
                kwargs = {"maxTimeMS": remaining()}
                if query["hint"]:
                    kwargs["hint"] = query["hint"]
                for row in collection.aggregate(query["pipeline"], **kwargs):
                    level = _level_name(row["_id"])
                    buckets[i].counts[level] = buckets[i].counts.get(level, 0) + int(row["n"])
                continue
            kwargs = {"projection": query["projection"], "max_time_ms": remaining(), "batch_size": 10_000}
            if query["sort"]:
                kwargs["sort"] = query["sort"]
            if query["hint"]:
                kwargs["hint"] = query["hint"]
            for n, doc in enumerate(collection.find(query["filter"], **kwargs), 1):
                ts = _dated(doc.get("timestamp"))
                at = bisect.bisect_right(starts, ts) - 1 if ts is not None else -1
                if 0 <= at < len(buckets) and ts < buckets[at].end:
                    level = _level_name(doc.get("level"))
                    buckets[at].counts[level] = buckets[at].counts.get(level, 0) + 1
                if n % 10_000 == 0:
                    remaining()
    return buckets


def histogram(collection, flt: LogFilter, *, now: datetime | None = None, max_time_ms: int = 5000,
              max_buckets: int = MAX_BUCKETS, server: str | None = None) -> list[Bucket]:
    """Documents per time bucket, by level, for the filter (see
    ``histogram_plan``); ``server`` is asked for when not given."""
    server = server or server_kind(collection.database)
    plan = histogram_plan(flt, now=now, server=server, max_buckets=max_buckets)
    return run_histogram(collection, plan, max_time_ms=max_time_ms)


# --- export ----------------------------------------------------------------------------------
CSV_COLUMNS = ("timestamp", "level", "label", "hostname", "message", "meta", "id")
def export_chunks(collection, flt: LogFilter, *, fmt: str, limit: int, max_time_ms: int,
                  batch_size: int = 1000) -> Iterator[str]:
    """Yield the export as text chunks (one batch of documents each), newest
    first, at most ``limit`` documents.  The first ``next()`` runs the query,
    so callers can catch errors before they start a response."""
    if fmt not in ("ndjson", "csv"):
        raise LogFilterError("format: expected ndjson or csv")
    query = flt.to_query()
    with _db_errors(max_time_ms):
        cursor = collection.find(query, sort=SORT_DESC, limit=limit, max_time_ms=max_time_ms,
                                 batch_size=batch_size)
        try:
            first = next(cursor)
        except StopIteration:
            first = None
    return _export_iter(cursor, first, fmt, max_time_ms, batch_size, flt.meta_keys)


def _export_iter(cursor, first, fmt, max_time_ms, batch_size, meta_keys):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n") if fmt == "csv" else None
    if writer is not None:
        writer.writerow(CSV_COLUMNS)

    def emit(doc):
        item = serialize(doc, meta_keys)
        if writer is None:
            buffer.write(json.dumps(item, ensure_ascii=False, separators=(",", ":")))
            buffer.write("\n")
        else:
            writer.writerow([cell(item[c]) for c in CSV_COLUMNS])

    if first is not None:
        emit(first)
    count = 1 if first is not None else 0
    with _db_errors(max_time_ms):
        try:
            if first is not None:
                for doc in cursor:
                    emit(doc)
                    count += 1
                    if count % batch_size == 0:
                        yield buffer.getvalue()
                        buffer.seek(0)
                        buffer.truncate()
        finally:
            cursor.close()
    tail = buffer.getvalue()
    if tail:
        yield tail


# --- indexes -------------------------------------------------------------------------------
def index_status(collection, *, max_time_ms: int = 5000) -> list[dict]:
    """[{name, keys, present}] for each index the browser needs."""
    with _db_errors(max_time_ms):
        existing = [list(info.get("key", {}).items()) for info in collection.list_indexes()]
    out = []
    for name, spec in REQUIRED_INDEXES:
        wanted = [(k, int(d)) for k, d in spec]
        present = any([(k, int(d)) for k, d in keys] == wanted for keys in existing)
        out.append({"name": name, "keys": spec, "present": present})
    return out


def meta_key_usage(collection, meta_keys: tuple[str, ...] = META_KEYS, *, max_time_ms: int = 5000) -> dict[str, bool]:
    """{field: whether any document holds it} for each configured metadata
    field.  Metadata filters are never index-backed (the timestamp or
    level+timestamp index bounds the documents they are checked on); each
    field that no document uses only adds a branch to every such filter."""
    out = {}
    with _db_errors(max_time_ms):
        for field in meta_keys:
            out[field] = collection.find_one({field: {"$exists": True}}, projection={"_id": 1},
                                             max_time_ms=max_time_ms) is not None
    return out


def missing_indexes(collection, **kwargs) -> list[str]:
    return [row["name"] for row in index_status(collection, **kwargs) if not row["present"]]


def ensure_indexes(collection) -> list[str]:
    """Create the missing indexes; returns the names created."""
    created = []
    with _db_errors(60_000):
        for row in index_status(collection):
            if not row["present"]:
                collection.create_index(row["keys"], name=row["name"])
                created.append(row["name"])
    return created


__all__ = [
    "LEVELS", "PRESETS", "KEY_RE", "LogFilter", "LogFilterError", "LogQueryTimeout", "LogUnavailable", "OpsError",
    "Page", "Position", "Bucket", "make_filter", "parse_filter", "parse_limit", "parse_timezone", "parse_time", "check_text",
    "cursor_value", "position_from", "CURSOR_EXPECTED", "fetch_page", "fetch_newer", "find_document", "histogram", "histogram_plan", "run_histogram",
    "server_kind", "HistogramPlan", "MONGODB", "FERRETDB", "bucket_edges", "export_chunks",
    "serialize", "metadata_of", "meta_key_usage", "META_KEYS", "iso", "index_status", "missing_indexes", "ensure_indexes", "CSV_COLUMNS",
]
