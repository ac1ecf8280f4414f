"""The MongoDB client for the log browser: one per process, created lazily
with short server-selection/connect timeouts so a down server is reported
within a few seconds and never blocks the rest of the portal."""

from __future__ import annotations

import threading

from django.conf import settings
from pymongo import MongoClient

from ops import logs
from ops.logs import LogFilterError

_lock = threading.Lock()
_clients: dict[str, MongoClient] = {}
_kinds: dict[str, str] = {}


def client() -> MongoClient:
    url = settings.MONGO_URL
    with _lock:
        existing = _clients.get(url)
        if existing is None:
            timeout = settings.MONGO_CONNECT_TIMEOUT_MS
            existing = MongoClient(
                url,
                tz_aware=True,
                # A stored date beyond what Python's datetime holds (year 10000+,
                # before year 1) reads as datetime.max/min instead of failing the page.
                datetime_conversion="DATETIME_CLAMP",
                serverSelectionTimeoutMS=timeout,
                connectTimeoutMS=timeout,
                # A server that accepts but never answers: give up a little after maxTimeMS.
                socketTimeoutMS=max(settings.LOG_MAX_TIME_MS, settings.LOG_EXPORT_MAX_TIME_MS) + timeout,
                appname="hcapadmin-logs",
                connect=False,
            )
            _clients[url] = existing
        return existing


def sources() -> list[str]:
    return list(settings.LOG_SOURCES)


def default_source() -> str:
    return next(iter(settings.LOG_SOURCES))


def collection(source: str | None):
    """The pymongo collection for a configured source name (400 for others)."""
    name = source or default_source()
    if name not in settings.LOG_SOURCES:
        raise LogFilterError(f"source: expected one of {', '.join(settings.LOG_SOURCES)}")
    db, coll = settings.LOG_SOURCES[name]
    return name, client()[db][coll]


def server_kind() -> str:
    """``mongodb`` or ``ferretdb`` (asked once per process and URL): the
    histogram counts differently on each, see ops.logs.histogram_plan."""
    url = settings.MONGO_URL
    kind = _kinds.get(url)
    if kind is None:
        kind = logs.server_kind(client()["admin"])
        _kinds[url] = kind
    return kind
