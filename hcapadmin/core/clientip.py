"""The client address recorded in the audit trail and used by axes.

Two jobs, in one place so the audit trail and the lockouts agree:

- ``client_ip(request)`` picks the address: ``REMOTE_ADDR``, or, behind a
  trusted proxy (``HCAPADMIN_TRUSTED_PROXY_HEADER``), the entry that proxy
  added to the header.  A proxy such as OpenShift's router *appends* the
  address it saw to ``X-Forwarded-For``; everything to the left of it came
  from the client and may be invented.  So the recorded entry is counted
  from the right: ``HCAPADMIN_TRUSTED_PROXY_HOPS`` (default 1) trusted
  proxies each appended one entry, and the client's address is the
  hops-th entry from the right.
- ``normalise_ip(value)`` turns any text into the one canonical spelling of
  an address, or ``None`` when it is not an address.  The audit chain
  hashes exactly this text and stores exactly this text, so PostgreSQL's
  ``inet`` gives back the same address (no ``%eth0`` zone, IPv4-mapped IPv6
  unpacked to IPv4).
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from django.conf import settings

# Longest text worth parsing: a full IPv6 address with a zone and brackets.
_MAX_ADDRESS_TEXT = 100


def normalise_ip(value) -> str | None:
    """The canonical text of an IP address, or None when ``value`` is not one.

    ``::ffff:10.1.2.3`` -> ``10.1.2.3`` (the same client as over IPv4);
    ``fe80::1%eth0`` -> ``fe80::1`` (a zone names an interface of the
    machine that saw the packet, meaningless elsewhere, and ``inet`` cannot
    store it); ``[2001:db8::1]:443`` and ``10.0.0.1:5678`` -> the address
    without the port; anything else that is not an address -> None.
    """
    return _normalise_text(value) if isinstance(value, str) else None


# audit_verify normalises every event's address, and the same few repeat.
@lru_cache(maxsize=4096)
def _normalise_text(value: str) -> str | None:
    text = value.strip()
    if not text or len(text) > _MAX_ADDRESS_TEXT or not text.isascii():
        return None
    if text.startswith("["):  # [v6]:port or [v6]
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1 and "." in text:  # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        address = ipaddress.IPv6Address(int(address))  # drops the %zone
    return str(address)


def client_ip(request) -> str | None:
    # REMOTE_ADDR unless a trusted proxy header is configured (OpenShift's
    # router sets REMOTE_ADDR to itself).  Only entries appended by trusted
    # proxies are believed: the hops-th from the right.  When the header has
    # fewer entries than hops, every entry in it was written by a trusted
    # proxy and the left-most one is the client's.
    header = getattr(settings, "TRUSTED_PROXY_HEADER", None)
    if header:
        value = request.META.get(header, "")
        if value:
            entries = [entry.strip() for entry in value.split(",")]
            hops = max(1, int(getattr(settings, "TRUSTED_PROXY_HOPS", 1)))
            return normalise_ip(entries[max(0, len(entries) - hops)])
    return normalise_ip(request.META.get("REMOTE_ADDR"))
