"""ops/logs.py against the real FerretDB from the harness (no mocks)."""

from __future__ import annotations

import csv
import io
import json
import random
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from bson import ObjectId
from pymongo import MongoClient

from ops import logs
from ops.logs import LogFilterError, LogQueryTimeout, LogUnavailable, Position

UTC = timezone.utc
# Django DB marked only so the suite-wide session fixtures (audit trigger) find the test database.
pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def mclient(mongo_url):
    client = MongoClient(mongo_url, tz_aware=True, serverSelectionTimeoutMS=5000)
    yield client
    client.close()


@pytest.fixture
def coll(mclient):
    c = mclient["logtests"]["log_" + uuid.uuid4().hex[:10]]
    yield c
    c.drop()


def _doc(ts, level="info", message="hello", **extra):
    return {"_id": ObjectId(), "timestamp": ts, "level": level, "message": message, **extra}


@pytest.fixture
def sample(coll):
    """A small hand-made set covering every field."""
    docs = [
        _doc(NOW - timedelta(minutes=5), "error", "Boom: connection refused", label="hcap-server",
             hostname="pod-a", meta={"status": 500, "req": {"url": "/api/v1/x"}}),
        _doc(NOW - timedelta(minutes=20), "warn", "Slow query (.*) took 3s", hostname="pod-b", meta={"status": "slow"}),
        _doc(NOW - timedelta(hours=2), "info", "User LOGGED in\nsecond line", label="keycloak", hostname="pod-a"),
        _doc(NOW - timedelta(hours=30), "http", "GET /api/v1/user 200 5ms", meta={"status": 200}),
        _doc(NOW - timedelta(days=3), "debug", '{"$where": "sleep(1)"}', label="cron"),
        _doc(NOW - timedelta(days=8), "silly", "ancient $gt history", hostname="pod-b"),
        _doc(NOW - timedelta(minutes=1), "verbose", "ünïcødé ÉCOLE message", label="hcap-server", meta={"ok": True}),
    ]
    coll.insert_many(docs)
    return docs


def ids(docs):
    return [str(d["_id"]) for d in docs]


def query(coll, params, **kw):
    flt = logs.parse_filter(params, now=NOW, **kw)
    return logs.fetch_page(coll, flt, limit=100).items


def expected(sample, pred):
    return ids(sorted((d for d in sample if pred(d)), key=lambda d: (d["timestamp"], d["_id"]), reverse=True))


# --- every filter --------------------------------------------------------------------
def test_no_filter_returns_all_newest_first(coll, sample):
    assert ids(query(coll, {})) == expected(sample, lambda d: True)


@pytest.mark.parametrize("preset,delta", [("15m", timedelta(minutes=15)), ("1h", timedelta(hours=1)),
                                          ("24h", timedelta(hours=24)), ("7d", timedelta(days=7))])
def test_range_presets(coll, sample, preset, delta):
    got = ids(query(coll, {"range": preset}))
    assert got == expected(sample, lambda d: d["timestamp"] >= NOW - delta)
    assert got  # every preset matches something in the sample


def test_levels_single_and_several(coll, sample):
    assert ids(query(coll, {"level": "error"})) == expected(sample, lambda d: d["level"] == "error")
    both = expected(sample, lambda d: d["level"] in ("error", "warn"))
    assert ids(query(coll, {"level": ["warn", "error"]})) == both
    assert ids(query(coll, {"level": "error,WARN"})) == both


def test_label_and_host(coll, sample):
    assert ids(query(coll, {"label": "hcap-server"})) == expected(sample, lambda d: d.get("label") == "hcap-server")
    assert ids(query(coll, {"host": "pod-b"})) == expected(sample, lambda d: d.get("hostname") == "pod-b")


