"""Log browser pages and API through the Django test client and a real
browser, against the harness's FerretDB (no mocks)."""

from __future__ import annotations

import csv
import io
import json
import uuid
from urllib.parse import quote
from datetime import datetime, timedelta, timezone

import pytest
from bson import ObjectId
from hypothesis import HealthCheck, example, given, settings as hsettings, strategies as st

from ops import logs

UTC = timezone.utc


def page_text(response) -> str:
    """A response's body as text; the log page streams (its rows follow the
    part above them, see hcapadmin.logbrowser.views.logs_page)."""
    if response.streaming:
        return b"".join(response.streaming_content).decode()
    return response.content.decode()


@pytest.fixture
def source(mclient, settings):
    """Point the portal's default source at a fresh collection."""
    name = "log_" + uuid.uuid4().hex[:10]
    settings.LOG_SOURCES = {"hcap": ("viewtests", name), "other": ("viewtests", name + "_other")}
    coll = mclient["viewtests"][name]
    yield coll
    coll.drop()
    mclient["viewtests"][name + "_other"].drop()


def _docs(n, *, now=None, start=0):
    now = now or datetime.now(UTC).replace(microsecond=0)
    out = []
    for i in range(start, start + n):
        level = logs.LEVELS[i % len(logs.LEVELS)]
        doc = {"_id": ObjectId(), "timestamp": now - timedelta(seconds=30 * i), "level": level,
               "message": f"message {i} first line\nsecond line {i}"}
        if i % 3 == 0:
            doc["meta"] = {"req": {"status": 500 if i % 2 else 200}, "n": i}
        if i % 4 == 0:
            doc["label"] = "hcap-server"
        if i % 5 == 0:
            doc["hostname"] = f"pod-{i % 2}"
        out.append(doc)
    return out


@pytest.fixture
def filled(source):
    docs = _docs(130)
    source.insert_many(docs)
    return docs


# --- page ---------------------------------------------------------------------------------
@pytest.mark.django_db
def test_page_lists_newest_first_with_local_and_utc_times(client_as, filled):
    client = client_as("viewer")
    r = client.get("/logs/", {"tz": "America/Vancouver"})
    assert r.status_code == 200
    html = page_text(r)
    rows = html.count('class="log-row')
    assert rows == 50
    first = filled[0]
    assert str(first["_id"]) in html
    assert logs.iso(first["timestamp"]) in html  # UTC shown
    local = first["timestamp"].astimezone(__import__("zoneinfo").ZoneInfo("America/Vancouver"))
    assert local.strftime("%Y-%m-%d %H:%M:%S") in html
    assert 'class="log-level lv-error"' in html
    assert "<details>" in html and "second line 0" in html
    assert 'data-url="/logs/histogram?' in html
    assert "Export" not in html  # viewers cannot export


@pytest.mark.django_db
def test_page_pagination_older_and_newer_links(client_as, filled):
    import re

    client = client_as("viewer")
    seen = []
    url = "/logs/?range=24h&limit=40"
    pages = []
    while url:
        r = client.get(url)
        assert r.status_code == 200
        html = page_text(r)
        ids = re.findall(r'data-id="([0-9a-f]{24})"', html)
        pages.append((url, ids))
        seen += ids
        m = re.search(r'href="([^"]+)" rel="next"', html)
        url = m.group(1).replace("&amp;", "&") if m else None
    assert seen == [str(d["_id"]) for d in filled]
    # "Newer" from the last page leads back to the page before it.
    last_html = page_text(client.get(pages[-1][0]))
    newer = re.search(r'href="([^"]+)" rel="prev"', last_html).group(1).replace("&amp;", "&")
    back = re.findall(r'data-id="([0-9a-f]{24})"', page_text(client.get(newer)))
    assert back == pages[-2][1]


@pytest.mark.django_db
def test_filters_live_in_the_url(client_as, filled):
    client = client_as("viewer")
    r = client.get("/logs/", {"level": ["error", "warn"], "label": "hcap-server", "q": "MESSAGE 1", "range": "24h"})
    html = page_text(r)
    want = [d for d in filled if d["level"] in ("error", "warn") and d.get("label") == "hcap-server"
            and "message 1" in d["message"]]
    assert want and html.count('class="log-row') == len(want)
    for d in want:
        assert str(d["_id"]) in html
    # The form shows the current filter, so the page can be shared and refined.
    assert 'value="error" checked' in html and 'value="MESSAGE 1"' in html


