"""Backup pages and API: catalog, warnings, chart, manual backup and verify
submission, and refusal of anything that is not a catalog name."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from hcapadmin.audit.models import AuditEvent
from hcapadmin.jobs.models import Job
from ops import backups

pytestmark = pytest.mark.django_db


@pytest.fixture
def backup_dir(tmp_path, settings):
    settings.BACKUP_DIR = str(tmp_path)
    return tmp_path


def put(root: Path, when, size: int, database="hcap", in_progress=False) -> str:
    name = backups.backup_name("hcap-patroni", database, when) + (".in_progress" if in_progress else "")
    path = root / backups.folder_kind(when.date()) / f"{when:%Y-%m-%d}" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x1f\x8b" + b"x" * size)
    return name


def test_catalog_page_shows_items_warnings_chart_and_table_fallback(client_as, backup_dir):
    now = timezone.now().replace(microsecond=0)
    old = put(backup_dir, now - timedelta(days=3), 5000)
    small = put(backup_dir, now - timedelta(days=2), 1000)
    put(backup_dir, now - timedelta(days=2), 800, database="other")
    page = client_as("viewer").get("/backups/")
    html = page.content.decode()
    assert page.status_code == 200
    assert old in html and small in html
    assert 'data-kind="stale"' in html and 'data-kind="shrunk"' in html
    assert "<svg" in html and "<polyline" in html and "Values as a table" in html
    assert "Take manual backup" not in html and "Verify" not in html  # viewers cannot operate
    admin_html = client_as("admin").get("/backups/").content.decode()
    assert "Take manual backup" in admin_html and f'value="{small}"' in admin_html


def test_api_lists_the_catalog(client_as, backup_dir):
    now = timezone.now().replace(microsecond=0)
    done = put(backup_dir, now - timedelta(hours=1), 3000)
    running = put(backup_dir, now, 10, in_progress=True)
    data = client_as("auditor").get("/api/v1/backups").json()
    by_name = {i["name"]: i for i in data["items"]}
    assert set(by_name) == {done, running}
    item = by_name[done]
    assert set(item) == {"name", "engine", "database", "kind", "created_at", "size_bytes", "in_progress", "verified"}
    assert item["engine"] == "postgres"
    assert item["database"] == "hcap" and item["size_bytes"] == 3002 and item["in_progress"] is False
    assert item["verified"] is None and by_name[running]["in_progress"] is True


def test_api_post_backup_returns_202_with_job_and_dedupes(client_as, backup_dir, run_jobs):
    client = client_as("admin")
    first = client.post("/api/v1/backups", data="{}", content_type="application/json")
    second = client.post("/api/v1/backups")
    assert first.status_code == 202 and second.status_code == 202
    assert first.json()["job"] == second.json()["job"] and first.json()["created"] and not second.json()["created"]
    job = Job.objects.get(pk=first.json()["job"])
    assert job.kind == "backup.manual" and job.requested_by == "admin"
    assert AuditEvent.objects.filter(action="job.queued", details__job=job.pk).count() == 1
    run_jobs()
    detail = client.get(f"/api/v1/jobs/{job.pk}").json()
    assert detail["status"] == "succeeded", detail
    assert detail["steps"][0]["name"] == "Back up database" and detail["result"]["backup"].endswith(".sql.gz")
    assert [p.name for p in backup_dir.rglob("*.sql.gz")] == [detail["result"]["backup"]]


def test_api_post_when_redis_is_down_is_503_and_writes_nothing(client_as, settings):
    from devtools.services import free_port

    client = client_as("admin")
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    before = (Job.objects.count(), AuditEvent.objects.count())
    response = client.post("/api/v1/backups")
    assert response.status_code == 503 and "Redis" in response.json()["error"]
    assert (Job.objects.count(), AuditEvent.objects.count()) == before


BAD_NAMES = [
    "../../etc/passwd",
    "daily/2026-11-24/hcap-patroni-hcap_2026-11-24_01-00-00.sql.gz",
    "hcap-patroni-hcap_2026-11-24_01-00-00.sql.gz; rm -rf /",
    "$(reboot)",
    "hcap-patroni-hcap_2026-11-24_01-00-00.sql.gz\n",
    "",
    "x" * 300,
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_verify_refuses_anything_but_a_catalog_name(client_as, backup_dir, name):
    client = client_as("admin")
    before = Job.objects.count()
    page = client.post("/backups/verify/", {"name": name})
    api = client.post("/api/v1/backups/verify", data=json.dumps({"name": name}), content_type="application/json")
    assert page.status_code == 400 and api.status_code == 400 and "error" in api.json()
    assert Job.objects.count() == before


def test_verify_of_wellformed_name_not_in_catalog_is_404_and_catalog_name_is_accepted(client_as, backup_dir):
    client = client_as("admin")
    real = put(backup_dir, timezone.now() - timedelta(hours=2), 100)
    forged = "hcap-patroni-hcap_2020-01-01_00-00-00.sql.gz"
    assert client.post("/backups/verify/", {"name": forged}).status_code == 404
    assert client.post("/api/v1/backups/verify", data=json.dumps({"name": forged}),
                       content_type="application/json").status_code == 404
    in_progress = put(backup_dir, timezone.now(), 10, in_progress=True)
    assert client.post("/backups/verify/", {"name": in_progress}).status_code == 400
    response = client.post("/backups/verify/", {"name": real})
    job = Job.objects.get(kind="backup.verify", params__name=real)
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}/"
    again = client.post("/api/v1/backups/verify", data=json.dumps({"name": real}), content_type="application/json")
    assert again.status_code == 202 and again.json()["job"] == job.pk


def test_manual_backup_form_needs_confirmation_and_redirects_to_job(client_as, backup_dir):
    client = client_as("admin")
    assert client.post("/backups/run/", {}).status_code == 400
    assert not Job.objects.filter(kind="backup.manual").exists()
    response = client.post("/backups/run/", {"confirm": "yes"})
    job = Job.objects.get(kind="backup.manual")
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}/"