def test_text_is_case_insensitive_literal_substring(coll, sample):
    assert ids(query(coll, {"q": "logged IN"})) == expected(sample, lambda d: "logged in" in d["message"].lower())
    # Regex metacharacters are literal: "(.*)" matches only the message containing it.
    assert ids(query(coll, {"q": "(.*)"})) == expected(sample, lambda d: "(.*)" in d["message"])
    assert ids(query(coll, {"q": ".*"})) == expected(sample, lambda d: ".*" in d["message"])
    assert ids(query(coll, {"q": "école"})) == expected(sample, lambda d: "ÉCOLE" in d["message"])
    assert query(coll, {"q": "a^b$"}) == []


def test_operator_text_is_plain_text(coll, sample):
    assert ids(query(coll, {"q": '{"$where"'})) == expected(sample, lambda d: '{"$where"' in d["message"])
    assert ids(query(coll, {"q": "$gt"})) == expected(sample, lambda d: "$gt" in d["message"])
    assert query(coll, {"label": '{"$gt": ""}'}) == []
    assert query(coll, {"host": "$ne"}) == []
    assert query(coll, {"meta.status": '{"$gt": 0}'}) == []
    flt = logs.parse_filter({"label": '{"$gt": ""}', "q": "$where"})
    assert flt.to_query() == {"label": '{"$gt": ""}', "message": {"$regex": r"\$where", "$options": "i"}}


def test_meta_filters_match_strings_numbers_booleans_and_nested_keys(coll, sample):
    assert ids(query(coll, {"meta.status": "500"})) == expected(sample, lambda d: d.get("meta", {}).get("status") == 500)
    assert ids(query(coll, {"meta.status": "slow"})) == expected(sample, lambda d: d.get("meta", {}).get("status") == "slow")
    assert ids(query(coll, {"meta.req.url": "/api/v1/x"})) == [str(sample[0]["_id"])]
    assert ids(query(coll, {"meta.ok": "true"})) == [str(sample[6]["_id"])]


def test_combinations(coll, sample):
    got = ids(query(coll, {"range": "24h", "level": ["error", "verbose"], "label": "hcap-server"}))
    assert got == expected(sample, lambda d: d["timestamp"] >= NOW - timedelta(hours=24)
                           and d["level"] in ("error", "verbose") and d.get("label") == "hcap-server")
    assert len(got) == 2
    got = ids(query(coll, {"range": "7d", "host": "pod-a", "q": "boom", "meta.status": "500", "level": "error"}))
    assert got == [str(sample[0]["_id"])]
    assert query(coll, {"range": "15m", "host": "pod-b"}) == []


def test_absolute_range_in_viewer_time_zone(coll, sample):
    # 03:30..05:00 Vancouver (PST, UTC-8) on 2026-11-25 = 11:30..13:00 UTC: only the -20m and -5m and -1m docs.
    got = ids(query(coll, {"since": "2026-11-25T03:30", "until": "2026-11-25T05:00", "tz": "America/Vancouver"}))
    assert got == expected(sample, lambda d: datetime(2026, 11, 25, 11, 30, tzinfo=UTC) <= d["timestamp"]
                           < datetime(2026, 11, 25, 13, 0, tzinfo=UTC))
    assert len(got) == 3
    # The same instant given in UTC with an offset gives the same result.
    assert ids(query(coll, {"since": "2026-11-25T11:30:00Z", "until": "2026-11-25T13:00:00+00:00"})) == got


# --- validation ------------------------------------------------------------------------
@pytest.mark.parametrize("params,fragment", [
    ({"level": "fatal"}, "level"),
    ({"level": "$ne"}, "level"),
    ({"meta.$where": "1"}, "meta key"),
    ({"meta.a..b": "1"}, "meta key"),
    ({"meta.": "1"}, "meta key"),
    ({"meta.a.$gt": "1"}, "meta key"),
    ({"meta.a b": "1"}, "meta key"),
    ({"range": "3y"}, "range"),
    ({"since": "yesterday"}, "since"),
    ({"since": "2026-11-25T10:00", "until": "2026-11-25T09:00"}, "before"),
    ({"q": "a\x00b"}, "control"),
    ({"label": "x" * 600}, "at most"),
    ({"tz": "Mars/Olympus"}, "tz"),
    ({"tz": "../../etc/passwd"}, "tz"),
])
def test_bad_filters_are_refused(params, fragment):
    with pytest.raises(LogFilterError) as err:
        logs.parse_filter(params, now=NOW)
    assert fragment in str(err.value)


