"""Verifying the hash chain, in chunks with constant memory.

``verify_chain()`` walks events in id order (keyset, ``chunk`` rows at a
time, raw tuples rather than model instances) and stops at the first event
whose ``prev_hash`` is not the previous event's hash (an event was removed,
inserted or reordered) or whose hash does not match its content (altered).

``badge_status()`` is what the review page shows: it verifies only the
events added since the checkpoint (at most ``budget`` per call), after
re-checking the checkpoint event itself, so the page's work is bounded.
``manage.py audit_verify`` re-verifies the whole chain and resets the
checkpoint; run it on a schedule to catch edits to old events.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from django.db import connection, transaction
from django.utils import timezone

from hcapadmin.audit.models import GENESIS_HASH, AuditCheckpoint, AuditEvent, canonical, chain_hash

TABLE = AuditEvent._meta.db_table
# created_at formatted by PostgreSQL exactly as models.utc_iso() formats it
# (cheaper than building datetimes only to format them again); JSON as text.
COLUMNS = ("id, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"'), actor, "
           "actor_groups::text, host(source_ip), user_agent, action, target, outcome, details::text, prev_hash, hash")
_loads = json.JSONDecoder().decode
BADGE_LOCK_KEY = 0x48434150_43484B50 & 0x7FFFFFFFFFFFFFFF  # "HCAPCHKP"


@dataclass
class VerifyResult:
    ok: bool
    count: int            # events verified in this run
    last_id: int          # last good event id (0 when none)
    last_hash: str
    complete: bool = True  # False when stopped by a limit before the end
    bad_id: int | None = None
    reason: str = ""


def _json(value):
    return _loads(value) if isinstance(value, str) else value


def _row_hash(row) -> str:
    (_id, created_at, actor, groups, ip, agent, action, target, outcome, details, prev_hash, _hash) = row
    text = canonical(created_at, actor, _json(groups), ip, agent, action, target, outcome, _json(details))
    return chain_hash(prev_hash, text)


def _anchor_ok(after_id: int, prev_hash: str) -> tuple[bool, str]:
    with connection.cursor() as cur:
        cur.execute(f"SELECT {COLUMNS} FROM {TABLE} WHERE id = %s", [after_id])
        row = cur.fetchone()
    if row is None:
        return False, f"checkpoint event #{after_id} is missing"
    if row[11] != prev_hash or _row_hash(row) != prev_hash:
        return False, f"checkpoint event #{after_id} was altered"
    return True, ""


def verify_chain(after_id: int = 0, prev_hash: str = GENESIS_HASH, *, chunk: int = 5000,
                 limit: int | None = None, progress=None) -> VerifyResult:
    if after_id:
        ok, reason = _anchor_ok(after_id, prev_hash)
        if not ok:
            return VerifyResult(False, 0, 0, GENESIS_HASH, bad_id=after_id, reason=reason)
    count, last_id, expected = 0, after_id, prev_hash
    while True:
        size = chunk if limit is None else min(chunk, limit - count)
        if size <= 0:
            with connection.cursor() as cur:
                cur.execute(f"SELECT EXISTS (SELECT 1 FROM {TABLE} WHERE id > %s)", [last_id])
                more = cur.fetchone()[0]
            return VerifyResult(True, count, last_id, expected, complete=not more)
        with connection.cursor() as cur:
            cur.execute(f"SELECT {COLUMNS} FROM {TABLE} WHERE id > %s ORDER BY id LIMIT %s", [last_id, size])
            rows = cur.fetchall()
        if not rows:
            return VerifyResult(True, count, last_id, expected)
        for row in rows:
            if row[10] != expected:
                return VerifyResult(False, count, last_id, expected, bad_id=row[0],
                                    reason="its previous-hash does not match the event before it "
                                           "(an event was removed, inserted or reordered)")
            if _row_hash(row) != row[11]:
                return VerifyResult(False, count, last_id, expected, bad_id=row[0],
                                    reason="its content does not match its hash (the event was altered)")
            expected = row[11]
            last_id = row[0]
            count += 1
        if progress is not None:
            progress(count, last_id)
        del rows


def save_full_result(result: VerifyResult) -> None:
    now = timezone.now()
    with transaction.atomic():
        with connection.cursor() as cur:  # not while a page view is moving the checkpoint
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [BADGE_LOCK_KEY])
        AuditCheckpoint.objects.update_or_create(pk=1, defaults={
            "last_id": result.last_id, "last_hash": result.last_hash, "events": result.count, "ok": result.ok,
            "bad_id": result.bad_id, "reason": result.reason[:300], "checked_at": now, "full_checked_at": now,
        })


def badge_status(budget: int = 20000) -> dict:
    """Verify the events after the checkpoint, at most ``budget`` of them."""
    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_xact_lock(%s)", [BADGE_LOCK_KEY])
            got_lock = cur.fetchone()[0]
        cp = AuditCheckpoint.objects.filter(pk=1).first()
        if cp is None:
            cp = AuditCheckpoint(pk=1)
        if got_lock and cp.ok:
            result = verify_chain(cp.last_id, cp.last_hash, limit=budget)
            cp.checked_at = timezone.now()
            if result.ok:
                cp.last_id, cp.last_hash = result.last_id, result.last_hash
                cp.events += result.count
            else:
                cp.ok, cp.bad_id, cp.reason = False, result.bad_id, result.reason[:300]
            cp.save()
        with connection.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM (SELECT 1 FROM {TABLE} WHERE id > %s LIMIT %s) t",
                        [cp.last_id, budget + 1])
            pending = cur.fetchone()[0]
    if not cp.ok:
        state = "failed"
    elif pending:
        state = "partial"
    else:
        state = "ok"
    return {"state": state, "verified_through": cp.last_id, "pending": pending, "pending_more": pending > budget,
            "bad_id": cp.bad_id, "reason": cp.reason, "checked_at": cp.checked_at,
            "full_checked_at": cp.full_checked_at}
