"""The audit chain's HMAC keys: parsing ``HCAPADMIN_AUDIT_KEY`` and the
sandbox's derived key.

A plain SHA-256 chain only proves that the rows agree with each other:
anyone who can write the table (with its triggers disabled) can edit a row
and recompute every hash after it.  Each event's hash is therefore an
HMAC-SHA-256 with a key that lives outside the portal database (an
environment variable or a mounted secret file), so writing the table is not
enough to produce a chain that verifies.

Keys have ids, stored on each event, so they can be rotated: the setting
lists ``id:key`` entries, the first signs new events and every listed key
verifies the events it signed.  Imported by settings.py: no Django models.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from django.core.exceptions import ImproperlyConfigured

# key_id of events written before the chain was keyed (plain SHA-256).
UNKEYED = "unkeyed"
SANDBOX_KEY_ID = "sandbox"
MIN_KEY_LENGTH = 32
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


def parse_audit_keys(value: str, name: str) -> dict[str, bytes]:
    """``"k2:secret2,k1:secret1"`` (or one entry a line) -> {id: key}, in
    order, the first being the signing key.  Errors name the variable and
    never echo a key."""
    keys: dict[str, bytes] = {}
    for position, entry in enumerate(re.split(r"[,\n]", value), start=1):
        entry = entry.strip()
        if not entry:
            continue
        key_id, sep, key = entry.partition(":")
        key_id, key = key_id.strip(), key.strip()
        if not sep or not _KEY_ID.match(key_id):
            raise ImproperlyConfigured(
                f"{name}: entry {position} is not id:key (id: 1-32 letters, digits, _ . -; value hidden)")
        if key_id == UNKEYED:
            raise ImproperlyConfigured(f"{name}: key id {UNKEYED!r} is reserved for events written before keying")
        if len(key) < MIN_KEY_LENGTH:
            raise ImproperlyConfigured(f"{name}: key {key_id!r} is shorter than {MIN_KEY_LENGTH} characters")
        if key_id in keys:
            raise ImproperlyConfigured(f"{name}: key id {key_id!r} is listed twice")
        keys[key_id] = key.encode("utf-8")
    if not keys:
        raise ImproperlyConfigured(f"{name}: expected at least one id:key entry")
    return keys


def sandbox_audit_keys(secret_key: str) -> dict[str, bytes]:
    """Sandbox, DEBUG and tests only: a key derived from SECRET_KEY (which
    lives outside the database too), so they start without extra setup."""
    derived = hmac.new(secret_key.encode("utf-8"), b"hcapadmin audit chain key v1", hashlib.sha256).hexdigest()
    return {SANDBOX_KEY_ID: derived.encode("ascii")}
