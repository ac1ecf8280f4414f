"""The log queries as data: the histogram's MongoDB plan (one indexed
aggregation per bucket) and FerretDB plan (one projected find, bucketed in
Python) have the shapes docs/logs.md describes, and both, executed on the
test FerretDB, count exactly what is there."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from bson import ObjectId
from pymongo import MongoClient, monitoring

from ops import logs

UTC = timezone.utc
NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
pytestmark = pytest.mark.django_db  # the suite's session fixtures need the test database


@pytest.fixture(scope="module")
def coll(mongo_url):
    client = MongoClient(mongo_url, tz_aware=True)
    c = client["plantests"]["log_" + uuid.uuid4().hex[:8]]
    rng = random.Random(3)
    docs = []
    for i in range(1500):
        doc = {"_id": ObjectId(), "timestamp": NOW - timedelta(seconds=rng.randrange(30 * 3600)),
               "level": rng.choice(("error", "warn", "info")), "message": f"m{i}"}
        if i % 3 == 0:
            doc["metadata"] = {"req": {"status": rng.choice((200, 500))}}
        elif i % 3 == 1:
            doc["meta"] = {"req": {"status": rng.choice((200, 500))}}
        docs.append(doc)
    docs += [{"_id": ObjectId(), "timestamp": "not a date", "level": "info", "message": "odd"},
             {"_id": ObjectId(), "level": "error", "message": "no timestamp"}]
    c.insert_many(docs)
    yield c
    c.drop()
    client.close()


def test_server_kind_of_the_test_server_is_ferretdb(coll):
    assert logs.server_kind(coll.database) == logs.FERRETDB
    info = coll.database.command("buildInfo")
    assert "ferretdbVersion" in info  # what server_kind looks for


def test_mongodb_plan_is_one_indexed_aggregation_per_bucket():
    flt = logs.parse_filter({"range": "24h", "level": "error"}, now=NOW)
    plan = logs.histogram_plan(flt, now=NOW, server=logs.MONGODB)
    assert plan.server == logs.MONGODB and 1 <= len(plan.edges) <= logs.MAX_BUCKETS + 1
    assert len(plan.queries) == len(plan.edges)
    for (start, end), query in zip(plan.edges, plan.queries):
        assert query == {"op": "aggregate", "hint": None, "pipeline": [
            # Flat: an equality and a range the level_1_timestamp_-1__id_-1 index serves.
            {"$match": {"timestamp": {"$gte": start, "$lt": end}, "level": "error"}},
            {"$group": {"_id": "$level", "n": {"$sum": 1}}},
        ]}
    assert plan.edges[0][0] == flt.since and plan.edges[-1][1] == NOW


def test_ferretdb_plan_is_one_projected_find():
    flt = logs.parse_filter({"range": "24h", "level": "error"}, now=NOW)
    plan = logs.histogram_plan(flt, now=NOW, server=logs.FERRETDB)
    assert plan.queries == [{"op": "find", "filter": {"timestamp": {"$gte": flt.since, "$lt": NOW}, "level": "error"},
                             "projection": {"_id": 0, "timestamp": 1, "level": 1}, "sort": None, "hint": None}]


def test_meta_filters_are_one_or_over_the_metadata_fields():
    flt = logs.parse_filter({"range": "24h", "meta.req.status": "500", "meta.n": "1"}, now=NOW)
    assert flt.to_query(with_time=False) == {"$or": [
        {"metadata.n": {"$in": ["1", 1]}, "metadata.req.status": {"$in": ["500", 500]}},
        {"meta.n": {"$in": ["1", 1]}, "meta.req.status": {"$in": ["500", 500]}},
    ]}
    one = logs.parse_filter({"meta.req.status": "500"}, meta_keys=("metadata",))
    assert one.to_query() == {"metadata.req.status": {"$in": ["500", 500]}}
    plan = logs.histogram_plan(flt, now=NOW, server=logs.MONGODB)
    assert all(set(q["pipeline"][0]["$match"]) == {"timestamp", "$or"} for q in plan.queries)


@pytest.mark.parametrize("params", [
    {"range": "24h"}, {"range": "24h", "level": "error"}, {"range": "7d", "level": ["warn", "info"]},
    {"range": "24h", "meta.req.status": "500"}, {"since": "2026-11-25T09:59:59.5Z", "until": "2026-11-25T10:00:31Z"},
])
def test_both_plans_count_the_same_on_the_server(coll, params):
    flt = logs.parse_filter(params, now=NOW)
    mongo = logs.run_histogram(coll, logs.histogram_plan(flt, now=NOW, server=logs.MONGODB), max_time_ms=60_000)
    ferret = logs.run_histogram(coll, logs.histogram_plan(flt, now=NOW, server=logs.FERRETDB), max_time_ms=60_000)
    assert [(b.start, b.end, b.counts) for b in mongo] == [(b.start, b.end, b.counts) for b in ferret]
    until = flt.until or NOW
    assert sum(b.total for b in ferret) == coll.count_documents(
        logs._combine({"timestamp": {"$gte": flt.since, "$lt": until}}, flt.to_query(with_time=False)))
    assert sum(b.total for b in ferret) > 0


def test_level_equality_is_still_pushed_down_to_postgresql(coll):
    """FerretDB filters a top-level equality in PostgreSQL only in a flat
    filter document; the metadata $or sits beside it, not around it."""
    for params in ({"level": "error"}, {"level": "error", "meta.req.status": "500"}):
        flt = logs.parse_filter(params)
        explain = coll.database.command("explain", {"find": coll.name, "filter": flt.to_query()})
        assert explain["filterPushdown"] is True, params


def test_empty_range_has_no_queries():
    flt = logs.parse_filter({"since": "2026-11-25T12:00:00Z"}, now=NOW)
    for server in (logs.MONGODB, logs.FERRETDB):
        plan = logs.histogram_plan(flt, now=NOW, server=server)
        assert plan.edges == [] and plan.queries == []


class _Sent(monitoring.CommandListener):
    """The find commands a client sends, as the server receives them."""

    def __init__(self):
        self.finds = []

    def started(self, event):
        if event.command_name == "find":
            self.finds.append(event.command)

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


def _served_by_an_index(command) -> bool:
    """MongoDB reads a sorted find as one index range, in order, when an
    index is the filter's equality fields followed by the sort's keys (or
    all of those reversed)."""
    equal = [(k, 1) for k, v in command["filter"].items() if k == "level" and isinstance(v, str)]
    wanted = equal + list(command["sort"].items())
    flipped = equal + [(k, -d) for k, d in command["sort"].items()]
    specs = [[(k, int(d)) for k, d in spec] for _name, spec in logs.REQUIRED_INDEXES]
    return wanted in specs or flipped in specs


@pytest.mark.parametrize("params", [{"range": "24h"}, {"range": "24h", "level": "error"}])
def test_rows_queries_as_sent_and_the_indexes_that_serve_them(coll, mongo_url, params):
    """The rows' queries are the same on both servers: a flat filter, the
    listing's sort, the page size plus one, maxTimeMS, no hint and no
    projection; each sort is served whole by one of the required indexes."""
    sent = _Sent()
    client = MongoClient(mongo_url, tz_aware=True, event_listeners=[sent])
    try:
        c = client[coll.database.name][coll.name]
        flt = logs.parse_filter(params, now=NOW)
        first = logs.fetch_page(c, flt, limit=10, max_time_ms=60_000)
        logs.fetch_page(c, flt, before=first.older, limit=10, max_time_ms=60_000)
        logs.fetch_page(c, flt, after=first.older, limit=10, max_time_ms=60_000)
    finally:
        client.close()
    level = {"level": params["level"]} if "level" in params else {}
    head, older, newer = sent.finds
    assert head["filter"] == {"timestamp": {"$gte": flt.since}, **level}
    assert older["filter"] == {"timestamp": {"$gte": flt.since, "$lte": first.older.timestamp}, **level}
    assert newer["filter"] == {"timestamp": {"$gte": first.older.timestamp}, **level}
    assert list(head["sort"].items()) == list(older["sort"].items()) == [("timestamp", -1), ("_id", -1)]
    assert list(newer["sort"].items()) == [("timestamp", 1), ("_id", 1)]
    assert head["limit"] == 11 and older["limit"] >= 11 and newer["limit"] >= 11
    for command in sent.finds:
        assert command["maxTimeMS"] == 60_000
        assert "hint" not in command and "projection" not in command and "skip" not in command
        assert _served_by_an_index(command), command
