"""HCAP's real log documents: entries written by the real ``winston`` 3 and
``winston-mongodb`` 7 packages (node, default transport options as HCAP's
``server/logger.ts`` uses them, plus one transport with ``label`` and
``storeHost``) into the test FerretDB, then read through the page, the API,
every filter, the detail view and both exports."""

from __future__ import annotations

import csv
import html
import io
import json
import os
import re
import subprocess
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from bson import ObjectId
from pymongo import MongoClient

from ops import logs
from tests.test_logs_views import page_text

UTC = timezone.utc
ROOT = Path(__file__).resolve().parent.parent
LEVEL_RANK = {lv: i for i, lv in enumerate(logs.LEVELS)}

# Reads a plan (JSON on stdin) of log calls and performs them with two
# winston loggers: "a" has a winston-mongodb transport with only `db` set
# (HCAP's configuration), "b" one with `label` and `storeHost` too.  Exits
# once every stored entry is acknowledged ("logged" events).
NODE_SCRIPT = r"""
const path = require('path');
const root = process.env.HCAPADMIN_ROOT;
const winston = require(path.join(root, 'node_modules', 'winston'));
const { MongoDB } = require(path.join(root, 'node_modules', 'winston-mongodb'));
const plan = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const transports = {
  a: new MongoDB({ db: plan.url }),
  b: new MongoDB({ db: plan.url, label: 'hcap-server', storeHost: true }),
};
const loggers = {
  a: winston.createLogger({ transports: [transports.a] }),
  b: winston.createLogger({ transports: [transports.b] }),
};
let logged = 0;
function done() {
  Promise.all(Object.values(transports).map(t => t.mongoClient && t.mongoClient.close())).then(
    () => process.exit(0), () => process.exit(0));
}
for (const t of Object.values(transports)) {
  t.on('logged', () => { logged += 1; if (logged === plan.expect) done(); });
  t.on('error', err => { console.error('transport error', err); process.exit(2); });
}
function arg(value) {
  if (value && typeof value === 'object' && value.__error__) {
    const err = new Error(value.__error__);
    if (value.code) err.code = value.code;
    return err;
  }
  return value;
}
for (const call of plan.calls) {
  loggers[call.logger][call.level](...call.args.map(arg));
}
if (plan.expect === 0) done();
"""

STRANGE = 'cost $5 for "quoted" \\ back\\slash (.*) [a-z]+ ^start end$ {$gt: 1} ünïcødé 日本語 🚀'
CALLS = [
    {"logger": "a", "level": "info", "args": [STRANGE]},
    {"logger": "a", "level": "warn", "args": ["Slow request", {"req": {"status": 500, "url": "/api/v1/x?a=1&b=$2"},
                                                              "tags": ["a", {"deep": [1, 2, None]}], "ok": True,
                                                              "ratio": 0.25, "dotted.key": 1, "$dollar": "x"}]},
    {"logger": "a", "level": "error", "args": ["Failed to save participant:", {"__error__": "boom: $ne", "code": "E_DB"}]},
    {"logger": "a", "level": "error", "args": [{"__error__": "thrown alone"}]},
    {"logger": "a", "level": "info", "args": [{"event": "upload", "count": 3, "ids": [1, 2]}]},
    {"logger": "a", "level": "info", "args": [json.dumps({"event": "json-encoded", "n": 1})]},
    {"logger": "a", "level": "info", "args": ["multi\nline\n\tmessage"]},
    {"logger": "a", "level": "debug", "args": ["below the transport's level: never stored"]},
    {"logger": "a", "level": "http", "args": ["GET / 200 (not stored either)"]},
    {"logger": "b", "level": "warn", "args": ["from the labelled transport", {"req": {"status": 500}}]},
    {"logger": "b", "level": "info", "args": ["labelled info"]},
]
STORED = [c for c in CALLS if LEVEL_RANK[c["level"]] <= LEVEL_RANK["info"]]