@pytest.mark.django_db
def test_meta_box_redirects_to_meta_params(client_as, filled):
    client = client_as("viewer")
    r = client.get("/logs/", {"meta": "req.status=500\n n = 3 ", "range": "24h", "q": ""})
    assert r.status_code == 302
    assert r["Location"].startswith("/logs/?") and "meta.req.status=500" in r["Location"] and "q=" not in r["Location"]
    html = page_text(client.get(r["Location"]))
    want = [d for d in filled if d.get("meta", {}).get("req", {}).get("status") == 500 and d["meta"]["n"] == 3]
    assert html.count('class="log-row') == len(want) == 1
    assert client.get("/logs/", {"meta": "no equals sign"}).status_code == 400
    r = client.get("/logs/", {"meta.$where": "1"})
    assert r.status_code == 400 and "meta key" in page_text(r)


@pytest.mark.django_db
def test_missing_index_warning_for_admins_only(client_as, filled, source):
    assert "Indexes missing" in page_text(client_as("admin").get("/logs/"))
    assert "Indexes missing" not in page_text(client_as("viewer").get("/logs/"))
    logs.ensure_indexes(source)
    assert "Indexes missing" not in page_text(client_as("admin").get("/logs/"))


@pytest.mark.django_db
def test_logs_indexes_command_reports_and_applies(filled, source):
    from django.core.management import call_command

    out = io.StringIO()
    call_command("logs_indexes", "--source", "hcap", stdout=out)
    assert "timestamp_-1__id_-1 MISSING" in out.getvalue() and "--apply" in out.getvalue()
    out = io.StringIO()
    call_command("logs_indexes", "--apply", "--source", "hcap", stdout=out)
    assert "created level_1_timestamp_-1__id_-1" in out.getvalue()
    assert logs.missing_indexes(source) == []
    from hcapadmin.audit.models import AuditEvent

    event = AuditEvent.objects.get(action="logs.indexes_created")
    assert event.actor.startswith("manage.py (") and event.target == f"viewtests.{source.name}"
    assert sorted(event.details["indexes"]) == ["level_1_timestamp_-1__id_-1", "timestamp_-1__id_-1"]


@pytest.mark.django_db
def test_source_selector(client_as, filled, mclient, settings):
    db, name = settings.LOG_SOURCES["other"]
    mclient[db][name].insert_one({"timestamp": datetime.now(UTC), "level": "warn", "message": "from the other source"})
    client = client_as("viewer")
    html = page_text(client.get("/logs/", {"source": "other"}))
    assert "from the other source" in html and html.count('class="log-row') == 1
    assert client.get("/logs/", {"source": "nope"}).status_code == 400
    assert client.get("/api/v1/logs", {"source": "other"}).json()["items"][0]["message"] == "from the other source"


# --- histogram, follow, detail ------------------------------------------------------------------
@pytest.mark.django_db
def test_histogram_partial_counts_and_narrowing_links(client_as, filled, source):
    client = client_as("viewer")
    r = client.get("/logs/histogram", {"range": "1h", "level": "error"})
    assert r.status_code == 200
    html = page_text(r)
    expected = sum(1 for d in filled if d["level"] == "error" and d["timestamp"] >= datetime.now(UTC) - timedelta(hours=1))
    assert f"{expected} matching documents" in html
    assert "<svg" in html and 'class="hist-error"' in html and 'class="hist-info"' not in html
    import re

    link = re.search(r'<a href="(/logs/\?[^"]+)"', html).group(1).replace("&amp;", "&")
    assert "since=" in link and "until=" in link and "level=error" in link
    assert client.get(link).status_code == 200
    assert client.get("/logs/histogram", {"range": "all"}).status_code == 400  # needs a range


