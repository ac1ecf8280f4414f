"""Bad input at the edges of what the log browser reads: dates at both ends
of the calendar, digits that are not ASCII, and documents whose
``timestamp`` is not a date.  Through the real views and FerretDB."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from bson import ObjectId

from ops import logs
from tests.test_logs_views import page_text

UTC = timezone.utc

EDGE_TIMES = [
    "0001-01-01T00:00:00+01:00",   # before year 1 once in UTC
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00",         # local, shown in a zone west of UTC
    "9999-12-31T23:59:59-01:00",   # after 9999 once in UTC
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59",
    "9999-12-31",
    "1969-12-31T23:59:59Z",
    "٢٠٢٦-١١-٢٥T١٠:٠٠",            # Arabic-Indic digits
    "２０２６-１１-２５",             # full-width digits
]
PATHS = ["/logs/", "/api/v1/logs", "/logs/histogram", "/logs/export", "/logs/follow"]


@pytest.fixture
def source(mclient, settings):
    name = "log_" + uuid.uuid4().hex[:10]
    settings.LOG_SOURCES = {"hcap": ("edgetests", name)}
    coll = mclient["edgetests"][name]
    now = datetime.now(UTC).replace(microsecond=0)
    coll.insert_many([{"timestamp": now - timedelta(minutes=i), "level": "info", "message": f"m{i}"} for i in range(5)])
    yield coll
    coll.drop()


@pytest.mark.django_db
@pytest.mark.parametrize("value", EDGE_TIMES)
@pytest.mark.parametrize("param", ["since", "until"])
def test_edge_times_are_400_everywhere(client_as, source, value, param):
    client = client_as("admin")
    for path in PATHS:
        for tz in ("America/Vancouver", "Pacific/Kiritimati", "UTC"):
            r = client.get(path, {param: value, "tz": tz})
            assert r.status_code == 400, (path, param, value, tz, r.status_code)
            body = page_text(r)
            assert param in body


@pytest.mark.django_db
def test_times_inside_the_bounds_still_work(client_as, source):
    client = client_as("admin")
    for params in ({"since": "1970-01-01T00:00:00Z"}, {"since": "2020-01-01T10:00:00+23:59"}, {"since": "2000-01-01", "until": "9000-12-30T23:59:59-12:00"},
                   {"since": "1970-01-01", "until": "9000-12-31T23:59:59", "tz": "Pacific/Kiritimati"}):
        for path in PATHS:
            r = client.get(path, params)
            assert r.status_code == 200, (path, params, r.status_code)
        assert len(client.get("/api/v1/logs", params).json()["items"]) == 5


def test_parse_time_bounds_and_ascii_only():
    tz = logs.parse_timezone("America/Vancouver")
    assert logs.parse_time("1970-01-01T00:00:00Z", tz, "since") == logs.TIME_MIN
    with pytest.raises(logs.LogFilterError, match="from 1970 to 9000"):
        logs.parse_time("1969-12-31T16:00:00-07:59", tz, "since")
    for text in ("٢٠٢٦-١١-٢٥", "2026-11-２５", "2026\u200b-11-25"):
        with pytest.raises(logs.LogFilterError, match="expected a date/time"):
            logs.parse_time(text, tz, "since")
    with pytest.raises(logs.LogFilterError):
        logs.parse_limit("١٢")
    assert logs.meta_candidates("١٢") == ["١٢"]  # text, not the number 12


def test_histogram_edges_never_overflow():
    for since, until in ((logs.TIME_MIN, logs.TIME_MIN + timedelta(seconds=1)),
                         (logs.TIME_MAX - timedelta(days=30), logs.TIME_MAX),
                         (logs.TIME_MIN, logs.TIME_MAX)):
        edges = logs.bucket_edges(since, until)
        assert edges[0][0] == since and edges[-1][1] == until


# --- documents whose timestamp is not a date -------------------------------------------
def _mixed(coll):
    """Dated documents and undated ones (string, null, missing, number), so
    that with limit=2 page boundaries fall on every kind."""
    now = datetime.now(UTC).replace(microsecond=0)
    docs = [{"_id": ObjectId(), "timestamp": now - timedelta(seconds=i), "level": "info", "message": f"dated {i}"}
            for i in range(5)]
    docs.append({"_id": ObjectId(), "timestamp": docs[-1]["timestamp"], "level": "info", "message": "dated tie"})
    odd = [
        {"_id": ObjectId(), "timestamp": "2026-11-25T10:00:00Z", "level": "info", "message": "string ts"},
        {"_id": ObjectId(), "timestamp": None, "level": "info", "message": "null ts"},
        {"_id": ObjectId(), "level": "info", "message": "missing ts"},
        {"_id": ObjectId(), "timestamp": 1764064800000, "level": "info", "message": "number ts"},
        {"_id": ObjectId(), "timestamp": {"nested": 1}, "level": "warn", "message": "object ts"},
    ]
    coll.insert_many(docs + odd)
    listing = sorted(docs, key=lambda d: (d["timestamp"], d["_id"].binary), reverse=True)
    listing += sorted(odd, key=lambda d: d["_id"].binary, reverse=True)
    return listing


@pytest.mark.parametrize("limit", [1, 2, 3, 4, 7])
def test_undated_documents_on_page_boundaries(mclient, limit):
    coll = mclient["edgetests"]["mixed_" + uuid.uuid4().hex[:8]]
    try:
        listing = _mixed(coll)
        flt = logs.parse_filter({})
        seen, pages, before = [], [], None
        while True:
            page = logs.fetch_page(coll, flt, before=before, limit=limit)
            pages.append(page)
            seen += page.items
            if page.older is None:
                break
            # Cursors of undated boundaries survive the signed round trip.
            before = logs.position_from(logs.cursor_value(page.older))
            assert len(pages) < 50
        assert [d["_id"] for d in seen] == [d["_id"] for d in listing]
        # And back up through "newer" links, page by page.
        for upper, lower in zip(reversed(pages[:-1]), reversed(pages[1:])):
            newer = logs.position_from(logs.cursor_value(lower.newer))
            assert [d["_id"] for d in logs.fetch_page(coll, flt, after=newer, limit=limit).items] == \
                [d["_id"] for d in upper.items]
        # A time range holds dated documents only.
        ranged = logs.fetch_page(coll, logs.parse_filter({"range": "7d"}), limit=50).items
        assert [d["_id"] for d in ranged] == [d["_id"] for d in listing[:6]]
    finally:
        coll.drop()


@pytest.mark.django_db
def test_undated_documents_through_page_api_and_detail(client_as, source):
    source.delete_many({})
    listing = _mixed(source)
    client = client_as("viewer")
    got, cursor = [], None
    while True:
        params = {"limit": "2"} | ({"before": cursor} if cursor else {})
        r = client.get("/api/v1/logs", params)
        assert r.status_code == 200
        got += r.json()["items"]
        cursor = r.json()["next"]
        if not cursor:
            break
    assert [i["id"] for i in got] == [str(d["_id"]) for d in listing]
    assert [i["timestamp"] for i in got[-5:]] == [
        '{"nested": 1}', "1764064800000", None, None, "2026-11-25T10:00:00Z"]
    url = "/logs/?range=all&limit=2"
    ids = []
    while url:
        html = page_text(client.get(url))
        ids += re.findall(r'data-id="([0-9a-f]{24})"', html)
        m = re.search(r'href="([^"]+)" rel="next"', html)
        url = m.group(1).replace("&amp;", "&") if m else None
    assert ids == [str(d["_id"]) for d in listing]
    for doc in listing[-5:]:
        assert client.get(f"/logs/entry/{doc['_id']}/").status_code == 200
    r = client_as("admin").get("/logs/export", {"format": "csv", "range": "all"})
    assert r.status_code == 200 and b"missing ts" in b"".join(r.streaming_content)


@pytest.mark.parametrize("value", [",", "metadata,metadata", "meta.data", "$meta", "a b", "x" * 65])
def test_bad_meta_keys_setting_stops_startup(value):
    import os
    import subprocess
    import sys

    env = dict(os.environ, HCAPADMIN_LOG_META_KEYS=value)
    out = subprocess.run([sys.executable, "-c", "import django; django.setup()"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0 and "HCAPADMIN_LOG_META_KEYS" in out.stderr


def test_meta_keys_setting_is_read_in_order():
    import os
    import subprocess
    import sys

    env = dict(os.environ, HCAPADMIN_LOG_META_KEYS="meta, metadata")
    out = subprocess.run([sys.executable, "-c", "import django; django.setup(); from django.conf import settings; "
                          "print(settings.LOG_META_KEYS)"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "('meta', 'metadata')"


@pytest.mark.django_db
def test_stored_dates_at_the_calendar_edges_are_shown_not_500(client_as, source, settings):
    """Dates a document may hold that Python cannot show in every zone (year 1
    west of UTC, 9999-12-31 east of it) or cannot hold at all (BSON dates
    beyond year 9999)."""
    from bson.datetime_ms import DatetimeMS

    edge = [
        {"_id": ObjectId(), "timestamp": datetime(1, 1, 1, tzinfo=UTC), "level": "info", "message": "year one"},
        {"_id": ObjectId(), "timestamp": datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC), "level": "warn",
         "message": "year 9999"},
        {"_id": ObjectId(), "timestamp": DatetimeMS(2 ** 50), "level": "error", "message": "beyond 9999"},
    ]
    source.insert_many(edge)
    client = client_as("admin")
    for tz in ("America/Vancouver", "Pacific/Kiritimati", "UTC"):
        for path, params in (("/logs/", {"range": "all", "limit": "2"}), ("/api/v1/logs", {"limit": "2"}),
                             ("/logs/export", {"range": "all", "format": "csv"}),
                             ("/logs/export", {"range": "all", "format": "ndjson"})):
            url, seen = path, 0
            query = {**params, "tz": tz}
            while url:
                r = client.get(url, query)
                assert r.status_code == 200, (path, tz, r.status_code)
                body = b"".join(r.streaming_content) if r.streaming else r.content
                if path == "/api/v1/logs":
                    seen += len(r.json()["items"])
                    url, query = (path, {"limit": "2", "before": r.json()["next"]}) if r.json()["next"] else (None, None)
                    continue
                if path == "/logs/":
                    seen += body.decode().count('class="log-row')
                    m = re.search(r'href="([^"]+)" rel="next"', body.decode())
                    url, query = (m.group(1).replace("&amp;", "&"), {}) if m else (None, None)
                    continue
                seen = len([line for line in body.decode().splitlines() if line.strip()]) - (path == "/logs/export"
                                                                                          and params["format"] == "csv")
                url = None
            assert seen == 8, (path, tz, seen)
        for doc in edge:
            r = client.get(f"/logs/entry/{doc['_id']}/", {"tz": tz})
            assert r.status_code == 200, (doc["message"], tz, r.status_code)
