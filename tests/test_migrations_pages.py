"""Migrations pages and API on a real database and the real node-pg-migrate."""

from __future__ import annotations

import pytest

from tests.test_migrations import SAMPLE_ORDER, fresh_db, run_tool, sample  # noqa: F401  (fixtures)


@pytest.fixture
def configured(settings, sample, fresh_db):  # noqa: F811
    """Point the portal at a fresh database and a copy of the sample folder."""
    _, url, _ = fresh_db
    settings.MIGRATIONS_DIR = str(sample)
    settings.MANAGED_DATABASE_URL = url
    return sample, url


@pytest.mark.django_db
def test_list_page_shows_statuses_counts_and_summary(client_as, configured):
    folder, url = configured
    assert run_tool(folder, url, "up", "3")[0] == 0
    response = client_as("viewer").get("/migrations/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "3 pending; the next deploy will apply them." in html
    assert 'data-testid="count-applied">3<' in html and 'data-testid="count-pending">3<' in html
    assert "20201001120000000_sites.js" in html and "2020-10-01 12:00 UTC" in html
    assert html.count('class="badge status-applied"') == 3
    assert "Apply pending migrations" not in html  # viewers cannot operate
    admin_html = client_as("admin").get("/migrations/").content.decode()
    assert "Apply 3 pending migrations" in admin_html
    assert response["Cache-Control"].startswith("max-age=0") or "no-cache" in response["Cache-Control"]


@pytest.mark.django_db
def test_list_page_tells_errors_apart(client_as, settings, tmp_path, fresh_db):  # noqa: F811
    from devtools.services import free_port

    _, url, _ = fresh_db
    settings.MIGRATIONS_DIR = str(tmp_path / "missing")
    settings.MANAGED_DATABASE_URL = url
    html = client_as("viewer").get("/migrations/").content.decode()
    assert 'data-testid="source-error"' in html and "does not exist" in html
    assert 'data-testid="database-error"' not in html
    assert 'data-testid="table-missing"' in html
    (tmp_path / "missing").mkdir()
    settings.MANAGED_DATABASE_URL = f"postgres://postgres:x@127.0.0.1:{free_port()}/hcap"
    html = client_as("viewer").get("/migrations/").content.decode()
    assert 'data-testid="database-error"' in html and "unreachable" in html
    assert 'data-testid="source-error"' not in html


@pytest.mark.django_db
def test_list_page_bad_query_is_400(client_as, configured):
    client = client_as("viewer")
    assert client.get("/migrations/?status=bogus").status_code == 400
    assert client.get("/migrations/?page=99").status_code == 400
    assert client.get("/migrations/?page=x").status_code == 400
    assert client.get("/migrations/?status=pending&page=1").status_code == 200


@pytest.mark.django_db
def test_detail_page_highlights_up_and_down(client_as, configured):
    folder, url = configured
    assert run_tool(folder, url, "up", "1")[0] == 0
    client = client_as("auditor")
    response = client.get("/migrations/1590000000000_applicants/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<code>up</code> at line 2" in html and "<code>down</code> at line 22" in html
    assert 'class="hll"' in html  # the up/down lines are marked
    assert "createTable" in html and 'class="source"' in html
    assert 'data-testid="status">applied<' in html
    sql = client.get("/migrations/1600000000000_employer-expressions/").content.decode()
    assert "<code>up</code> at line 1" in sql and "<code>down</code> at line 8" in sql
    broken = client.get("/migrations/1630000000000_broken-backfill/").content.decode()
    assert 'data-testid="status">pending<' in broken
    assert client.get("/migrations/1999999999999_nope/").status_code == 404
    assert client.get("/migrations/assets/").status_code == 404
    assert client.get("/migrations/.gitkeep/").status_code == 400
    assert client.get("/migrations/..%2Fsecret/").status_code in (400, 404)


@pytest.mark.django_db
def test_detail_of_missing_migration(client_as, configured):
    folder, url = configured
    assert run_tool(folder, url, "up", "2")[0] == 0
    (folder / "1600000000000_employer-expressions.sql").unlink()
    html = client_as("viewer").get("/migrations/1600000000000_employer-expressions/").content.decode()
    assert 'data-testid="status">missing<' in html and "deleted from the code" in html


@pytest.mark.django_db
def test_api_lists(client_as, configured):
    folder, url = configured
    (folder / "1630000000000_broken-backfill.js").unlink()
    assert run_tool(folder, url, "up", "3")[0] == 0
    (folder / "1600000000000_employer-expressions.sql").unlink()
    (folder / "1595000000000_late-merge.sql").write_text("-- Up Migration\nSELECT 1;\n")
    client = client_as("viewer")
    body = client.get("/api/v1/migrations").json()
    assert [i["name"] for i in body["applied"]] == ["1590000000000_applicants", "20201001120000000_sites"]
    assert all(i["run_on"] and i["file"] for i in body["applied"])
    assert body["missing"] == [{"name": "1600000000000_employer-expressions", "run_on": body["missing"][0]["run_on"],
                                "file": None}]
    assert body["missing"][0]["run_on"]
    assert body["out_of_order"] == [{"name": "1595000000000_late-merge", "run_on": None,
                                     "file": "1595000000000_late-merge.sql"}]
    assert [i["name"] for i in body["pending"]] == ["1610000000000_load-sites", "1620000000000_applicant-status"]
    assert body["refusal"] == ("Not run migration 1595000000000_late-merge is preceding already run migration "
                               "1600000000000_employer-expressions")
    only = client.get("/api/v1/migrations?status=pending").json()
    assert set(only) - {"summary", "refusal", "load_error", "table_exists", "warnings"} == {"pending"}
    assert client.get("/api/v1/migrations?status=nope").status_code == 400
    assert client.get("/api/v1/migrations?foo=1").status_code == 400
    assert client.post("/api/v1/migrations").status_code == 405


@pytest.mark.django_db
def test_api_unreachable_database_is_503(client_as, settings, sample):  # noqa: F811
    from devtools.services import free_port

    settings.MIGRATIONS_DIR = str(sample)
    settings.MANAGED_DATABASE_URL = f"postgres://postgres:x@127.0.0.1:{free_port()}/hcap"
    response = client_as("viewer").get("/api/v1/migrations")
    assert response.status_code == 503
    assert "unreachable" in response.json()["database_error"]


@pytest.mark.django_db
def test_apply_refused_up_front_with_reason(client_as, configured):
    from hcapadmin.audit.models import AuditEvent

    folder, url = configured
    (folder / "1630000000000_broken-backfill.js").unlink()
    assert run_tool(folder, url, "up")[0] == 0
    (folder / "1595000000000_late-merge.sql").write_text("-- Up Migration\nSELECT 1;\n")
    client = client_as("admin")
    html = client.get("/migrations/").content.decode()
    assert 'data-testid="apply-refused"' in html and "Apply 1 pending" not in html
    response = client.post("/migrations/apply/", {"confirm": "apply", "expected": ["1595000000000_late-merge"]})
    assert response.status_code == 409
    body = response.content.decode()
    assert "Not run migration 1595000000000_late-merge is preceding already run migration" in body
    event = AuditEvent.objects.filter(action="migrations.apply").first()
    assert event.outcome == "denied" and "would refuse" in event.details["reason"]
    from hcapadmin.jobs.models import Job

    assert not Job.objects.filter(kind="migrations.apply").exists()


@pytest.mark.django_db
def test_apply_bad_input(client_as, configured):
    client = client_as("admin")
    assert client.post("/migrations/apply/", {}).status_code == 400
    assert client.post("/migrations/apply/", {"confirm": "apply"}).status_code == 400
    assert client.post("/migrations/apply/", {"confirm": "apply", "expected": ["../x"]}).status_code == 400
    # stale view: what the page showed is not what is pending now -> 409, nothing queued
    response = client.post("/migrations/apply/", {"confirm": "apply", "expected": ["1590000000000_applicants"]})
    assert response.status_code == 409 and "changed since the page was shown" in response.content.decode()
    assert client_as("viewer").post("/migrations/apply/", {"confirm": "apply"}).status_code == 403


@pytest.mark.django_db
def test_detail_page_for_unusual_file_names(client_as, configured):
    folder, _ = configured
    (folder / "1700000000000_with space & ampersand.sql").write_text("-- Up Migration\nSELECT 1;\n")
    client = client_as("viewer")
    html = client.get("/migrations/").content.decode()
    assert 'href="/migrations/1700000000000_with%20space%20%26%20ampersand/"' in html
    detail = client.get("/migrations/1700000000000_with%20space%20%26%20ampersand/")
    assert detail.status_code == 200 and "with space &amp; ampersand" in detail.content.decode()
    assert client.get("/migrations/%01control/").status_code == 400


@pytest.mark.django_db
def test_bad_input_is_a_whole_400_page(client_as, configured):
    """The apply post answered bare text/plain; the list's query string
    takes ASCII digits only (str.isdigit also took "²")."""
    client = client_as("admin")
    for data, reason in (({}, "confirm=apply is required"),
                         ({"confirm": "apply"}, "the names of the pending migrations"),
                         ({"confirm": " apply"}, "confirm=apply is required")):
        response = client.post("/migrations/apply/", data)
        html = response.content.decode()
        assert response.status_code == 400 and response["Content-Type"].startswith("text/html"), data
        assert '<html lang="en">' in html and "<title>Bad request" in html and reason in html, data
    for query in ("page=%C2%B2", "page=%D9%A3", "status=", "status=bogus"):
        response = client.get("/migrations/?" + query)
        assert response.status_code == 400 and "<title>Bad request" in response.content.decode(), query
    assert client.get("/api/v1/migrations?page=1").json() == {"error": "unknown parameter(s): page"}