@pytest.mark.django_db
def test_follow_returns_only_new_matching_rows(client_as, filled, source):
    import re

    client = client_as("viewer")
    html = page_text(client.get("/logs/", {"range": "1h", "level": "error", "follow": "1"}))
    poll = re.search(r'id="follow-poller" hx-get="([^"]+)" hx-trigger="every \d+s"', html).group(1).replace("&amp;", "&")
    r = client.get(poll)
    assert r.status_code == 200 and 'class="log-row' not in page_text(r)
    new_error = {"_id": ObjectId(), "timestamp": datetime.now(UTC) + timedelta(seconds=1), "level": "error", "message": "NEW ONE"}
    source.insert_many([new_error, {"timestamp": datetime.now(UTC) + timedelta(seconds=1), "level": "info", "message": "not me"}])
    body = page_text(client.get(poll))
    assert 'hx-swap-oob="afterbegin:#log-rows"' in body and "NEW ONE" in body and "not me" not in body
    next_poll = re.search(r'hx-get="([^"]+)"', body).group(1).replace("&amp;", "&")
    assert next_poll != poll
    assert "NEW ONE" not in page_text(client.get(next_poll))


@pytest.mark.django_db
def test_detail_view_pretty_json_copy_and_minute_link(client_as, filled):
    client = client_as("viewer")
    doc = filled[3]
    r = client.get(f"/logs/entry/{doc['_id']}/", {"tz": "UTC"})
    assert r.status_code == 200
    html = page_text(r)
    assert 'class="highlight"' in html and "Copy JSON" in html
    assert '<span class="nt">"message"</span>' in html  # Pygments token markup
    minute = doc["timestamp"].replace(second=0)
    assert f"since={logs.iso(minute)}".replace(":", "%3A") in html
    assert client.get(f"/logs/entry/{ObjectId()}/").status_code == 404
    assert client.get("/logs/entry/not-an-id/").status_code == 404


# --- export ---------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_export_ndjson_and_csv_are_audited(client_as, filled, settings):
    from hcapadmin.audit.models import AuditEvent

    settings.LOG_EXPORT_LIMIT = 60
    client = client_as("admin")
    r = client.get("/logs/export", {"format": "ndjson", "range": "24h", "level": "error"})
    assert r.status_code == 200 and r["Content-Type"].startswith("application/x-ndjson")
    items = [json.loads(line) for line in b"".join(r.streaming_content).decode().splitlines()]
    want = [logs.serialize(d) for d in filled if d["level"] == "error"]
    assert items == want
    event = AuditEvent.objects.filter(action="logs.export").first()
    assert event.outcome == "success" and event.actor == "admin"
    assert event.details["filter"]["levels"] == ["error"] and event.details["format"] == "ndjson"
    r = client.get("/logs/export", {"format": "csv", "range": "24h"})
    rows = list(csv.DictReader(io.StringIO(b"".join(r.streaming_content).decode())))
    assert len(rows) == 60  # capped by LOG_EXPORT_LIMIT
    assert [row["id"] for row in rows] == [str(d["_id"]) for d in filled[:60]]
    assert rows[1]["message"] == filled[1]["message"]
    assert AuditEvent.objects.filter(action="logs.export").count() == 2
    assert client_as("viewer").get("/logs/export", {"format": "csv"}).status_code == 403
    refused = client_as("admin").get("/logs/export", {"format": "csv", "level": "fatal"})
    assert refused.status_code == 400 and "level: expected one of" in page_text(refused)
    event = AuditEvent.objects.filter(action="logs.export").first()
    assert event.outcome == "failure" and "level" in event.details["error"]


# --- API --------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_api_pages_with_next_cursor(client_as, filled):
    client = client_as("viewer")
    got, cursor = [], None
    while True:
        params = {"limit": "50", "level": "info,error"}
        if cursor:
            params["before"] = cursor
        body = client.get("/api/v1/logs", params).json()
        got += body["items"]
        cursor = body["next"]
        if not cursor:
            break
    want = [logs.serialize(d) for d in filled if d["level"] in ("info", "error")]
    assert got == want
    assert set(got[0]) == {"id", "timestamp", "level", "message", "meta", "label", "hostname"}
    assert got[0]["timestamp"].endswith("Z")


