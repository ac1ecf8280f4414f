"""WCAG 2.1 A/AA on every page, for every role that can see it, checked
with axe-core in headless Chromium, empty and with data.

The pages come from tests/access_table.py (which fails when a named URL has
no entry), so a new page is checked here without being listed: every GET
entry a role gets a 200 for is a page, unless it is an API endpoint or named
in NOT_PAGES (fragments and downloads; test_not_pages_are_not_pages keeps
that list honest).  The same pages, rendered by the test client, must not
show raw template syntax."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import page_data
from tests.access_table import ACCESS, ROLES

AXE = Path(__file__).resolve().parent.parent / "node_modules" / "axe-core" / "axe.min.js"
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]

# GET entries that answer 200 but are not whole pages.
NOT_PAGES = {
    "healthz": "plain-text probe",
    "readyz": "JSON probe",
    "audit_export_csv": "CSV download",
    "audit_export_json": "JSON download",
    "job_live": "htmx fragment of the job page (checked inside job_detail)",
    "logs-histogram": "htmx fragment of the logs page (checked inside logs)",
    "logs-follow": "htmx fragment of the logs page",
}


def _states(entry) -> tuple[str, ...]:
    # A page with an object in its path shows that object: "data" only.
    return ("data",) if "{" in entry.path else ("empty", "data")


PAGES = [
    (name, role, state)
    for name, entry in sorted(ACCESS.items())
    if entry.method == "GET" and not entry.path.startswith("/api/") and name not in NOT_PAGES
    for role in ROLES
    if entry.expect[role] == 200
    for state in _states(entry)
]

# The log page's expandable rows nest interactive content; the log browser's
# owner is fixing it.  raises= keeps any other violation a real failure.


class KnownViolation(AssertionError):
    """Only the violation named in the xfail reason was found."""


KNOWN: dict[str, str] = {}  # page name -> an axe rule id known to fail there (xfail, strict)


def _marks(name, role, state):
    if name in KNOWN:
        return [pytest.mark.xfail(strict=True, raises=KnownViolation,
                                  reason=f"{name}: axe '{KNOWN[name]}' (serious), fixed in the log browser")]
    return []


PAGE_PARAMS = [pytest.param(n, r, s, id=f"{n}-{r}-{s}", marks=_marks(n, r, s)) for n, r, s in PAGES]


@pytest.fixture(scope="module")
def worlds(tmp_path_factory, pg, mongo_url):
    yield from page_data.worlds_fixture(tmp_path_factory, pg, mongo_url)


@pytest.fixture
def site(settings, worlds, demo_users):
    """site(state) points the portal at the demo data of that state."""
    return lambda state: worlds(state).apply(settings)


def _path(entry) -> str:
    return entry.path.format(**(entry.setup() if entry.setup else {}))


def _session_cookie(role: str, live_server) -> list[dict]:
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client

    client = Client()
    client.force_login(get_user_model().objects.get(username=role))
    return [{"name": settings.SESSION_COOKIE_NAME, "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
             "url": live_server.url}]


def _axe(page) -> list[dict]:
    page.add_script_tag(path=str(AXE))
    return page.evaluate(
        """async (tags) => {
            const r = await axe.run(document, {runOnly: {type: "tag", values: tags}, resultTypes: ["violations"]});
            return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                            nodes: v.nodes.map(n => ({target: n.target.join(" "),
                                                                      html: n.html.slice(0, 200),
                                                                      summary: n.failureSummary}))}));
        }""",
        WCAG_TAGS,
    )


def _describe(violations) -> str:
    lines = []
    for v in violations:
        lines.append(f"{v['id']} ({v['impact']}): {v['help']}")
        for node in v["nodes"][:5]:
            lines.append(f"    {node['target']}: {node['html']}\n      {node['summary']}")
    return "\n".join(lines)


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name,role,state", PAGE_PARAMS)
def test_page_meets_wcag21_aa(name, role, state, site, browser, live_server):
    site(state)
    entry = ACCESS[name]
    path = _path(entry)
    context = browser.new_context(base_url=live_server.url)
    try:
        if role != "anonymous":
            context.add_cookies(_session_cookie(role, live_server))
        page = context.new_page()
        page.set_default_timeout(30_000)
        response = page.goto(path, wait_until="networkidle")  # htmx fragments loaded on page load included
        assert response.status == 200, (path, response.status)
        assert page.url.split("?")[0].endswith(path.split("?")[0]), page.url
        violations = _axe(page)
    finally:
        context.close()
    known = KNOWN.get(name)
    others = [v for v in violations if v["id"] != known]
    assert not others, f"{path} as {role} ({state}):\n{_describe(others)}"
    if known and any(v["id"] == known for v in violations):
        raise KnownViolation(_describe(violations))


# Error pages the portal renders itself (not named URLs).
ERROR_PAGES = [("/audit/", "viewer", 403), ("/no-such-page/", "viewer", 404), ("/jobs/999999/", "admin", 404),
               ("/migrations/?status=bogus", "admin", 400), ("/no-such-page/", "anonymous", 404)]


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path,role,status", ERROR_PAGES, ids=[f"{p}-{r}" for p, r, _ in ERROR_PAGES])
def test_error_page_meets_wcag21_aa(path, role, status, site, browser, live_server):
    site("empty")
    context = browser.new_context(base_url=live_server.url)
    try:
        if role != "anonymous":
            context.add_cookies(_session_cookie(role, live_server))
        page = context.new_page()
        response = page.goto(path, wait_until="networkidle")
        assert response.status == status
        violations = _axe(page)
    finally:
        context.close()
    assert not violations, f"{path} as {role}:\n{_describe(violations)}"


# --- the page list itself, and raw template syntax (test client, no browser) ------------------
RAW = ("{#", "#}", "{%", "{{")
GET_ENTRIES = [(n, r) for n, e in sorted(ACCESS.items()) if e.method == "GET" for r in ROLES if e.expect[r] == 200]


def _get(client, role, path):
    from django.contrib.auth import get_user_model

    client.logout()
    if role != "anonymous":
        client.force_login(get_user_model().objects.get(username=role))
    return client.get(path)


@pytest.mark.django_db
@pytest.mark.parametrize("state", ["empty", "data"])
def test_not_pages_are_not_pages(state, site, client):
    """Every page is a whole HTML document; every NOT_PAGES entry is not."""
    site(state)
    stale = sorted(set(NOT_PAGES) - set(ACCESS))
    assert not stale, f"NOT_PAGES names URLs that no longer exist: {stale}"
    for name, role in GET_ENTRIES:
        entry = ACCESS[name]
        response = _get(client, role, _path(entry))
        body = b"".join(response.streaming_content) if response.streaming else response.content
        whole = response["Content-Type"].startswith("text/html") and body.lstrip()[:15].lower() == b"<!doctype html>"
        if entry.path.startswith("/api/") or name in NOT_PAGES:
            assert not whole, f"{name} renders a whole page: remove it from NOT_PAGES"
        else:
            assert whole, f"{name} ({response['Content-Type']}) is not a whole page: add it to NOT_PAGES with a reason"


# A multi-line {# ... #} comment is not a Django comment: it is printed as text.
RAW_KNOWN: dict[str, str] = {}  # page name -> why it is known to print raw template syntax (xfail, strict)
RAW_NAMES = sorted({n for n, _ in GET_ENTRIES})


@pytest.mark.django_db
@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.xfail(strict=True, reason=RAW_KNOWN[n])]
                                               if n in RAW_KNOWN else []) for n in RAW_NAMES])
def test_no_raw_template_syntax(name, site, client):
    """No response (page, fragment, export or API), empty or with data, for
    any role, shows `{{`, `{%`, `{#` or `#}`: the demo data contains none,
    so any is an unrendered template (a tag split over lines, a multi-line
    comment, a typo in a tag name)."""
    found = []
    for state in ("empty", "data"):
        site(state)
        for role in [r for n, r in GET_ENTRIES if n == name]:
            response = _get(client, role, _path(ACCESS[name]))
            body = (b"".join(response.streaming_content) if response.streaming else response.content).decode()
            hits = [token for token in RAW if token in body]
            if hits:
                at = body.find(hits[0])
                found.append(f"{name} as {role} ({state}): {hits} near {body[max(0, at - 80):at + 80]!r}")
    assert not found, "\n".join(found)


@pytest.mark.django_db
@pytest.mark.parametrize("path,role,status", ERROR_PAGES, ids=[f"{p}-{r}" for p, r, _ in ERROR_PAGES])
def test_no_raw_template_syntax_on_error_pages(path, role, status, site, client):
    site("empty")
    response = _get(client, role, path)
    assert response.status_code == status
    body = response.content.decode()
    assert not [token for token in RAW if token in body], body
