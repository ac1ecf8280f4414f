"""Demo data shaped like winston-mongodb's documents (issue 5).

``generate(collection, count, days=30, seed=...)`` inserts ``count``
documents spread over the last ``days`` days, oldest first (as a live server
appends them), in ``insert_many`` batches: ``timestamp`` (BSON date),
``level`` (every npm level, weighted like a real server), ``message`` (a
string; some are JSON-encoded objects, some multi-line stack traces),
``meta`` (an object, sometimes), ``label`` and ``hostname`` (sometimes).
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

from bson import ObjectId

LEVEL_WEIGHTS = (("error", 3), ("warn", 7), ("info", 40), ("http", 30), ("verbose", 8), ("debug", 10), ("silly", 2))
HOSTS = ("hcap-server-7-x2k9q", "hcap-server-7-m4p1z", "hcap-server-8-bb7td")
LABELS = ("hcap-server", "keycloak", "cron", "migrations")
ROUTES = ("/api/v1/participants", "/api/v1/employer-sites", "/api/v1/user", "/api/v1/cohorts", "/api/v1/psi")
METHODS = ("GET", "GET", "GET", "POST", "PATCH", "DELETE")
WORDS = ("participant", "employer", "site", "cohort", "withdrawn", "archive", "keycloak", "token", "expired",
         "session", "batch", "upload", "validation", "failed", "completed", "retry")


def _stack(rng: random.Random) -> str:
    err = rng.choice(("TypeError: Cannot read properties of undefined (reading 'id')",
                      "Error: connect ECONNREFUSED 10.98.3.4:5432",
                      "ValidationError: \"email\" must be a valid email",
                      "SequelizeDatabaseError: deadlock detected"))
    frames = [f"    at {rng.choice(('Object.handler', 'async Promise.all', 'Router.handle', 'Layer.handle'))} "
              f"(/opt/app-root/src/server/{rng.choice(('routes', 'services', 'lib'))}/"
              f"{rng.choice(WORDS)}.js:{rng.randint(1, 400)}:{rng.randint(1, 80)})" for _ in range(rng.randint(3, 8))]
    return "\n".join([err, *frames])


def make_document(rng: random.Random, ts: datetime, i: int) -> dict:
    level = rng.choices([lv for lv, _ in LEVEL_WEIGHTS], weights=[w for _, w in LEVEL_WEIGHTS])[0]
    kind = rng.random()
    meta = None
    if level == "http":
        status = rng.choice((200, 200, 200, 201, 204, 304, 400, 401, 403, 404, 500))
        route = rng.choice(ROUTES)
        message = f"{rng.choice(METHODS)} {route} {status} {rng.randint(2, 900)}ms"
        meta = {"req": {"url": route, "status": status, "id": f"req-{i}"}, "user": f"user{rng.randint(1, 300)}"}
    elif level == "error" and kind < 0.6:
        message = _stack(rng)
        meta = {"errorCode": rng.choice(("E_DB", "E_AUTH", "E_VALIDATION")), "attempt": rng.randint(1, 3)}
    elif kind < 0.2:
        message = json.dumps({"event": rng.choice(WORDS), "count": rng.randint(0, 5000),
                              "ids": [rng.randint(1, 99999) for _ in range(rng.randint(0, 4))]})
    else:
        message = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) + f" #{i}"
        if kind > 0.7:
            meta = {"participantId": rng.randint(1, 50000), "site": rng.choice(("VIHA", "FHA", "IHA", "NHA"))}
    doc = {"_id": ObjectId(), "timestamp": ts, "level": level, "message": message}
    if meta is not None:
        doc["meta"] = meta
    if rng.random() < 0.7:
        doc["hostname"] = rng.choice(HOSTS)
    if rng.random() < 0.5:
        doc["label"] = rng.choice(LABELS)
    return doc


def generate(collection, count: int, days: float = 30, seed: int | None = 0, *, now: datetime | None = None,
             batch_size: int = 5000) -> int:
    """Insert ``count`` documents over the last ``days`` days; returns the count."""
    rng = random.Random(seed)
    now = (now or datetime.now(timezone.utc)).replace(microsecond=0)
    span_ms = int(days * 86400 * 1000)
    start = now - timedelta(milliseconds=span_ms)
    inserted = 0
    while inserted < count:
        n = min(batch_size, count - inserted)
        lo = span_ms * inserted // count
        hi = span_ms * (inserted + n) // count
        offsets = sorted(rng.randint(lo, max(lo, hi - 1)) for _ in range(n))
        docs = [make_document(rng, start + timedelta(milliseconds=off), inserted + k) for k, off in enumerate(offsets)]
        collection.insert_many(docs, ordered=False)
        inserted += n
    return inserted