@pytest.mark.django_db
def test_log_cursor_is_signed_for_its_use_only(client_as, filled):
    """The cursor is django.core.signing salted hcapadmin.logs.cursor: a
    cursor signed for another use (or unsalted) is a 400, as is an edit."""
    from django.core import signing

    client = client_as("viewer")
    first = client.get("/api/v1/logs", {"limit": "5"}).json()
    value = signing.Signer(salt="hcapadmin.logs.cursor").unsign(first["next"])
    second = client.get("/api/v1/logs", {"limit": "5", "before": first["next"]}).json()
    assert [i["id"] for i in second["items"]] == [str(d["_id"]) for d in filled[5:10]]
    for forged in (signing.Signer(salt="hcapadmin.audit.cursor").sign(value), signing.Signer().sign(value), value,
                   first["next"][:-1], first["next"] + "x"):
        r = client.get("/api/v1/logs", {"before": forged})
        assert r.status_code == 400 and "cursor" in r.json()["error"], forged
        assert client.get("/logs/", {"before": forged}).status_code == 400
        assert client.get("/logs/follow", {"after": forged}).status_code == 400


@pytest.mark.django_db
def test_api_bad_input_is_400_json(client_as, filled):
    client = client_as("viewer")
    for params in ({"level": "fatal"}, {"before": "forged.cursor"}, {"limit": "0"}, {"since": "soon"},
                   {"meta.a$b": "1"}, {"before": "x", "after": "y"}, {"source": "$where"}):
        r = client.get("/api/v1/logs", params)
        assert r.status_code == 400, params
        assert "error" in r.json()


@pytest.mark.django_db
def test_api_operator_injection_is_plain_text(client_as, filled, source):
    source.insert_one({"timestamp": datetime.now(UTC), "level": "info", "message": 'literal {"$gt": ""} here',
                       "label": '{"$ne": null}'})
    client = client_as("viewer")
    assert [i["message"] for i in client.get("/api/v1/logs", {"q": '{"$gt": ""}'}).json()["items"]] == [
        'literal {"$gt": ""} here']
    assert len(client.get("/api/v1/logs", {"label": '{"$ne": null}'}).json()["items"]) == 1
    assert client.get("/api/v1/logs", {"host": '{"$ne": null}'}).json()["items"] == []
    assert client.get("/api/v1/logs", {"q": ".*"}).json()["items"] == []
    assert client.get("/api/v1/logs", {"label[$ne]": "x"}).json()["items"]  # unknown param ignored, not an operator


# --- hostile input (property-based) ---------------------------------------------------------------
# Every query parameter the page, the API, the histogram, follow, the detail
# view and both exports read.
PARAMS = ("source", "level", "q", "label", "host", "since", "until", "before", "after", "limit", "range", "tz",
          "meta.req.status", "meta", "follow", "format")
EDGE_TIMES = st.builds(
    lambda y, mo, d, h, off: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:00:00{off}",
    st.sampled_from([1, 2, 1969, 1970, 9000, 9001, 9998, 9999]), st.integers(1, 12), st.integers(1, 28),
    st.integers(0, 23), st.sampled_from(["", "Z", "+01:00", "-01:00", "+14:00", "-12:00", "+23:59"]))
hostile = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=60),
    st.sampled_from(["$where", '{"$gt": ""}', "{$ne: 1}", "this.a == 1", ".*", "(a+)+$", "[", "\\", "%00", "\x00",
                     "2026-03-08T02:30", "9999-12-31T23:59", "0000-01-01", "../../etc", "é" * 600, "1e309", "-1",
                     "error,$ne", "eyJ4IjoxfQ.eyJ4IjoxfQ", "undefined", "null", "0001-01-01T00:00:00+01:00",
                     "0001-01-01T00:00:00Z", "9999-12-31T23:59:59-01:00", "٢٠٢٦-١١-٢٥T١٠:٠٠", "２０２６-１１-２５", "١٢",
                     "a=b\nreq.status=５００", "=1", "a..b=1"]),
    EDGE_TIMES,
)


@pytest.mark.django_db
@hsettings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.dictionaries(st.sampled_from(PARAMS), hostile, min_size=1, max_size=4),
       meta_key=st.one_of(st.text(st.characters(blacklist_categories=("Cs",)), max_size=20), st.sampled_from(["$where", "a.$gt", "a..b", "ok_key", "a.b"])),
       api=st.booleans())
