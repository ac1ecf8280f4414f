"""Demo data with exactly the shape of HCAP's real log documents.

HCAP's server logs through winston with a winston-mongodb transport that
sets only ``db``, so every document is what that transport writes by
default: ``_id`` (ObjectId), ``timestamp`` (BSON date), ``level`` (only
``error``, ``warn`` and ``info``: the transport's own level is ``info``),
``message`` (a string; the app JSON-encodes objects; ``logger.error(text,
err)`` appends the error's message), and, when the call had metadata,
``metadata`` (an object; an error's stack lands in ``metadata.stack``), in
that key order.  No ``label`` or ``hostname``: HCAP does not set them.
tests/test_logs_winston.py compares these documents with ones written by the
real packages.

``generate(collection, count, days=30, seed=...)`` inserts ``count``
documents spread over the last ``days`` days, oldest first (as a live server
appends them), in ``insert_many`` batches.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

from bson import ObjectId

# Documents `make run` seeds.  FerretDB 1.x reads the whole collection for every
# sorted or range query (docs/logs.md), so this volume sets how fast the
# sandbox's log page is: about 30 days of a quiet server, a page in about a second.
SANDBOX_DOCS = 10_000
LEVEL_WEIGHTS = (("error", 4), ("warn", 10), ("info", 86))
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


def _error(rng: random.Random) -> tuple[str, str]:
    """(error message, stack) as node prints them."""
    stack = _stack(rng)
    first = stack.split("\n", 1)[0]
    return first.split(": ", 1)[1], stack


def make_document(rng: random.Random, ts: datetime, i: int) -> dict:
    level = rng.choices([lv for lv, _ in LEVEL_WEIGHTS], weights=[w for _, w in LEVEL_WEIGHTS])[0]
    kind = rng.random()
    metadata = None
    if level == "error" and kind < 0.6:
        # logger.error("Failed to ...:", err): message + " " + err.message, the stack as metadata.
        text, stack = _error(rng)
        message = f"Failed to {rng.choice(('save', 'load', 'update'))} {rng.choice(WORDS)}: {text}"
        metadata = {"stack": stack}
    elif level == "error":
        message = f"{rng.choice(WORDS)} job failed #{i}"
        metadata = {"errorCode": rng.choice(("E_DB", "E_AUTH", "E_VALIDATION")), "attempt": rng.randint(1, 3)}
    elif level == "info" and kind < 0.45:
        status = rng.choice((200, 200, 200, 201, 204, 304, 400, 401, 403, 404, 500))
        route = rng.choice(ROUTES)
        message = f"{rng.choice(METHODS)} {route} {status} {rng.randint(2, 900)}ms"
        metadata = {"req": {"url": route, "status": status, "id": f"req-{i}"}, "user": f"user{rng.randint(1, 300)}"}
    elif kind < 0.6:
        message = json.dumps({"event": rng.choice(WORDS), "count": rng.randint(0, 5000),
                              "ids": [rng.randint(1, 99999) for _ in range(rng.randint(0, 4))]})
    else:
        message = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) + f" #{i}"
        if kind > 0.8:
            metadata = {"participantId": rng.randint(1, 50000), "site": rng.choice(("VIHA", "FHA", "IHA", "NHA")),
                        "tags": [rng.choice(WORDS) for _ in range(rng.randint(0, 3))]}
    doc = {"_id": ObjectId(), "timestamp": ts, "level": level, "message": message}
    if metadata is not None:
        doc["metadata"] = metadata
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
