"""The log page in a real browser: axe-core's WCAG 2.1 A/AA rules find
nothing (with the histogram loaded, rows expanded and metadata shown), and
no template text leaks into the page."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from bson import ObjectId
from pymongo import MongoClient

UTC = timezone.utc
AXE = Path(__file__).resolve().parent.parent / "node_modules" / "axe-core" / "axe.min.js"


@pytest.fixture
def source(mongo_url, settings):
    client = MongoClient(mongo_url, tz_aware=True)
    name = "log_" + uuid.uuid4().hex[:10]
    settings.LOG_SOURCES = {"hcap": ("a11ytests", name)}
    coll = client["a11ytests"][name]
    now = datetime.now(UTC).replace(microsecond=0)
    coll.insert_many([
        {"_id": ObjectId(), "timestamp": now - timedelta(minutes=3 * i), "level": ("error", "warn", "info")[i % 3],
         "message": f"line one {i}\n    at frame ({i}.js:1:1)", "metadata": {"req": {"status": 500}, "i": i},
         "hostname": "hcap-server-1", "label": "hcap-server"}
        for i in range(12)
    ])
    yield coll
    coll.drop()
    client.close()


def _axe(page) -> list[dict]:
    page.add_script_tag(content=AXE.read_text(encoding="utf-8"))
    result = page.evaluate(
        """async () => {
            const r = await axe.run(document, {runOnly: {type: 'tag',
                values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}});
            return r.violations.map(v => ({id: v.id, impact: v.impact,
                nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}));
        }"""
    )
    return result


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_log_page_passes_axe_wcag21_aa(login_page_as, source):
    page = login_page_as("admin")
    page.goto("/logs/?range=24h")
    page.locator("#histogram svg").wait_for()
    page.locator("tr.log-row details summary").first.click()
    violations = _axe(page)
    assert violations == [], json.dumps(violations, indent=1)
    # Django's {# #} comments are single-line: a multi-line one is printed as text.
    body = page.locator("body").inner_text()
    assert "{#" not in body and "#}" not in body and "htmx does not swap" not in body
    # The same with the follow poller and an error message on the page.
    page.goto("/logs/?range=1h&follow=1")
    page.locator("#follow-poller").wait_for()
    assert _axe(page) == []
    page.goto("/logs/?level=fatal")
    assert _axe(page) == []