@example(values={"since": "0001-01-01T00:00:00+01:00"}, meta_key="ok_key", api=True)
@example(values={"since": "0001-01-01T00:00:00Z"}, meta_key="ok_key", api=False)
@example(values={"until": "9999-12-31T23:59:59-01:00", "tz": "Pacific/Kiritimati"}, meta_key="a.b", api=False)
def test_hostile_strings_never_500(client_as, filled, values, meta_key, api):
    client = client_as("admin")
    params = dict(values)
    params["meta." + meta_key] = values.get("q", "x")
    path = "/api/v1/logs" if api else "/logs/"
    r = client.get(path, params)
    assert r.status_code in (200, 302, 400), (path, params, r.status_code)
    if r.streaming:
        assert "log-error" not in page_text(r)  # the streamed rows must not fail half-way either
    if api and r.status_code == 400:
        assert "error" in r.json()
    if r.status_code == 200 and api:
        for item in r.json()["items"]:
            assert set(item) == {"id", "timestamp", "level", "message", "meta", "label", "hostname"}
    for extra, more in (("/logs/histogram", {}), ("/logs/follow", {}), ("/logs/export", {}),
                        ("/logs/export", {"format": "csv"}), ("/logs/export", {"format": "ndjson"})):
        r = client.get(extra, {**params, **more})
        assert r.status_code in (200, 302, 400), (extra, params, r.status_code)
        if extra == "/logs/export" and r.status_code == 200:
            b"".join(r.streaming_content)  # the stream itself must not fail either
    doc_id = values.get("q") or values.get("label") or "x"
    for detail_id in (doc_id, str(filled[0]["_id"])):
        r = client.get("/logs/entry/" + quote(detail_id, safe="") + "/", params)
        assert r.status_code in (200, 400, 404), (detail_id, params, r.status_code)


@pytest.mark.django_db
@pytest.mark.parametrize("doc_id", ["\x00", "abc\x00def", "\x1b[31m", "\x7f"])
def test_entry_id_with_control_characters_is_not_found(client_as, filled, doc_id):
    """Found by the hypothesis test: FerretDB refuses NUL in a query, which
    came back as a 503 instead of "no such entry"."""
    r = client_as("admin").get("/logs/entry/" + quote(doc_id, safe="") + "/")
    assert r.status_code == 404


@pytest.mark.django_db
def test_invalid_utf8_in_query_string_is_not_500(client_as, filled):
    client = client_as("admin")
    for path in ("/logs/", "/api/v1/logs", "/logs/histogram"):
        r = client.get(path, QUERY_STRING="q=%ff%fe&label=%c0%af&meta.%ff=1&before=%80")
        assert r.status_code in (200, 400), path


# --- outages ------------------------------------------------------------------------------------------
@pytest.fixture
def silent_mongo(settings, silent_server):
    """MONGO_URL pointing at a TCP server that accepts and never answers."""
    from hcapadmin.logbrowser import mongo

    port, conns = silent_server
    settings.MONGO_URL = f"mongodb://127.0.0.1:{port}/"
    settings.MONGO_CONNECT_TIMEOUT_MS = 1500
    yield conns
    client = mongo._clients.pop(settings.MONGO_URL, None)
    if client is not None:
        client.close()


@pytest.mark.django_db
def test_mongo_not_answering_gives_clear_error_within_seconds(client_as, silent_mongo, settings):
    from hcapadmin.logbrowser import mongo

    client = client_as("admin")
    r = client.get("/logs/")
    # The page's status line goes out before its rows are queried (it streams):
    # the reason stands in place of the rows.
    assert r.status_code == 200 and 'data-testid="log-error">' in (body := page_text(r))
    assert "cannot be reached" in body and 'class="log-table' not in body
    # it gives up after the configured connect timeout (not timed here: that depends on the machine)
    options = mongo._clients[settings.MONGO_URL].options
    assert options.server_selection_timeout == 1.5 and options.pool_options.connect_timeout == 1.5
    r = client.get("/api/v1/logs")
    assert r.status_code == 503 and "cannot be reached" in r.json()["error"]
    assert silent_mongo, "never connected to the silent server"
    assert client.get("/restores/").status_code == 200  # the rest of the portal works


