"""Filters and keyset pagination for the audit review page, its exports and
GET /api/v1/audit.  Bad filter values raise FilterError (-> 400)."""

from __future__ import annotations

from dataclasses import dataclass, field
import re
from datetime import datetime, time, timedelta
from datetime import timezone as dt_timezone

from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from hcapadmin.audit.models import OUTCOMES, AuditEvent

PAGE_SIZE = 50
MAX_LIMIT = 500
TEXT_FILTERS = {"actor": 255, "action": 100, "target": 500}
KNOWN = {"actor", "action", "target", "outcome", "since", "until", "before", "limit", "format"}


class FilterError(ValueError):
    pass


@dataclass
class Filters:
    actor: str = ""
    action: str = ""
    target: str = ""
    outcome: str = ""
    since: datetime | None = None
    until: datetime | None = None
    raw: dict = field(default_factory=dict)  # the cleaned values, as strings, for links

    def queryset(self):
        qs = AuditEvent.objects.all()
        if self.actor:
            qs = qs.filter(actor=self.actor)
        if self.action:
            qs = qs.filter(action=self.action)
        if self.target:
            qs = qs.filter(target=self.target)
        if self.outcome:
            qs = qs.filter(outcome=self.outcome)
        if self.since:
            qs = qs.filter(created_at__gte=self.since)
        if self.until:
            qs = qs.filter(created_at__lt=self.until)
        return qs.order_by("-id")

    def as_details(self) -> dict:
        return dict(self.raw)


_DATE_ONLY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# PostgreSQL's timestamptz holds these and Python's datetime arithmetic stays
# in range; a bound outside them is clamped (it matches everything or nothing).
_EARLIEST = datetime(1, 1, 2, tzinfo=dt_timezone.utc)
_LATEST = datetime(9999, 12, 30, tzinfo=dt_timezone.utc)


def _when(name: str, value: str, end: bool) -> datetime:
    """A date or date-time in the local time zone (or with its own offset),
    as an aware UTC datetime.  A date alone as the end of a range includes
    that whole day.  Only ASCII digits count (``isdigit`` and ``\\d`` accept
    other scripts' digits too)."""
    expected = f"{name}: expected a date (YYYY-MM-DD) or date and time (YYYY-MM-DDTHH:MM)"
    value = value.strip()
    if not value.isascii():
        raise FilterError(expected)
    try:
        if _DATE_ONLY.fullmatch(value):
            day = parse_date(value)
            parsed = datetime.combine(day, time.min) if day is not None else None
            whole_day = end
        else:
            parsed = parse_datetime(value)
            whole_day = False
    except (ValueError, OverflowError):  # well-formed but not a real date or offset
        parsed = None
    if parsed is None:
        raise FilterError(expected)
    try:
        if timezone.is_naive(parsed):
            parsed = timezone.make_aware(parsed)
        parsed = parsed.astimezone(dt_timezone.utc)
        if whole_day:  # "until 2026-11-25" includes that whole day
            parsed += timedelta(days=1)
    except (OverflowError, ValueError):
        # beyond year 1 or 9999 once converted to UTC
        parsed = _EARLIEST if parsed.year < 5000 else _LATEST
    return min(max(parsed, _EARLIEST), _LATEST)


def parse_filters(params) -> Filters:
    f = Filters()
    for name, limit in TEXT_FILTERS.items():
        value = (params.get(name) or "").strip()
        if len(value) > limit:
            raise FilterError(f"{name}: at most {limit} characters")
        if "\x00" in value:
            raise FilterError(f"{name}: contains a NUL character")
        setattr(f, name, value)
        if value:
            f.raw[name] = value
    outcome = (params.get("outcome") or "").strip()
    if outcome and outcome not in OUTCOMES:
        raise FilterError(f"outcome: expected one of {', '.join(OUTCOMES)}")
    f.outcome = outcome
    if outcome:
        f.raw["outcome"] = outcome
    for name, end in (("since", False), ("until", True)):
        value = (params.get(name) or "").strip()
        if value:
            if len(value) > 40:
                raise FilterError(f"{name}: too long")
            setattr(f, name, _when(name, value, end))
            f.raw[name] = value
    if f.since and f.until and f.since >= f.until:
        raise FilterError("since: must be before until")
    return f


# Largest id PostgreSQL's bigint holds.
MAX_ID = 2**63 - 1
_ASCII_INT = re.compile(r"[0-9]{1,20}")


def _ascii_int(value: str) -> int | None:
    # str.isdigit() and int() also accept other scripts' digits ("²", "٣").
    return int(value) if _ASCII_INT.fullmatch(value) else None


def parse_before(params) -> int | None:
    value = (params.get("before") or "").strip()
    if not value:
        return None
    number = _ascii_int(value)
    if number is None or not 1 <= number <= MAX_ID:
        raise FilterError("before: expected the positive integer cursor from a previous page")
    return number


def parse_limit(params, default: int = PAGE_SIZE) -> int:
    value = (params.get("limit") or "").strip()
    if not value:
        return default
    number = _ascii_int(value)
    if number is None or not 1 <= number <= MAX_LIMIT:
        raise FilterError(f"limit: expected an integer from 1 to {MAX_LIMIT}")
    return number


def page(filters: Filters, before: int | None, limit: int) -> tuple[list[AuditEvent], int | None]:
    """Newest first; ``before`` is the id cursor.  One index range scan of
    limit+1 rows, however deep the page."""
    qs = filters.queryset()
    if before is not None:
        qs = qs.filter(id__lt=before)
    rows = list(qs[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more and rows else None)


def newest_id() -> int | None:
    return AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()


def iter_filtered(filters: Filters, upto: int | None, chunk: int = 2000):
    """Every matching event with id <= ``upto``, newest first, in keyset
    chunks (constant memory; no long-running transaction).  Bounding by the
    newest id when the export started keeps later events out of it."""
    qs = filters.queryset()
    top = upto
    if top is None:
        return
    cursor = top + 1
    while True:
        rows = list(qs.filter(id__lt=cursor)[:chunk])
        if not rows:
            return
        yield from rows
        cursor = rows[-1].id
        if len(rows) < chunk:
            return


def event_dict(e: AuditEvent) -> dict:
    return {
        "id": e.id,
        "created_at": e.created_at.isoformat(),
        "actor": e.actor,
        "actor_groups": e.actor_groups,
        "source_ip": e.source_ip,
        "user_agent": e.user_agent,
        "action": e.action,
        "target": e.target,
        "outcome": e.outcome,
        "details": e.details,
        "prev_hash": e.prev_hash,
        "hash": e.hash,
    }
