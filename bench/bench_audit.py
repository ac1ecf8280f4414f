"""Audit trail with 1,000,000 events: the review page's 10,000th page vs its
first page (keyset pagination; target <= 1.5x), and audit_verify throughput.

Events are generated in Python with a valid hash chain and loaded with COPY
(the trigger only refuses UPDATE/DELETE/TRUNCATE)."""

from __future__ import annotations

import json
import os
import resource
import sys
import statistics
import time
from datetime import datetime, timedelta, timezone

from bench import Result

N_EVENTS = int(os.environ.get("HCAPADMIN_BENCH_AUDIT_EVENTS", 1_000_000))
PAGE = 10_000
REPEAT = 40

ACTIONS = ["login.success", "login.failure", "logout", "backup.requested", "job.started", "job.succeeded",
           "restore.requested", "restore.approved", "audit.export", "permission.denied"]
ACTORS = [f"user{i}" for i in range(40)]
OUTCOMES = ["success", "success", "success", "failure", "denied"]


def _rows(n: int):
    from hcapadmin.audit.models import GENESIS_HASH, audit_keys, event_hash

    key_id = next(iter(audit_keys()))  # the key that signs new events, as record() uses

    start = datetime.now(timezone.utc) - timedelta(days=30)
    prev = GENESIS_HASH
    for i in range(n):
        created = start + timedelta(microseconds=i * 2_000)
        actor = ACTORS[i % len(ACTORS)]
        groups = ["hcap-admins"] if i % 3 else ["hcap-auditors"]
        ip = f"10.0.{(i >> 8) & 255}.{i & 255}"
        agent = "Mozilla/5.0 bench"
        action = ACTIONS[(i * 7) % len(ACTIONS)]
        target = f"hcap-{i % 97}"
        outcome = OUTCOMES[i % len(OUTCOMES)]
        details = {"n": i, "note": "bench"}
        digest = event_hash(key_id, prev, created, actor, groups, ip, agent, action, target, outcome, details)
        yield (created, actor, json.dumps(groups), ip, agent, action, target, outcome, json.dumps(details), prev,
               digest, key_id)
        prev = digest


def _load(n: int) -> float:
    from django.db import connection

    started = time.monotonic()
    with connection.cursor() as cur:
        raw = cur.cursor  # the psycopg cursor
        with raw.copy("COPY audit_auditevent (created_at, actor, actor_groups, source_ip, user_agent, action, "
                      "target, outcome, details, prev_hash, hash, key_id) FROM STDIN") as copy:
            for row in _rows(n):
                copy.write_row(row)
        cur.execute("ANALYZE audit_auditevent")
    return time.monotonic() - started


def _timed(client, url: str) -> float:
    started = time.perf_counter()
    response = client.get(url)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, (url, response.status_code)
    assert response.content.count(b'<td><a href="/audit/') == 50, url
    return elapsed


def _cursor_for_page(page: int, where: str = "", params=()) -> int:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(f"SELECT id FROM audit_auditevent {where} ORDER BY id DESC OFFSET %s LIMIT 1",
                    [*params, (page - 1) * 50 - 1])
        return cur.fetchone()[0]


def run(stack) -> list[Result]:
    from django.conf import settings
    from django.test import Client

    from hcapadmin.accounts.demo import ensure_demo_users
    from hcapadmin.audit.models import AuditEvent
    from hcapadmin.audit.verify import save_full_result, verify_chain

    settings.ALLOWED_HOSTS = ["testserver", *settings.ALLOWED_HOSTS]
    results = []
    existing = AuditEvent.objects.count()
    load_s = _load(N_EVENTS - existing) if existing < N_EVENTS else 0.0
    total = AuditEvent.objects.count()
    results.append(Result(f"audit: load {total:,} events (COPY, chain computed in Python)", load_s, "s"))
    print(f"  loaded {total:,} events in {load_s:.1f}s", file=sys.stderr, flush=True)

    # audit_verify: stream the whole chain in chunks
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    verdict = verify_chain(chunk=5000)
    verify_s = time.monotonic() - started
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert verdict.ok and verdict.count == total, verdict
    save_full_result(verdict)  # the review page's badge starts from here
    results.append(Result("audit: audit_verify throughput", verdict.count / verify_s, "events/s"))
    print(f"  verified in {verify_s:.1f}s", file=sys.stderr, flush=True)
    results.append(Result("audit: audit_verify peak RSS growth", (rss_after - rss_before) / 1024, "MB"))

    from django.contrib.auth import get_user_model

    ensure_demo_users("bench-pw")
    client = Client()
    client.force_login(get_user_model().objects.get(username="auditor"))
    page = min(PAGE, total // 50)
    deep = _cursor_for_page(page)
    urls = {"first": "/audit/", "deep": f"/audit/?before={deep}"}
    action = ACTIONS[3]
    deep_f = _cursor_for_page(page // 10, "WHERE action = %s", [action])
    urls["first_f"] = f"/audit/?action={action}"
    urls["deep_f"] = f"/audit/?action={action}&before={deep_f}"
    times = {k: [] for k in urls}
    for url in urls.values():  # warm up
        client.get(url)
    order = list(urls.items())
    for i in range(REPEAT):  # side by side, interleaved, alternating order (the machine is shared)
        for key, url in (order if i % 2 else order[::-1]):
            times[key].append(_timed(client, url))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["deep"] / med["first"]
    results.append(Result("audit: review page 1 (median)", med["first"], "s"))
    results.append(Result(f"audit: review page {page:,} (median)", med["deep"], "s"))
    results.append(Result(f"audit: page {page:,} / page 1", ratio, "x", "<= 1.5", ratio <= 1.5))
    best = min(times["deep"]) / min(times["first"])
    results.append(Result(f"audit: page {page:,} / page 1 (fastest of each)", best, "x"))
    # the keyset query alone (no HTTP/template), to separate the database's part from noise
    from hcapadmin.audit import query

    no_filters = query.parse_filters({})
    q = {"first": [], "deep": []}
    for _ in range(REPEAT * 4):
        for key, before in (("first", None), ("deep", deep)):
            started = time.perf_counter()
            rows, _next = query.page(no_filters, before, 50)
            q[key].append(time.perf_counter() - started)
            assert len(rows) == 50
    q_first, q_deep = statistics.median(q["first"]), statistics.median(q["deep"])
    results.append(Result(f"audit: keyset query only, page {page:,} / page 1", q_deep / q_first, "x", "<= 1.5",
                          q_deep / q_first <= 1.5))
    ratio_f = med["deep_f"] / med["first_f"]
    results.append(Result(f"audit: filtered by action, page {page // 10:,} / page 1", ratio_f, "x", "<= 1.5",
                          ratio_f <= 1.5))
    return results