def _renamed(meta):
    """winston-mongodb's key rewriting: '.' -> '[dot]', '$' -> '[$]'."""
    if isinstance(meta, dict):
        return {k.replace(".", "[dot]").replace("$", "[$]"): _renamed(v) for k, v in meta.items()}
    if isinstance(meta, list):
        return [_renamed(v) for v in meta]
    return meta


def write_with_winston(mongo_url: str, database: str) -> tuple[datetime, datetime]:
    url = mongo_url.rstrip("/") + "/" + database
    plan = {"url": url, "calls": CALLS, "expect": len(STORED)}
    started = datetime.now(UTC)
    out = subprocess.run(["node", "-e", NODE_SCRIPT], input=json.dumps(plan), capture_output=True, text=True,
                         timeout=120, env=dict(os.environ, HCAPADMIN_ROOT=str(ROOT)), cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return started, datetime.now(UTC)


@pytest.fixture(scope="module")
def winston_logs(mongo_url):
    """(collection, [stored documents in call order], started, finished)."""
    database = "winston_" + uuid.uuid4().hex[:8]
    client = MongoClient(mongo_url, tz_aware=True)
    started, finished = write_with_winston(mongo_url, database)
    coll = client[database]["log"]
    docs = list(coll.find({}, sort=[("_id", 1)]))
    yield coll, docs, started, finished
    client.drop_database(database)
    client.close()


@pytest.fixture
def source(winston_logs, settings):
    coll = winston_logs[0]
    settings.LOG_SOURCES = {"hcap": (coll.database.name, coll.name)}
    return winston_logs


def test_document_shape_written_by_winston_mongodb(winston_logs):
    coll, docs, started, finished = winston_logs
    assert len(docs) == len(STORED)  # debug and http calls are below the transport's level
    # The inserts are asynchronous and from two clients: compare as multisets.
    assert sorted((d.get("label") is not None, d["level"]) for d in docs) == sorted(
        (c["logger"] == "b", c["level"]) for c in STORED)
    for doc in docs:
        assert isinstance(doc["_id"], ObjectId)
        assert isinstance(doc["timestamp"], datetime)
        assert started - timedelta(seconds=1) <= doc["timestamp"] <= finished + timedelta(seconds=1)
        assert isinstance(doc["message"], str)
        assert "meta" not in doc  # the transport's metaKey is "metadata"
        keys = list(doc)
        assert keys[:4] == ["_id", "timestamp", "level", "message"]
        if "label" in doc:
            assert doc["label"] == "hcap-server" and isinstance(doc["hostname"], str)
        else:
            assert "hostname" not in doc
    by_message = {d["message"]: d for d in docs}
    assert STRANGE in by_message and "metadata" not in by_message[STRANGE]
    slow = by_message["Slow request"]
    assert slow["metadata"] == _renamed(CALLS[1]["args"][1])
    failed = by_message["Failed to save participant: boom: $ne"]
    assert failed["metadata"]["stack"].startswith("Error: boom: $ne\n    at ")
    # The transport's own index, named timestamp_1 but descending.
    assert any(dict(i["key"]) == {"timestamp": -1} for i in coll.list_indexes())


def _items(client, params) -> list[dict]:
    r = client.get("/api/v1/logs", {"limit": "500", **params})
    assert r.status_code == 200, r.content
    return r.json()["items"]


@pytest.mark.django_db
def test_api_shows_exactly_what_was_logged(client_as, source):
    coll, docs, started, finished = source
    items = _items(client_as("viewer"), {})
    want = sorted(docs, key=lambda d: (d["timestamp"], d["_id"]), reverse=True)
    assert [i["id"] for i in items] == [str(d["_id"]) for d in want]
    for item, doc in zip(items, want):
        assert item["message"] == doc["message"]
        assert item["meta"] == logs.jsonable(doc.get("metadata"))
        assert item["timestamp"] == logs.iso(doc["timestamp"])
        assert item["level"] == doc["level"] and item["label"] == doc.get("label")
        assert item["hostname"] == doc.get("hostname")
    messages = {i["message"] for i in items}
    assert STRANGE in messages and "multi\nline\n\tmessage" in messages
    assert json.dumps({"event": "json-encoded", "n": 1}) in messages
    slow = next(i for i in items if i["message"] == "Slow request")
    assert slow["meta"] == _renamed(CALLS[1]["args"][1])


@pytest.mark.django_db
def test_every_filter_on_winston_documents(client_as, source):
    coll, docs, started, finished = source
    client = client_as("viewer")

    def ids(params):
        return sorted(i["id"] for i in _items(client, params))

    def want(pred):
        return sorted(str(d["_id"]) for d in docs if pred(d))

    assert ids({"level": "error"}) == want(lambda d: d["level"] == "error") and len(ids({"level": "error"})) == 2
    assert ids({"level": "warn,info"}) == want(lambda d: d["level"] in ("warn", "info"))
    # Levels the transport never stored are valid filters that match nothing.
    assert ids({"level": "debug"}) == [] and ids({"level": "silly,http"}) == []
    for text in ("$5", '"quoted"', "back\\slash", "(.*)", "[a-z]+", "^start", "end$", "{$gt: 1}", "ÜNÏCØDÉ",
                 "日本語", "🚀", "$ne"):
        got = ids({"q": text})
        assert got == want(lambda d: text.lower() in d["message"].lower()), text
        assert got, text
    assert ids({"meta.req.status": "500"}) == want(lambda d: d.get("metadata", {}).get("req", {}).get("status") == 500)
    assert len(ids({"meta.req.status": "500"})) == 2
    assert ids({"meta.ok": "true"}) == want(lambda d: d.get("metadata", {}).get("ok") is True)
    assert ids({"meta.ratio": "0.25", "meta.req.status": "500"}) == want(
        lambda d: d.get("metadata", {}).get("ratio") == 0.25)
    assert ids({"meta.code": "E_DB"}) == want(lambda d: d.get("metadata", {}).get("code") == "E_DB")
    assert ids({"label": "hcap-server"}) == want(lambda d: d.get("label") == "hcap-server")
    host = next(d["hostname"] for d in docs if "hostname" in d)
    assert ids({"host": host}) == want(lambda d: d.get("hostname") == host) and len(ids({"host": host})) == 2
    since = logs.iso(started - timedelta(seconds=1))
    until = logs.iso(finished + timedelta(seconds=1))
    assert ids({"since": since, "until": until}) == want(lambda d: True)
    assert ids({"until": since}) == []
    assert ids({"since": since, "level": "warn", "label": "hcap-server", "meta.req.status": "500"}) == want(
        lambda d: d["level"] == "warn" and d.get("label") == "hcap-server")


@pytest.mark.django_db
def test_page_detail_and_histogram_show_winston_documents(client_as, source):
    coll, docs, started, finished = source
    client = client_as("viewer")
    page = page_text(client.get("/logs/", {"range": "24h", "tz": "UTC"}))
    assert page.count('class="log-row') == len(docs)
    assert html.escape(STRANGE) in page
    slow = next(d for d in docs if d["message"] == "Slow request")
    meta_json = json.dumps(logs.jsonable(slow["metadata"]), indent=2, ensure_ascii=False, sort_keys=True)
    assert html.escape(meta_json) in page  # metadata shown in the expandable row
    for doc in docs:
        detail = client.get(f"/logs/entry/{doc['_id']}/", {"tz": "UTC"})
        assert detail.status_code == 200
        body = page_text(detail)
        assert html.escape(doc["message"].splitlines()[0]) in body
        if "metadata" in doc:
            shown = json.dumps(logs.jsonable(doc["metadata"]), indent=2, ensure_ascii=False, sort_keys=True)
            assert html.escape(shown) in body
    meta_page = page_text(client.get("/logs/", {"range": "24h", "meta.req.status": "500"}))
    assert meta_page.count('class="log-row') == 2
    hist = page_text(client.get("/logs/histogram", {"range": "1h"}))
    assert f"{len(docs)} matching documents" in hist
    legend = re.search(r'<p class="hist-legend">(.*?)</p>', hist, re.S).group(1)
    assert "■ error 2" in legend and "■ info" in legend and "□ debug (none)" in legend and "□ http (none)" in legend


@pytest.mark.django_db
def test_exports_carry_winston_metadata(client_as, source):
    coll, docs, started, finished = source
    client = client_as("admin")
    api = _items(client, {})
    r = client.get("/logs/export", {"format": "ndjson", "range": "24h"})
    assert r.status_code == 200
    lines = [json.loads(line) for line in b"".join(r.streaming_content).decode().splitlines()]
    assert lines == api
    r = client.get("/logs/export", {"format": "csv", "range": "24h", "meta.req.status": "500"})
    rows = list(csv.DictReader(io.StringIO(b"".join(r.streaming_content).decode())))
    assert len(rows) == 2
    for row in rows:
        item = next(i for i in api if i["id"] == row["id"])
        assert row["message"] == item["message"]
        assert json.loads(row["meta"]) == item["meta"]


@pytest.mark.django_db
def test_meta_keys_setting_reads_meta_for_older_setups(client_as, source, settings):
    coll, docs, started, finished = source
    older = {"_id": ObjectId(), "timestamp": datetime.now(UTC), "level": "warn", "message": "older setup",
             "meta": {"req": {"status": 500}}}
    coll.insert_one(older)
    try:
        client = client_as("viewer")
        got = _items(client, {"meta.req.status": "500"})
        assert {i["message"] for i in got} == {"older setup", "Slow request", "from the labelled transport"}
        assert next(i for i in got if i["message"] == "older setup")["meta"] == {"req": {"status": 500}}
        settings.LOG_META_KEYS = ("metadata",)
        got = _items(client, {"meta.req.status": "500"})
        assert {i["message"] for i in got} == {"Slow request", "from the labelled transport"}
        assert next(i for i in _items(client, {}) if i["message"] == "older setup")["meta"] is None
        settings.LOG_META_KEYS = ("meta", "metadata")
        assert {i["message"] for i in _items(client, {"meta.req.status": "500"})} == {
            "older setup", "Slow request", "from the labelled transport"}
    finally:
        coll.delete_one({"_id": older["_id"]})


@pytest.mark.django_db
def test_logs_indexes_reports_metadata_fields(source):
    from django.core.management import call_command

    out = io.StringIO()
    call_command("logs_indexes", "--source", "hcap", stdout=out)
    text = out.getvalue()
    assert "metadata field 'metadata' in use" in text and "metadata field 'meta' not in any document" in text
    assert "HCAPADMIN_LOG_META_KEYS=metadata" in text


def test_demo_documents_have_the_winston_shape(winston_logs, mongo_url):
    from ops import logs_demo

    _, docs, _, _ = winston_logs
    client = MongoClient(mongo_url, tz_aware=True)
    coll = client["winstondemo"]["log_" + uuid.uuid4().hex[:8]]
    try:
        logs_demo.generate(coll, 2000, days=1, seed=3)
        demo = list(coll.find({}))
    finally:
        coll.drop()
        client.close()
    real_plain = [d for d in docs if "label" not in d]

    def shape(doc):
        return [(k, type(v).__name__) for k, v in doc.items()]

    real_shapes = {tuple(shape(d)) for d in real_plain}
    demo_shapes = {tuple(shape(d)) for d in demo}
    # Exactly the shapes HCAP's transport writes: with and without metadata.
    assert demo_shapes == real_shapes
    assert {d["level"] for d in demo} == {"error", "warn", "info"}
    assert any(isinstance(d.get("metadata", {}).get("stack"), str) for d in demo)
