"""Filters and keyset pagination for the audit review page, its exports and
GET /api/v1/audit.  The query string is read by
``hcapadmin.audit.forms.AuditFiltersForm`` (shared by the page, the exports
and the API); this module holds what the form's fields mean (``when`` for
dates, signed cursors) and the queries.  Bad values raise FilterError
(-> 400)."""

from __future__ import annotations

from dataclasses import dataclass, field
import re
from datetime import datetime, time, timedelta
from datetime import timezone as dt_timezone

from django.core import signing
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from hcapadmin.audit.models import AuditEvent
from ops.errors import Invalid

PAGE_SIZE = 50
MAX_LIMIT = 500
TEXT_FILTERS = {"actor": 255, "action": 100, "target": 500}


class FilterError(Invalid, ValueError):
    """A filter or cursor value is not acceptable (-> 400)."""


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
WHEN_EXPECTED = "expected a date (YYYY-MM-DD) or date and time (YYYY-MM-DDTHH:MM)"
WHEN_MAX_LENGTH = 40


def when(value: str, end: bool) -> datetime:
    """A date or date-time in the local time zone (or with its own offset),
    as an aware UTC datetime.  A date alone as the end of a range includes
    that whole day.  Only ASCII digits count (``isdigit`` and ``\\d`` accept
    other scripts' digits too).  Raises FilterError(WHEN_EXPECTED)."""
    value = value.strip()
    if len(value) > WHEN_MAX_LENGTH:
        raise FilterError("too long")
    if not value.isascii():
        raise FilterError(WHEN_EXPECTED)
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
        raise FilterError(WHEN_EXPECTED)
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
    """The filters in ``params`` (a dict or QueryDict), through the same form
    as the page and the API; FilterError with the form's message otherwise."""
    from hcapadmin.audit.forms import AuditFiltersForm

    form = AuditFiltersForm(params)
    if not form.is_valid():
        raise FilterError(form.message())
    return form.filters()


# Largest id PostgreSQL's bigint holds.
MAX_ID = 2**63 - 1

# The "before" cursor is the id of the last event on a page, signed so that a
# client follows the links the portal gave it rather than making up ids.
# The salt keeps these signatures apart from every other use of SECRET_KEY.
_CURSOR_SALT = "hcapadmin.audit.cursor"
CURSOR_EXPECTED = "expected the cursor from a previous page (follow the links instead of editing them)"


def sign_cursor(event_id: int) -> str:
    return signing.Signer(salt=_CURSOR_SALT).sign(str(event_id))


def read_cursor(token: str) -> int:
    """The id in a cursor ``sign_cursor`` made; FilterError otherwise."""
    try:
        value = signing.Signer(salt=_CURSOR_SALT).unsign(token.strip())
    except signing.BadSignature:
        raise FilterError(CURSOR_EXPECTED) from None
    number = int(value) if _ASCII_INT.fullmatch(value) else None
    if number is None or not 1 <= number <= MAX_ID:
        raise FilterError(CURSOR_EXPECTED)
    return number


_ASCII_INT = re.compile(r"[0-9]{1,20}")


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