def test_limit_validation():
    assert logs.parse_limit(None) == 50
    assert logs.parse_limit("10") == 10
    for bad in ("0", "501", "-1", "1e3", "ten", " 5 5"):
        with pytest.raises(LogFilterError):
            logs.parse_limit(bad)


def test_cursor_round_trip_and_forgery():
    from django.core import signing

    from hcapadmin.logbrowser.forms import read_cursor, sign_cursor

    pos = Position(datetime(2026, 3, 8, 10, 0, 0, 123000, tzinfo=UTC), ObjectId())
    token = sign_cursor(pos)
    assert read_cursor(token) == pos
    payload, sig = token.split(":")
    forged = [token + "x", payload + ":" + sig[:-2] + "AA", "abc", "", "a:b:c", token.replace(":", "!"),
              signing.Signer(salt="hcapadmin.audit.cursor").sign(payload), signing.Signer().sign(payload),
              "{\"$gt\": \"\"}", payload, "x" * 301]
    for bad in forged:
        with pytest.raises(LogFilterError):
            read_cursor(bad)


# --- pagination ------------------------------------------------------------------------
def _bulk(coll, n, *, seed=1, span=timedelta(days=1), same_ts_every=7):
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        # Many identical timestamps, so the _id tie-break is exercised.
        ts = NOW - timedelta(milliseconds=rng.randrange(int(span.total_seconds() * 1000)))
        if i % same_ts_every == 0 and docs:
            ts = docs[-1]["timestamp"]
        docs.append(_doc(ts.replace(microsecond=ts.microsecond // 1000 * 1000), rng.choice(logs.LEVELS), f"m{i}"))
    coll.insert_many(docs)
    return docs


def test_keyset_pages_with_concurrent_inserts_have_no_duplicates_or_gaps(coll, mclient):
    initial = _bulk(coll, 600)
    flt = logs.parse_filter({}, now=NOW)
    stop = threading.Event()
    inserted = []

    def writer():
        rng = random.Random(99)
        other = mclient[coll.database.name][coll.name]
        while not stop.is_set():
            # New documents land everywhere in time: newest, oldest and in between.
            ts = NOW - timedelta(seconds=rng.randrange(-3600, 86400 + 3600))
            doc = _doc(ts, "info", "concurrent")
            other.insert_one(doc)
            inserted.append(doc["_id"])
            time.sleep(0.01)

    thread = threading.Thread(target=writer)
    thread.start()
    seen, pages, before = [], 0, None
    try:
        while True:
            page = logs.fetch_page(coll, flt, before=before, limit=50)
            seen.extend(page.items)
            pages += 1
            if page.older is None:
                break
            before = logs.position_from(logs.cursor_value(page.older))
            assert pages < 100
    finally:
        stop.set()
        thread.join()
    assert inserted, "the writer thread inserted nothing"
    got = [d["_id"] for d in seen]
    assert len(got) == len(set(got)), "duplicates across pages"
    assert {d["_id"] for d in initial} <= set(got), "documents missing across pages"
    keys = [(d["timestamp"], d["_id"]) for d in seen]
    assert keys == sorted(keys, reverse=True)


def test_newer_links_walk_back_to_the_same_pages(coll):
    _bulk(coll, 230, seed=5)
    flt = logs.parse_filter({}, now=NOW)
    first = logs.fetch_page(coll, flt, limit=50)
    second = logs.fetch_page(coll, flt, before=first.older, limit=50)
    third = logs.fetch_page(coll, flt, before=second.older, limit=50)
    assert third.newer is not None and first.newer is None and first.at_newest
    back = logs.fetch_page(coll, flt, after=third.newer, limit=50)
    assert ids(back.items) == ids(second.items)
    top = logs.fetch_page(coll, flt, after=back.newer, limit=50)
    assert ids(top.items) == ids(first.items)
    assert top.newer is None and top.at_newest
    # A document arriving after the first page appears when following "newer" from it.
    fresh = _doc(NOW + timedelta(seconds=1), "error", "fresh")
    coll.insert_one(fresh)
    assert ids(logs.fetch_newer(coll, flt, logs.position_of(first.items[0]))) == [str(fresh["_id"])]


def test_pages_through_hundreds_of_documents_in_the_same_millisecond(coll):
    same = NOW - timedelta(minutes=1)
    docs = [_doc(same, "info", f"tie{i}") for i in range(300)]
    docs += [_doc(same + timedelta(milliseconds=1), "warn", "after"), _doc(same - timedelta(milliseconds=1), "warn", "before")]
    coll.insert_many(docs)
    flt = logs.parse_filter({"range": "1h"}, now=NOW)
    seen, before, pages = [], None, []
    while True:
        page = logs.fetch_page(coll, flt, before=before, limit=40)
        seen += page.items
        pages.append(page)
        if page.older is None:
            break
        before = page.older
    assert [d["_id"] for d in seen] == [d["_id"] for d in sorted(docs, key=lambda d: (d["timestamp"], d["_id"]), reverse=True)]
    # And back up with "newer" from the last page, through the ties.
    back = logs.fetch_page(coll, flt, after=pages[-1].newer, limit=40)
    assert ids(back.items) == ids(pages[-2].items)


# --- time zones ----------------------------------------------------------------------------
def test_dst_spring_forward_gap_is_refused_and_fall_back_takes_first_occurrence(coll):
    van = "America/Vancouver"
    with pytest.raises(LogFilterError, match="does not exist"):
        logs.parse_filter({"since": "2026-03-08T02:30", "tz": van})
    # 01:30 happens twice on 2026-11-01: PDT (08:30Z) first, then PST (09:30Z).
    flt = logs.parse_filter({"since": "2026-11-01T01:30", "tz": van})
    assert flt.since == datetime(2026, 11, 1, 8, 30, tzinfo=UTC)
    # A local range across the spring-forward change is 1 hour shorter in UTC.
    flt = logs.parse_filter({"since": "2026-03-08T01:00", "until": "2026-03-08T04:00", "tz": van})
    assert flt.since == datetime(2026, 3, 8, 9, 0, tzinfo=UTC)
    assert flt.until == datetime(2026, 3, 8, 11, 0, tzinfo=UTC)
    inside = [_doc(datetime(2026, 3, 8, 9, 0, tzinfo=UTC) + timedelta(minutes=m), "info", f"in{m}") for m in (0, 59, 60, 119)]
    outside = [_doc(datetime(2026, 3, 8, 8, 59, 59, 999000, tzinfo=UTC)), _doc(datetime(2026, 3, 8, 11, 0, tzinfo=UTC))]
    coll.insert_many(inside + outside)
    got = logs.fetch_page(coll, flt, limit=50).items
    assert sorted(ids(got)) == sorted(ids(inside))
    # Shareable URL params carry the local times and the zone; they parse back to the same filter.
    again = logs.parse_filter(dict(_multi(flt.params())))
    assert (again.since, again.until, again.tz) == (flt.since, flt.until, van)


def _multi(pairs):
    out = {}
    for k, v in pairs:
        out.setdefault(k, []).append(v)
    return out


def test_timestamps_serialize_as_utc_iso():
    doc = _doc(datetime(2026, 3, 8, 10, 0, 0, 5000, tzinfo=UTC), meta={"at": datetime(2026, 1, 1, tzinfo=UTC),
                                                                     "oid": ObjectId("0" * 24)})
    item = logs.serialize(doc)
    assert item["timestamp"] == "2026-03-08T10:00:00.005Z"
    assert item["meta"] == {"at": "2026-01-01T00:00:00.000Z", "oid": "0" * 24}
    assert set(item) == {"id", "timestamp", "level", "message", "meta", "label", "hostname"}
    json.dumps(item)


# --- histogram -------------------------------------------------------------------------------
def test_histogram_counts_match_direct_counts(coll):
    _bulk(coll, 800, seed=7, span=timedelta(hours=30))
    for params in ({"range": "24h"}, {"range": "24h", "level": ["error", "warn"]}, {"range": "1h", "q": "m1"}):
        flt = logs.parse_filter(params, now=NOW)
        buckets = logs.histogram(coll, flt, now=NOW, max_time_ms=60000)
        assert 1 <= len(buckets) <= logs.MAX_BUCKETS + 1
        assert buckets[0].start == flt.since and buckets[-1].end == NOW
        for a, b in zip(buckets, buckets[1:]):
            assert a.end == b.start
        total = sum(b.total for b in buckets)
        assert total == coll.count_documents(flt.to_query())
        assert total > 0
        for b in buckets[::5]:
            for level in logs.LEVELS:
                q = {"$and": [{"timestamp": {"$gte": b.start, "$lt": b.end}}, {"level": level},
                              flt.to_query(with_time=False)]}
                assert b.counts.get(level, 0) == coll.count_documents(q)


def test_histogram_needs_a_range(coll):
    with pytest.raises(LogFilterError):
        logs.histogram(coll, logs.parse_filter({}), now=NOW)


# --- export ----------------------------------------------------------------------------------
def test_export_ndjson_and_csv_parse_back(coll, sample):
    flt = logs.parse_filter({"range": "7d"}, now=NOW)
    want = [logs.serialize(d) for d in sorted((d for d in sample if d["timestamp"] >= NOW - timedelta(days=7)),
                                              key=lambda d: (d["timestamp"], d["_id"]), reverse=True)]
    nd = "".join(logs.export_chunks(coll, flt, fmt="ndjson", limit=1000, max_time_ms=10000, batch_size=2))
    assert [json.loads(line) for line in nd.splitlines()] == want
    text = "".join(logs.export_chunks(coll, flt, fmt="csv", limit=1000, max_time_ms=10000, batch_size=2))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["id"] for r in rows] == [w["id"] for w in want]
    for row, item in zip(rows, want):
        assert row["timestamp"] == item["timestamp"] and row["level"] == item["level"]
        assert row["message"] == item["message"]  # multi-line messages survive CSV quoting
        assert row["meta"] == ("" if item["meta"] is None else json.dumps(item["meta"], ensure_ascii=False, sort_keys=True))
        assert row["label"] == (item["label"] or "") and row["hostname"] == (item["hostname"] or "")


def test_export_is_capped_and_guards_formulas(coll):
    _bulk(coll, 120, seed=3)
    coll.insert_one(_doc(NOW + timedelta(seconds=5), "error", "=HYPERLINK(\"http://evil\")"))
    flt = logs.parse_filter({}, now=NOW)
    nd = "".join(logs.export_chunks(coll, flt, fmt="ndjson", limit=100, max_time_ms=10000, batch_size=30))
    assert len(nd.splitlines()) == 100
    text = "".join(logs.export_chunks(coll, flt, fmt="csv", limit=5, max_time_ms=10000))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 5 and rows[0]["message"] == "'=HYPERLINK(\"http://evil\")"
    empty = "".join(logs.export_chunks(coll, logs.parse_filter({"label": "none"}), fmt="csv", limit=5, max_time_ms=10000))
    assert empty.strip() == ",".join(logs.CSV_COLUMNS)
    with pytest.raises(LogFilterError):
        logs.export_chunks(coll, flt, fmt="xml", limit=5, max_time_ms=1000)


# --- timeouts and outages ----------------------------------------------------------------------
def test_server_side_timeout_is_reported(coll):
    _bulk(coll, 4000, seed=11)
    flt = logs.parse_filter({"q": "m"}, now=NOW)
    with pytest.raises(LogQueryTimeout) as err:
        logs.fetch_page(coll, flt, max_time_ms=1)
    assert "Narrow the time range" in str(err.value)
    with pytest.raises(LogQueryTimeout):
        logs.histogram(coll, logs.parse_filter({"range": "24h"}, now=NOW), now=NOW, max_time_ms=1)


def test_silent_server_is_reported_unavailable_within_seconds(silent_server):
    port, accepted = silent_server
    client = MongoClient(f"mongodb://127.0.0.1:{port}/", serverSelectionTimeoutMS=1500, connectTimeoutMS=1500,
                         socketTimeoutMS=3000, tz_aware=True)
    try:
        # How soon it gives up is the client's configured timeouts (not timed here:
        # that would depend on the machine's speed), and that it gives up is the test.
        assert client.options.server_selection_timeout == 1.5 and client.options.pool_options.socket_timeout == 3
        with pytest.raises(LogUnavailable) as err:
            logs.fetch_page(client["logs"]["log"], logs.parse_filter({}), max_time_ms=5000)
        assert "cannot be reached" in str(err.value)
        assert accepted, "the client never connected to the silent server"
    finally:
        client.close()


def test_refused_connection_is_reported_unavailable_within_seconds():
    from devtools.services import free_port

    client = MongoClient(f"mongodb://127.0.0.1:{free_port()}/", serverSelectionTimeoutMS=1500, tz_aware=True)
    try:
        assert client.options.server_selection_timeout == 1.5  # gives up after this, whatever the machine
        with pytest.raises(LogUnavailable):
            logs.histogram(client["logs"]["log"], logs.parse_filter({"range": "1h"}), max_time_ms=5000)
        with pytest.raises(LogUnavailable):
            logs.export_chunks(client["logs"]["log"], logs.parse_filter({}), fmt="csv", limit=10, max_time_ms=5000)
    finally:
        client.close()


# --- indexes and demo data -----------------------------------------------------------------------
def test_index_report_and_creation(coll):
    coll.insert_one(_doc(NOW))
    assert logs.missing_indexes(coll) == ["timestamp_-1__id_-1", "level_1_timestamp_-1__id_-1"]
    assert logs.ensure_indexes(coll) == ["timestamp_-1__id_-1", "level_1_timestamp_-1__id_-1"]
    assert logs.missing_indexes(coll) == []
    assert logs.ensure_indexes(coll) == []


def test_demo_generator_shape(coll):
    from ops import logs_demo

    assert logs_demo.generate(coll, 3000, days=2, seed=4, now=NOW, batch_size=700) == 3000
    assert coll.count_documents({}) == 3000
    docs = list(coll.find({}))
    # HCAP's transport stores info and above only.
    assert {d["level"] for d in docs} == {"error", "warn", "info"}
    assert all(isinstance(d["timestamp"], datetime) and NOW - timedelta(days=2) <= d["timestamp"] <= NOW for d in docs)
    assert all(isinstance(d["message"], str) for d in docs)
    assert any("\n    at " in d.get("metadata", {}).get("stack", "") for d in docs), "no stack traces"
    assert any(d["message"].startswith("{") and isinstance(json.loads(d["message"]), dict) for d in docs)
    assert 0 < sum("metadata" in d for d in docs) < 3000
    assert not any("meta" in d or "label" in d or "hostname" in d for d in docs)
    assert all(isinstance(d["metadata"], dict) for d in docs if "metadata" in d)
