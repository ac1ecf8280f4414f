"""Readiness checks, each bounded in time and run side by side.

``readiness()`` holds the details (error text names internal hosts and
users): they go to the portal's own log and to admins on the dashboard.
Anonymous ``/readyz`` gets ``public_summary()``: ok/down per component and
the overall status, no error text.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor, wait

from django.conf import settings
from django.db import connections

logger = logging.getLogger(__name__)

CHECK_TIMEOUT = 2.5  # seconds; the whole probe answers within 3
CLIENT_TIMEOUT = 2  # seconds each client may wait to connect or for an answer


def _portal_db():
    conn = connections["default"]
    with conn.cursor() as cursor:
        # this thread's own connection, closed below: the setting dies with it
        cursor.execute(f"SET statement_timeout = {int(CLIENT_TIMEOUT * 1000)}")
        cursor.execute("SELECT 1")
    conn.close()


def redis_client():
    import redis

    return redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=CLIENT_TIMEOUT,
                                socket_timeout=CLIENT_TIMEOUT)


def _redis():
    client = redis_client()
    try:
        client.ping()
    finally:
        client.close()


def mongo_client():
    import pymongo

    ms = CLIENT_TIMEOUT * 1000
    return pymongo.MongoClient(settings.MONGO_URL, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms,
                               socketTimeoutMS=ms, connect=False)


def _mongo():
    client = mongo_client()
    try:
        client.admin.command("ping")
    finally:
        client.close()


def _platform():
    from hcapadmin.core.platform import get_driver

    get_driver().ping(timeout=CLIENT_TIMEOUT)


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
        if error is not None:
            logger.warning("readiness: %s is down (%s ms): %s", name, latency, error)
    ok = [c["ok"] for c in components.values()]
    status = "ok" if all(ok) else ("down" if not components["database"]["ok"] else "degraded")
    return {"status": status, "components": components}


def public_summary(result: dict) -> dict:
    """What anyone may see: the overall status (ok/degraded/down) and ok or
    down per component, without error text or timings."""
    return {"status": result["status"],
            "components": {name: "ok" if c["ok"] else "down" for name, c in result["components"].items()}}