@pytest.mark.django_db
def test_query_timeout_is_reported_not_500(client_as, source, settings):
    source.insert_many(_docs(4000))
    settings.LOG_MAX_TIME_MS = 1
    client = client_as("viewer")
    r = client.get("/logs/", {"q": "message"})
    assert r.status_code == 200 and "Narrow the time range" in (body := page_text(r))
    assert 'data-testid="log-error">' in body and 'class="log-table' not in body
    r = client.get("/api/v1/logs", {"q": "message"})
    assert r.status_code == 504 and "Narrow the time range" in r.json()["error"]
    assert "Narrow the time range" in page_text(client.get("/logs/histogram", {"range": "24h"}))


# --- browser ----------------------------------------------------------------------------------------------
@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_browser_filter_page_expand_export(login_page_as, source):
    source.insert_many(_docs(130))
    page = login_page_as("admin")
    page.goto("/logs/")
    page.get_by_label("Message contains").fill("FIRST LINE")
    page.locator('input[name="level"][value="error"]').check()
    page.locator('input[name="level"][value="info"]').check()
    page.get_by_role("button", name="Apply filters").click()
    page.wait_for_url("**/logs/?*level=error*")
    assert "q=FIRST+LINE" in page.url
    rows = page.locator("tr.log-row")
    assert rows.count() == 38  # 19 error + 19 info rows among 130 (130 / 7 levels)
    page.locator("#histogram svg").wait_for()
    # Page to the end with 20 a page: older, then back newer.
    page.goto(page.url + "&limit=20")
    first_ids = rows.evaluate_all("rs => rs.map(r => r.dataset.id)")
    page.get_by_role("link", name="Older ›").click()
    page.wait_for_url("**before=*")
    second_ids = rows.evaluate_all("rs => rs.map(r => r.dataset.id)")
    assert len(second_ids) == 18 and not set(first_ids) & set(second_ids)
    # Expand a row: the full multi-line message shows.
    summary = page.locator("tr.log-row details summary").first
    summary.click()
    assert page.locator("tr.log-row details[open] pre.log-full").first.inner_text().count("\n") >= 1
    # Export NDJSON: a real download whose lines are the filtered documents.
    with page.expect_download() as info:
        page.get_by_role("link", name="NDJSON").click()
    lines = open(info.value.path(), encoding="utf-8").read().splitlines()
    levels = {json.loads(line)["level"] for line in lines}
    assert len(lines) == 38 and levels == {"error", "info"}


