"""Readiness checks, each bounded in time and run side by side."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, wait

from django.conf import settings
from django.db import connections

CHECK_TIMEOUT = 2.5  # seconds; the whole probe answers within 3


def _portal_db():
    conn = connections["default"]
    with conn.cursor() as cursor:
        cursor.execute("SET LOCAL statement_timeout = 2000")
        cursor.execute("SELECT 1")
    conn.close()


def _redis():
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    finally:
        client.close()


def _mongo():
    import pymongo

    client = pymongo.MongoClient(settings.MONGO_URL, serverSelectionTimeoutMS=2000, connectTimeoutMS=2000,
                                 socketTimeoutMS=2000)
    try:
        client.admin.command("ping")
    finally:
        client.close()


def _platform():
    from hcapadmin.core.platform import get_driver

    get_driver().ping(timeout=2)


CHECKS = {"database": _portal_db, "redis": _redis, "mongodb": _mongo, "platform": _platform}
_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="readyz")


def _timed(fn):
    start = time.monotonic()
    try:
        fn()
        error = None
    except Exception as exc:  # every failure is reported, none is raised
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        error = f"{type(exc).__name__}: {first}"[:300]
    return error, round((time.monotonic() - start) * 1000, 1)


def readiness() -> dict:
    futures = {name: _pool.submit(_timed, fn) for name, fn in CHECKS.items()}
    wait(futures.values(), timeout=CHECK_TIMEOUT)
    components = {}
    for name, future in futures.items():
        if future.done():
            error, latency = future.result()
        else:
            error, latency = f"no answer within {CHECK_TIMEOUT:g}s", CHECK_TIMEOUT * 1000
        components[name] = {"ok": error is None, "latency_ms": latency, "error": error}
    ok = [c["ok"] for c in components.values()]
    status = "ok" if all(ok) else ("down" if not components["database"]["ok"] else "degraded")
    return {"status": status, "components": components}
