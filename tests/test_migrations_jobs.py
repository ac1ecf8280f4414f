"""The "Apply pending migrations" job: a backup, then the real node-pg-migrate
up, run by a real RQ worker (tests/conftest.py run_jobs) on real services."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops import migrations as ops
from tests.test_migrations import SAMPLE_ORDER, fresh_db, run_tool, sample  # noqa: F401  (fixtures)


@pytest.fixture
def configured(settings, sample, fresh_db, tmp_path):  # noqa: F811
    name, url, conninfo = fresh_db
    settings.MIGRATIONS_DIR = str(sample)
    settings.MANAGED_DATABASE_URL = url
    settings.BACKUP_DIR = str(tmp_path / "backups")
    Path(settings.BACKUP_DIR).mkdir()
    return sample, url, conninfo, name


def _submit(client, expected):
    return client.post("/migrations/apply/", {"confirm": "apply", "expected": expected})


def _backups(settings):
    return [p.name for p in Path(settings.BACKUP_DIR).rglob("*.sql.gz")]


@pytest.mark.django_db
def test_apply_job_backs_up_then_applies_exactly_the_pending(client_as, configured, run_jobs, settings, pg):
    from hcapadmin.audit.models import AuditEvent
    from hcapadmin.jobs.models import Job

    folder, url, conninfo, dbname = configured
    (folder / "1630000000000_broken-backfill.js").unlink()
    assert run_tool(folder, url, "up", "2")[0] == 0
    before = {r.name: (r.id, r.run_on) for r in ops.read_applied(conninfo).rows}
    client = client_as("admin")
    response = _submit(client, SAMPLE_ORDER[2:5])
    job = Job.objects.get(kind="migrations.apply")
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}/"
    assert job.target == dbname and job.mutating
    assert AuditEvent.objects.filter(action="migrations.apply", outcome="success").count() == 1
    run_jobs()
    job.refresh_from_db()
    assert job.status == "succeeded", (job.error, job.log)
    steps = [s["name"] for s in job.steps]
    assert steps.index("Back up database") < steps.index("Run node-pg-migrate up")
    assert "Migrations complete!" in job.log
    assert "> - 1610000000000_load-sites" in job.log  # the tool's own output, streamed
    assert url not in job.log and pg.password not in job.log
    assert job.result["applied"] == SAMPLE_ORDER[2:5]
    assert len(_backups(settings)) == 1
    rows = ops.read_applied(conninfo).rows
    assert [r.name for r in rows] == SAMPLE_ORDER[:5]
    assert {r.name: (r.id, r.run_on) for r in rows if r.name in before} == before
    html = client.get("/migrations/").content.decode()
    assert "Up to date: the next deploy will apply nothing." in html


@pytest.mark.django_db
def test_failing_migration_fails_the_job_with_the_tools_error(client_as, configured, run_jobs, settings):
    from hcapadmin.jobs.models import Job

    folder, url, conninfo, _ = configured
    assert run_tool(folder, url, "up", "3")[0] == 0
    client = client_as("admin")
    assert _submit(client, SAMPLE_ORDER[3:]).status_code == 302
    run_jobs()
    job = Job.objects.get(kind="migrations.apply")
    assert job.status == "failed"
    assert 'relation "applicant_status_history" does not exist' in job.error
    assert "node-pg-migrate up failed" in job.error
    assert "Error executing:" in job.log
    assert len(_backups(settings)) == 1  # the backup was taken before
    # single transaction: the run rolled back; the list says so
    report = ops.build_report(ops.LocalFolder(str(folder)), conninfo, "pgmigrations", "public")
    assert [i.name for i in report.by_status(ops.APPLIED)] == SAMPLE_ORDER[:3]
    assert [i.name for i in report.by_status(ops.PENDING)] == SAMPLE_ORDER[3:]
    body = client.get("/api/v1/migrations").json()
    assert [i["name"] for i in body["pending"]] == SAMPLE_ORDER[3:]


@pytest.mark.django_db
def test_job_rechecks_order_before_backing_up(client_as, configured, run_jobs, settings):
    """Queued while fine; by the time it runs an older file appeared: the job
    refuses with node-pg-migrate's reason and takes no backup."""
    from hcapadmin.jobs.models import Job

    folder, url, conninfo, _ = configured
    (folder / "1630000000000_broken-backfill.js").unlink()
    assert run_tool(folder, url, "up", "3")[0] == 0
    assert _submit(client_as("admin"), SAMPLE_ORDER[3:5]).status_code == 302
    (folder / "1595000000000_late-merge.sql").write_text("-- Up Migration\nSELECT 1;\n")
    run_jobs()
    job = Job.objects.get(kind="migrations.apply")
    assert job.status == "failed"
    assert "Not run migration 1595000000000_late-merge is preceding already run migration" in job.error
    assert _backups(settings) == []
    assert [r.name for r in ops.read_applied(conninfo).rows] == SAMPLE_ORDER[:3]
