"""The append-only, hash-chained audit trail.

Each event stores the hash of the event before it and a SHA-256 over that
hash and a canonical JSON encoding of its own fields, so altering, inserting
or removing a row breaks the chain from that point on.  Writers take a
transaction-scoped PostgreSQL advisory lock, so concurrent writers (web
processes, RQ workers) append one at a time and the chain stays linear.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from datetime import timezone as dt_timezone

from django.db import connection, models, transaction
from django.utils import timezone

from hcapadmin.core.clientip import client_ip

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

    def compute_hash(self) -> str:
        return chain_hash(self.prev_hash, self.canonical())


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
        "actor_groups": list(actor_groups or []),
        "source_ip": source_ip or None,
        "user_agent": user_agent or "",
        "action": action,
        "target": target or "",
        "outcome": outcome,
        "details": details or {},
    }
    return _CANONICAL.encode(body)


def chain_hash(prev_hash: str, canonical_text: str) -> str:
    digest = hashlib.sha256()
    digest.update(prev_hash.encode("ascii"))
    digest.update(b"\n")
    digest.update(canonical_text.encode("utf-8"))
    return digest.hexdigest()


class AuditCheckpoint(models.Model):
    """How far the chain is known to verify (one row, id=1).  The review
    page's badge verifies only the events after it (bounded work);
    ``manage.py audit_verify`` re-verifies everything and resets it."""

    last_id = models.BigIntegerField(default=0)
    last_hash = models.CharField(max_length=64, default=GENESIS_HASH)
    events = models.BigIntegerField(default=0)
    ok = models.BooleanField(default=True)
    bad_id = models.BigIntegerField(null=True, blank=True)
    reason = models.CharField(max_length=300, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)
    full_checked_at = models.DateTimeField(null=True, blank=True)


def _strip_nul(value):
    # PostgreSQL text and jsonb cannot hold NUL; hostile input must not turn
    # an audit write into a 500.
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_strip_nul(str(k)): _strip_nul(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strip_nul(v) for v in value]
    return value


def _normalise(details) -> dict:
    # What is hashed must be exactly what PostgreSQL gives back.
    return _strip_nul(json.loads(json.dumps(details or {}, default=str, sort_keys=True)))


def _ip(value) -> str | None:
    try:
        return str(ipaddress.ip_address((value or "").strip())) if value else None
    except ValueError:
        return None


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
    event = AuditEvent(
        actor=_strip_nul(actor or "system")[:255],
        actor_groups=_strip_nul([str(g) for g in (actor_groups or [])]),
        source_ip=_ip(source_ip),
        user_agent=_strip_nul(user_agent or "")[:512],
        action=action[:100],
        target=_strip_nul(target or "")[:500],
        outcome=outcome,
        details=_normalise(details),
    )
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK_KEY])
        last = AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first()
        event.prev_hash = last or GENESIS_HASH
        # Truncate to microseconds, as PostgreSQL stores it.
        event.created_at = timezone.now()
        event.hash = event.compute_hash()
        event.save()
    return event
