"""Verifying the hash chain, in chunks with constant memory.

``verify_chain()`` walks events in id order (keyset, ``chunk`` rows at a
time, raw tuples rather than model instances) and stops at the first event
whose ``prev_hash`` is not the previous event's hash (an event was removed,
inserted or reordered), whose hash does not match its content under its
key (altered, or re-hashed by someone without the key), whose key id names
no configured key, or that is ``unkeyed`` after a keyed event.

``verify_full()`` is ``manage.py audit_verify``: the whole chain, checked
against the checkpoint too.  The checkpoint records how far the chain was
known to verify (event id, hash, number of events) and is signed with the
audit key; a chain that no longer reaches it was shortened (its newest
events deleted), and the checkpoint is never moved back to fit it.

``badge_status()`` is what the review page shows: it verifies only the
events added since the checkpoint (at most ``budget`` per call), after
re-checking the checkpoint event itself, so the page's work is bounded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from django.db import connection, transaction
from django.utils import timezone

from hcapadmin.audit.keys import UNKEYED
from hcapadmin.audit.models import GENESIS_HASH, AuditCheckpoint, AuditEvent, audit_keys, event_hash

TABLE = AuditEvent._meta.db_table
# created_at formatted by PostgreSQL exactly as models.utc_iso() formats it
# (cheaper than building datetimes only to format them again); JSON as text.
COLUMNS = ("id, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"'), actor, "
           "actor_groups::text, host(source_ip), user_agent, action, target, outcome, details::text, prev_hash, hash, "
           "key_id")
_loads = json.JSONDecoder().decode
BADGE_LOCK_KEY = 0x48434150_43484B50 & 0x7FFFFFFFFFFFFFFF  # "HCAPCHKP"

REMOVED = "its previous-hash does not match the event before it (an event was removed, inserted or reordered)"
ALTERED = "its content does not match its hash (the event was altered, or re-hashed without the audit key)"


@dataclass
class VerifyResult:
    ok: bool
    count: int            # events verified in this run
    last_id: int          # last good event id (0 when none)
    last_hash: str
    complete: bool = True  # False when stopped by a limit before the end
    bad_id: int | None = None
    reason: str = ""
    unkeyed: int = 0      # events verified with plain SHA-256 (written before keying)
    checkpoint_note: str = ""


def _json(value):
    return _loads(value) if isinstance(value, str) else value


def _row_hash(row, keys) -> str | None:
    (_id, created_at, actor, groups, ip, agent, action, target, outcome, details, prev_hash, _hash, key_id) = row
    return event_hash(key_id, prev_hash, created_at, actor, _json(groups), ip, agent, action, target, outcome,
                      _json(details), keys=keys)


def _row_problem(row, keys, keyed_seen: bool) -> str:
    key_id = row[12]
    if key_id == UNKEYED and keyed_seen:
        return "it is unkeyed (plain SHA-256) but follows keyed events (forged or re-hashed without the audit key)"
    computed = _row_hash(row, keys)
    if computed is None:
        return f"it was signed with key id {key_id!r}, which HCAPADMIN_AUDIT_KEY does not list"
    if computed != row[11]:
        return ALTERED
    return ""


def _anchor_ok(after_id: int, prev_hash: str, keys) -> tuple[bool, str, bool]:
    """(ok, why not, whether the anchor event is keyed).  Unkeyed events only
    ever come first, so a keyed anchor means keyed events were seen."""
    with connection.cursor() as cur:
        cur.execute(f"SELECT {COLUMNS} FROM {TABLE} WHERE id = %s", [after_id])
        row = cur.fetchone()
    if row is None:
        return False, f"checkpoint event #{after_id} is missing", False
    if row[11] != prev_hash or _row_problem(row, keys, False):
        return False, f"checkpoint event #{after_id} was altered", False
    return True, "", row[12] != UNKEYED


def verify_chain(after_id: int = 0, prev_hash: str = GENESIS_HASH, *, chunk: int = 5000,
                 limit: int | None = None, progress=None, watch_id: int | None = None) -> VerifyResult:
    """Verify the events after ``after_id`` (whose hash is ``prev_hash``).
    With ``watch_id``, the result's ``watch`` attribute is (hash of that
    event or None when absent, number of verified events up to it)."""
    keys = audit_keys()
    watch = [None, 0]
    keyed_seen = False
    if after_id:
        ok, reason, keyed_seen = _anchor_ok(after_id, prev_hash, keys)
        if not ok:
            return VerifyResult(False, 0, 0, GENESIS_HASH, bad_id=after_id, reason=reason)
    count, unkeyed, last_id, expected = 0, 0, after_id, prev_hash

    def result(ok=True, **kw):
        r = VerifyResult(ok, count, last_id, expected, unkeyed=unkeyed, **kw)
        r.watch = tuple(watch)
        return r

    while True:
        size = chunk if limit is None else min(chunk, limit - count)
        if size <= 0:
            with connection.cursor() as cur:
                cur.execute(f"SELECT EXISTS (SELECT 1 FROM {TABLE} WHERE id > %s)", [last_id])
                more = cur.fetchone()[0]
            return result(complete=not more)
        with connection.cursor() as cur:
            cur.execute(f"SELECT {COLUMNS} FROM {TABLE} WHERE id > %s ORDER BY id LIMIT %s", [last_id, size])
            rows = cur.fetchall()
        if not rows:
            return result()
        for row in rows:
            if row[10] != expected:
                return result(False, bad_id=row[0], reason=REMOVED)
            problem = _row_problem(row, keys, keyed_seen)
            if problem:
                return result(False, bad_id=row[0], reason=problem)
            if row[12] == UNKEYED:
                unkeyed += 1
            else:
                keyed_seen = True
            expected = row[11]
            last_id = row[0]
            count += 1
            if watch_id is not None and row[0] <= watch_id:
                watch[1] = count
                if row[0] == watch_id:
                    watch[0] = row[11]
        if progress is not None:
            progress(count, last_id)
        del rows


def load_checkpoint() -> tuple[AuditCheckpoint | None, str]:
    """The checkpoint row (None when there is none yet) and, when its
    signature does not verify, why it cannot be believed."""
    cp = AuditCheckpoint.objects.filter(pk=1).first()
    if cp is None:
        return None, ""
    if not cp.signature_ok():
        return cp, "the checkpoint record was altered (its signature does not verify with the audit key)"
    return cp, ""


def _shortened(cp: AuditCheckpoint, present: int, end_id: int) -> str:
    missing = max(cp.events - present, 0)
    return (f"the chain was shortened: the checkpoint verified {cp.events} events through event #{cp.last_id}, "
            f"which is gone; {missing} of those events are missing (the chain now ends at #{end_id or 0})")


def verify_full(*, chunk: int = 5000, progress=None) -> VerifyResult:
    """The whole chain, and that it still reaches the checkpoint."""
    cp, cp_problem = load_checkpoint()
    watch_id = cp.last_id if cp is not None and cp.last_id and not cp_problem else None
    result = verify_chain(chunk=chunk, progress=progress, watch_id=watch_id)
    if cp_problem:
        if result.ok:
            result.ok, result.bad_id, result.reason = False, None, cp_problem
        return result
    if result.ok and watch_id is not None:
        seen_hash, present = result.watch
        if seen_hash is None:
            result.ok, result.bad_id, result.reason = False, cp.last_id, _shortened(cp, present, result.last_id)
        elif seen_hash != cp.last_hash:
            result.ok, result.bad_id = False, cp.last_id
            result.reason = (f"checkpoint event #{cp.last_id} no longer has the hash the checkpoint recorded "
                             "(the chain was rewritten)")
        elif present != cp.events:
            result.ok, result.bad_id = False, cp.last_id
            result.reason = (f"the checkpoint verified {cp.events} events through #{cp.last_id}, "
                             f"now there are {present}")
    return result


def save_full_result(result: VerifyResult) -> None:
    """Record a full run.  A verified chain moves the checkpoint forward; a
    failure keeps the checkpoint where it was (never a shorter chain) and
    marks it broken until a full run passes."""
    now = timezone.now()
    with transaction.atomic():
        with connection.cursor() as cur:  # not while a page view is moving the checkpoint
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [BADGE_LOCK_KEY])
        cp, cp_problem = load_checkpoint()
        if cp_problem:
            # Leave it as found: signing it would make its values look
            # trustworthy, and resetting it would accept whatever chain is
            # there now.  Every run fails until an operator deletes the row.
            return
        if cp is None:
            cp = AuditCheckpoint(pk=1)
        if result.ok:
            cp.last_id, cp.last_hash, cp.events = result.last_id, result.last_hash, result.count
            cp.ok, cp.bad_id, cp.reason = True, None, ""
        else:
            cp.ok, cp.bad_id, cp.reason = False, result.bad_id, result.reason[:300]
        cp.checked_at = cp.full_checked_at = now
        cp.sign()
        cp.save()


def badge_status(budget: int = 20000) -> dict:
    """Verify the events after the checkpoint, at most ``budget`` of them."""
    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_xact_lock(%s)", [BADGE_LOCK_KEY])
            got_lock = cur.fetchone()[0]
        cp, cp_problem = load_checkpoint()
        if cp is None:
            cp = AuditCheckpoint(pk=1)
        if cp_problem:
            cp.ok, cp.bad_id, cp.reason = False, None, cp_problem  # shown, never saved
        elif got_lock and cp.ok:
            result = verify_chain(cp.last_id, cp.last_hash, limit=budget)
            cp.checked_at = timezone.now()
            if result.ok:
                cp.last_id, cp.last_hash = result.last_id, result.last_hash
                cp.events += result.count
            else:
                cp.ok, cp.bad_id, cp.reason = False, result.bad_id, result.reason[:300]
                if result.bad_id == cp.last_id and "missing" in result.reason:
                    with connection.cursor() as cur:
                        cur.execute(f"SELECT count(*), max(id) FROM {TABLE} WHERE id <= %s", [cp.last_id])
                        present, end_id = cur.fetchone()
                    cp.reason = _shortened(cp, present, end_id)[:300]
            cp.sign()
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


def head() -> tuple[int, str] | None:
    """(id, hash) of the newest event, or None when the table is empty."""
    with connection.cursor() as cur:
        cur.execute(f"SELECT id, hash FROM {TABLE} ORDER BY id DESC LIMIT 1")
        row = cur.fetchone()
    return (row[0], row[1]) if row else None
