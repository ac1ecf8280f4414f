"""The append-only, hash-chained audit trail.

Each event stores the hash of the event before it and an HMAC-SHA-256 (key
from ``HCAPADMIN_AUDIT_KEY``, outside the database; its id is stored on the
event) over that hash and a canonical JSON encoding of its own fields, so
altering, inserting or removing a row breaks the chain from that point on,
and someone who can write the table but does not hold the key cannot
recompute a chain that verifies.  Events written before the chain was keyed
carry key id ``unkeyed`` and a plain SHA-256.

What is hashed is exactly what PostgreSQL stores and gives back: strings
are cleaned (no NUL, no lone surrogates) and cut to their column length
before hashing, addresses are normalised by ``normalise_ip``, and the JSON
fields are hashed as PostgreSQL's own ``jsonb`` text of them, which is also
what is inserted.  Writers take a transaction-scoped PostgreSQL advisory
lock, so concurrent writers (web processes, RQ workers) append one at a time
and the chain stays linear.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from functools import lru_cache
from datetime import timezone as dt_timezone

from django.conf import settings
from django.db import connection, models, transaction
from django.utils import timezone

from hcapadmin.audit.keys import UNKEYED
from hcapadmin.core.clientip import client_ip, normalise_ip

GENESIS_HASH = "0" * 64
# Arbitrary constant identifying the audit chain's advisory lock.
ADVISORY_LOCK_KEY = 0x48434150_41554454 & 0x7FFFFFFFFFFFFFFF  # "HCAPAUDT"

OUTCOMES = ("success", "failure", "denied", "error")


class AuditEvent(models.Model):
    created_at = models.DateTimeField(db_index=True)
    actor = models.CharField(max_length=255)
    actor_groups = models.JSONField(default=list)
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    action = models.CharField(max_length=100)
    target = models.CharField(max_length=500, blank=True)
    outcome = models.CharField(max_length=20, choices=[(o, o) for o in OUTCOMES])
    details = models.JSONField(default=dict)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)
    # Which HCAPADMIN_AUDIT_KEY entry made ``hash``; "unkeyed" for events
    # written before the chain was keyed (plain SHA-256).
    key_id = models.CharField(max_length=32, db_default=UNKEYED)

    class Meta:
        ordering = ["-id"]
        # The review page filters on one column and pages by id (keyset):
        # (column, id) lets PostgreSQL walk one index backwards from the cursor.
        indexes = [
            models.Index(fields=["actor", "id"], name="audit_actor_id"),
            models.Index(fields=["action", "id"], name="audit_action_id"),
            models.Index(fields=["target", "id"], name="audit_target_id"),
            models.Index(fields=["outcome", "id"], name="audit_outcome_id"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.action} {self.actor} {self.outcome}"

    def save(self, *args, **kwargs):
        if self.pk is not None or not self._state.adding:
            raise ValueError("audit events are append-only and cannot be changed")
        return super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("audit events are append-only and cannot be deleted")

    # -- hashing ------------------------------------------------------------
    def canonical(self) -> str:
        return canonical(self.created_at, self.actor, self.actor_groups, self.source_ip, self.user_agent,
                         self.action, self.target, self.outcome, self.details)

    def compute_hash(self, keys=None) -> str | None:
        return event_hash(self.key_id, self.prev_hash, self.created_at, self.actor, self.actor_groups,
                          self.source_ip, self.user_agent, self.action, self.target, self.outcome, self.details,
                          keys=keys)


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def utc_iso(created_at) -> str:
    """2026-11-25T08:30:00.123456+00:00 (what the hash covers)."""
    return created_at.astimezone(dt_timezone.utc).isoformat(timespec="microseconds")


def canonical(created_at, actor, actor_groups, source_ip, user_agent, action, target, outcome, details) -> str:
    """The canonical JSON of one event's content (what its hash covers).
    ``created_at`` is a datetime, or already the ``utc_iso()`` text."""
    body = {
        "created_at": created_at if isinstance(created_at, str) else utc_iso(created_at),
        "actor": actor,
        # a list as written; anything else only if someone edited the row
        "actor_groups": list(actor_groups) if isinstance(actor_groups, (list, tuple)) else (actor_groups or []),
        "source_ip": source_ip or None,
        "user_agent": user_agent or "",
        "action": action,
        "target": target or "",
        "outcome": outcome,
        "details": details or {},
    }
    return _CANONICAL.encode(body)


def chain_hash(prev_hash: str, canonical_text: str) -> str:
    """The hash of an ``unkeyed`` event (before the chain was keyed)."""
    digest = hashlib.sha256()
    digest.update(prev_hash.encode("utf-8"))  # ASCII hex unless a row was tampered with
    digest.update(b"\n")
    digest.update(canonical_text.encode("utf-8"))
    return digest.hexdigest()


@lru_cache(maxsize=16)
def _hmac_for(key: bytes):
    # Keyed once; each event copies it (audit_verify hashes millions).
    return hmac.new(key, digestmod=hashlib.sha256)


def keyed_hash(key: bytes, key_id: str, prev_hash: str, canonical_text: str) -> str:
    """HMAC-SHA-256 over the previous hash, the key id and the content."""
    mac = _hmac_for(key).copy()
    mac.update(prev_hash.encode("utf-8"))
    mac.update(b"\n")
    mac.update(key_id.encode("utf-8"))
    mac.update(b"\n")
    mac.update(canonical_text.encode("utf-8"))
    return mac.hexdigest()


def audit_keys() -> dict[str, bytes]:
    return settings.AUDIT_KEYS


def event_hash(key_id, prev_hash, created_at, actor, actor_groups, source_ip, user_agent, action, target, outcome,
               details, *, keys=None) -> str | None:
    """The hash an event with these fields must have, or None when its key
    id names no configured key.  ``source_ip`` is normalised here, so the
    text PostgreSQL gives back for an ``inet`` hashes the same as the text
    that was written."""
    if key_id == UNKEYED:
        return chain_hash(prev_hash, canonical(created_at, actor, actor_groups, source_ip, user_agent, action,
                                               target, outcome, details))
    key = (audit_keys() if keys is None else keys).get(key_id)
    if key is None:
        return None
    text = canonical(created_at, actor, actor_groups, normalise_ip(source_ip), user_agent, action, target, outcome,
                     details)
    return keyed_hash(key, key_id, prev_hash, text)


def checkpoint_mac(key: bytes, last_id, last_hash, events, ok, bad_id) -> str:
    text = f"audit checkpoint\n{int(last_id)}\n{last_hash}\n{int(events)}\n{int(bool(ok))}\n{bad_id or ''}"
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


class AuditCheckpoint(models.Model):
    """How far the chain is known to verify (one row, id=1).  The review
    page's badge verifies only the events after it (bounded work);
    ``manage.py audit_verify`` re-verifies everything and moves it forward.
    It never moves back: a chain that ends before it was shortened.  It is
    signed with the audit key (``mac``), so editing it without the key is
    noticed rather than believed."""

    last_id = models.BigIntegerField(default=0)
    last_hash = models.CharField(max_length=64, default=GENESIS_HASH)
    events = models.BigIntegerField(default=0)
    ok = models.BooleanField(default=True)
    bad_id = models.BigIntegerField(null=True, blank=True)
    reason = models.CharField(max_length=300, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)
    full_checked_at = models.DateTimeField(null=True, blank=True)
    key_id = models.CharField(max_length=32, blank=True)
    mac = models.CharField(max_length=64, blank=True)

    def sign(self) -> None:
        self.key_id, key = next(iter(audit_keys().items()))
        self.mac = checkpoint_mac(key, self.last_id, self.last_hash, self.events, self.ok, self.bad_id)

    def signature_ok(self) -> bool:
        key = audit_keys().get(self.key_id)
        if key is None or not self.mac:
            return False
        expected = checkpoint_mac(key, self.last_id, self.last_hash, self.events, self.ok, self.bad_id)
        return hmac.compare_digest(expected, self.mac)


# Largest integer kept as a JSON number in details (about 3,000 digits;
# Python refuses to turn much longer ones into text); larger ones are
# recorded as a note instead.
_MAX_INT_BITS = 10_000


def _clean_text(value) -> str:
    # PostgreSQL text and jsonb cannot hold NUL, and UTF-8 cannot hold a lone
    # surrogate; hostile input must not turn an audit write into a 500.
    text = value if isinstance(value, str) else str(value)
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def _jsonable(value):
    """Plain JSON values only: str keys, cleaned strings, finite numbers."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value) if value.bit_length() <= _MAX_INT_BITS else "<integer too large>"
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, dict):
        return {_clean_text(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    return _clean_text(value)


def command_actor() -> str:
    """The actor of a ``manage.py`` command: the OS user running it (OpenShift
    runs arbitrary UIDs without a passwd entry, so fall back to the uid)."""
    import os

    return f"manage.py ({os.environ.get('USER') or os.environ.get('LOGNAME') or 'uid ' + str(os.getuid())})"


def record(
    action: str,
    *,
    request=None,
    actor: str | None = None,
    actor_groups=None,
    target: str = "",
    outcome: str = "success",
    details: dict | None = None,
    source_ip: str | None = None,
    user_agent: str = "",
) -> AuditEvent:
    """Append one event.  Call it inside the transaction that does the work,
    so the event and the change commit (or roll back) together."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    if request is not None:
        principal = getattr(request, "principal", None)
        if actor is None:
            actor = principal.name if principal else "anonymous"
        if actor_groups is None:
            actor_groups = list(principal.groups) if principal else []
        source_ip = source_ip or client_ip(request)
        user_agent = user_agent or request.META.get("HTTP_USER_AGENT", "")
    groups = [_clean_text(g) for g in (actor_groups or [])]
    details = _jsonable(details if details is not None else {})
    if not isinstance(details, dict):
        details = {"value": details}
    fields = {
        "actor": _clean_text(actor or "system")[:255],
        "source_ip": normalise_ip(source_ip),
        "user_agent": _clean_text(user_agent or "")[:512],
        "action": _clean_text(action)[:100],
        "target": _clean_text(target or "")[:500],
        "outcome": outcome,
    }
    key_id, key = next(iter(audit_keys().items()))  # the first key signs
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK_KEY])
            # PostgreSQL's own text of the JSON fields: hashed, then inserted
            # as is, so the stored jsonb gives back exactly what was hashed.
            cursor.execute(
                f"SELECT %s::jsonb::text, %s::jsonb::text, (SELECT hash FROM {AuditEvent._meta.db_table} "
                "ORDER BY id DESC LIMIT 1)", [json.dumps(groups), json.dumps(details)])
            groups_text, details_text, last = cursor.fetchone()
            prev_hash = last or GENESIS_HASH
            created_at = timezone.now()  # microseconds, as PostgreSQL stores it
            groups, details = json.loads(groups_text), json.loads(details_text)
            digest = keyed_hash(key, key_id, prev_hash, canonical(
                created_at, fields["actor"], groups, fields["source_ip"], fields["user_agent"], fields["action"],
                fields["target"], outcome, details))
            cursor.execute(
                f"INSERT INTO {AuditEvent._meta.db_table} (created_at, actor, actor_groups, source_ip, user_agent, "
                "action, target, outcome, details, prev_hash, hash, key_id) "
                "VALUES (%s, %s, %s::jsonb, %s::inet, %s, %s, %s, %s, %s::jsonb, %s, %s, %s) RETURNING id",
                [created_at, fields["actor"], groups_text, fields["source_ip"], fields["user_agent"],
                 fields["action"], fields["target"], outcome, details_text, prev_hash, digest, key_id])
            (pk,) = cursor.fetchone()
    event = AuditEvent(id=pk, created_at=created_at, actor_groups=groups, details=details, prev_hash=prev_hash,
                       hash=digest, key_id=key_id, **fields)
    event._state.adding = False
    event._state.db = connection.alias
    return event