@pytest.mark.parametrize("value", ["nodots", "a=b", "=logs.log", "x=lo$gs.log", "a=logs.log,a=logs.other"])
def test_bad_log_sources_setting_stops_startup(value):
    import os
    import subprocess
    import sys

    env = dict(os.environ, HCAPADMIN_LOG_SOURCES=value)
    out = subprocess.run([sys.executable, "-c", "import django; django.setup()"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0 and "HCAPADMIN_LOG_SOURCES" in out.stderr


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_browser_follow_mode_prepends_new_entries(login_page_as, source, settings):
    settings.LOG_FOLLOW_SECONDS = 1
    source.insert_many(_docs(10))
    page = login_page_as("viewer")
    page.goto("/logs/?range=1h&level=error")
    page.get_by_role("button", name="Follow").click()
    page.wait_for_url("**follow=1*")
    page.locator("#follow-poller").wait_for()
    before = page.locator("tr.log-row").count()
    source.insert_many([
        {"timestamp": datetime.now(UTC) + timedelta(seconds=1), "level": "error", "message": "FRESH ERROR"},
        {"timestamp": datetime.now(UTC) + timedelta(seconds=1), "level": "info", "message": "fresh info"},
    ])
    first = page.locator("tr.log-row").first
    first.get_by_text("FRESH ERROR").wait_for(timeout=15_000)
    assert page.locator("tr.log-row").count() == before + 1
    assert page.get_by_text("fresh info").count() == 0


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_browser_histogram_error_is_shown_not_left_loading(login_page_as, source):
    """htmx ignores 4xx/5xx responses unless told otherwise; the histogram
    section shows the server's message instead of "Loading histogram..."
    forever.  The request below is a real one to the real view: a histogram
    without a time range is refused with 400."""
    source.insert_many(_docs(20))
    page = login_page_as("admin")
    page.goto("/logs/?range=1h")
    page.locator("#histogram svg").wait_for()
    page.evaluate("htmx.ajax('GET', '/logs/histogram?range=all', {target: '#histogram', swap: 'innerHTML'})")
    page.locator("#histogram").get_by_text("time range", exact=False).wait_for()
    assert page.locator("#histogram svg").count() == 0


def test_histogram_geometry_is_svgchart_stacked_bars():
    """The histogram keeps its geometry (960 x 120, 1-unit gaps, known levels
    most severe first and other levels as "other") through svgchart."""
    from types import SimpleNamespace
    from zoneinfo import ZoneInfo

    from hcapadmin.logbrowser.views import _svg_histogram

    start = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
    buckets = [logs.Bucket(start + timedelta(hours=i), start + timedelta(hours=i + 1), counts)
               for i, counts in enumerate(({"info": 1000, "error": 1, "fatal": 3}, {}, {"warn": 500}))]
    flt = logs.make_filter(range="24h")
    parsed = SimpleNamespace(filter=flt, base_params=lambda with_time=True: flt.params(with_time=with_time))
    hist = _svg_histogram(buckets, parsed, ZoneInfo("UTC"))
    assert (hist["width"], hist["height"], hist["max"], hist["total"]) == (960, 120, 1004, 1504)
    first, empty, third = hist["bars"]
    assert [(r["level"], r["x"], r["w"]) for r in first["rects"]] == [("error", 1, 318), ("info", 1, 318),
                                                                      ("other", 1, 318)]
    assert [r["h"] for r in first["rects"]] == [1, round(1000 / 1004 * 120, 2), 1]  # small counts stay visible
    assert first["rects"][0]["y"] == 119 and empty["rects"] == [] and third["x"] == 640
    assert third["rects"][0]["h"] == round(500 / 1004 * 120, 2)
    assert first["href"].startswith("/logs/?") and "since=2026-11-25T12%3A00%3A00.000Z" in first["href"]


@pytest.mark.django_db
def test_entry_page_reads_source_and_tz_through_its_form(client_as, filled):
    client = client_as("viewer")
    doc = filled[0]
    for params, reason in (({"tz": "Mars/Olympus"}, "tz: unknown time zone"), ({"source": "nope"}, "source:")):
        r = client.get(f"/logs/entry/{doc['_id']}/", params)
        assert r.status_code == 400 and "<title>Bad request" in page_text(r) and reason in page_text(r)


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_browser_histogram_arrives_while_rows_are_held(login_page_as, source, monkeypatch):
    """The histogram's request does not wait for the rows: with the rows
    query held in the live server (same process, its own request thread),
    the chart still arrives; the rows follow once released."""
    import threading

    source.insert_many(_docs(20))
    page = login_page_as("admin")
    entered, release = threading.Event(), threading.Event()
    real = logs.fetch_page

    def held(*args, **kwargs):
        entered.set()
        release.wait(120)  # failure guard only: the test releases it
        return real(*args, **kwargs)

    monkeypatch.setattr(logs, "fetch_page", held)
    try:
        page.goto("/logs/?range=1h", wait_until="commit")
        page.locator("#histogram svg").wait_for()
        assert entered.is_set() and page.locator("tr.log-row").count() == 0
        assert page.evaluate("document.readyState") == "loading"  # the rows' part has not come
    finally:
        release.set()
    page.locator("tr.log-row").first.wait_for()
    page.wait_for_load_state("load")
    assert page.locator("tr.log-row").count() == 20


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_browser_rows_arrive_while_histogram_is_held(login_page_as, source):
    """And the other way round: with the histogram's response withheld by
    the browser, the page and its rows load completely."""
    source.insert_many(_docs(20))
    page = login_page_as("admin")
    held = []
    page.route("**/logs/histogram?*", lambda route: held.append(route))
    page.goto("/logs/?range=1h")  # returns at the load event: the whole page, rows included
    assert page.locator("tr.log-row").count() == 20
    for _ in range(600):  # the intercepted request reaches this side as an event; a failure guard only
        if held:
            break
        page.wait_for_timeout(50)
    assert len(held) == 1 and page.locator("#histogram").get_by_text("Loading histogram").count() == 1
    held[0].continue_()
    page.locator("#histogram svg").wait_for()
    assert "20 matching documents" in page.locator("#histogram figcaption").inner_text()
