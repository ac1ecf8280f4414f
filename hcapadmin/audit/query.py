"""Filters and keyset pagination for the audit review page, its exports and
GET /api/v1/audit.  Bad filter values raise FilterError (-> 400)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta

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


def _when(name: str, value: str, end: bool) -> datetime:
    value = value.strip()
    try:
        parsed = parse_datetime(value)
    except ValueError:
        parsed = None
    if parsed is None:
        try:
            day = parse_date(value)
        except ValueError:
            day = None
        if day is None:
            raise FilterError(f"{name}: expected a date (YYYY-MM-DD) or date and time (YYYY-MM-DDTHH:MM)")
        parsed = datetime.combine(day, time.min)
        if end:  # "until 2026-11-25" includes that whole day
            parsed += timedelta(days=1)
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed)
    return parsed


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


def parse_before(params) -> int | None:
    value = (params.get("before") or "").strip()
    if not value:
        return None
    if not value.isdigit() or len(value) > 19 or int(value) < 1:
        raise FilterError("before: expected the positive integer cursor from a previous page")
    return int(value)


def parse_limit(params, default: int = PAGE_SIZE) -> int:
    value = (params.get("limit") or "").strip()
    if not value:
        return default
    if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise FilterError(f"limit: expected an integer from 1 to {MAX_LIMIT}")
    return int(value)


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
