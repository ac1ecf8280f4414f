"""The client address recorded in the audit trail and used by axes."""

from __future__ import annotations

from django.conf import settings


def client_ip(request) -> str | None:
    # REMOTE_ADDR unless a trusted proxy header is configured: X-Forwarded-For
    # is client-controlled unless a trusted proxy rewrites it, and OpenShift's
    # router sets REMOTE_ADDR to itself.  Deployments behind a trusted proxy
    # set HCAPADMIN_TRUSTED_PROXY_HEADER.
    header = getattr(settings, "TRUSTED_PROXY_HEADER", None)
    if header:
        value = request.META.get(header, "")
        if value:
            return value.split(",")[0].strip() or None
    return request.META.get("REMOTE_ADDR") or None
