"""Job list (filters, pagination), detail (steps, progress, live fragment),
cancel, and GET /api/v1/jobs/<id>."""

from __future__ import annotations

import pytest

import tests.test_jobs_kinds  # noqa: F401
from hcapadmin.audit.models import AuditEvent
from hcapadmin.jobs.models import Job
from hcapadmin.jobs.lifecycle import submit
from tests.test_jobs import admin_request

pytestmark = pytest.mark.django_db


def make(n, **kw):
    from hcapadmin.jobs.models import params_key

    jobs = []
    for i in range(n):
        fields = {"kind": "test.readonly", "title": "Test read-only", "target": "hcap", "status": "succeeded",
                  "requested_by": "alice", **kw}
        fields["params_key"] = params_key(fields["kind"], {"i": i, **kw}, "hcap")
        jobs.append(Job.objects.create(params={"i": i}, **fields))
    return jobs


def test_list_filters_and_paginates(client_as):
    make(30)
    make(2, kind="test.fail", status="failed", requested_by="bob")
    client = client_as("viewer")
    first = client.get("/jobs/").content.decode()
    assert "Page 1 of 2 (32 jobs)" in first and 'rel="next"' in first
    second = client.get("/jobs/?page=2").content.decode()
    assert "Page 2 of 2" in second
    failed = client.get("/jobs/?status=failed").content.decode()
    assert "(2 jobs)" in failed and "test.fail" in failed
    assert "(2 jobs)" in client.get("/jobs/?user=bob").content.decode()
    assert "(30 jobs)" in client.get("/jobs/?kind=test.readonly").content.decode()
    assert "match these filters" in client.get("/jobs/?user=nobody").content.decode()
    assert client.get("/jobs/?status=exploded").status_code == 400
    assert client.get("/jobs/?page=9999").status_code == 200  # clamps to the last page


def test_detail_shows_steps_progress_result_and_live_fragment_stops_polling(client_as, run_jobs):
    job, _ = submit("test.sleep", {"seconds": 0.1, "tag": "d"}, request=admin_request(), target="hcap")
    client = client_as("viewer")
    queued = client.get(f"/jobs/{job.pk}/").content.decode()
    assert 'hx-trigger="every 2s"' in queued and "waiting for a worker" in queued
    run_jobs()
    done = client.get(f"/jobs/{job.pk}/live/").content.decode()
    assert 'hx-trigger' not in done and 'data-status="succeeded"' in done
    assert "finished after" in done and 'value="100"' in done and "Sleep" in done
    assert "sleeping 0.1s tag=d" in done and "slept" in done
    api = client.get(f"/api/v1/jobs/{job.pk}").json()
    assert api["status"] == "succeeded" and api["result"] == {"slept": 0.1, "tag": "d"}
    assert api["steps"][0]["outcome"] == "succeeded"
    assert client.get("/api/v1/jobs/999999").status_code == 404
    assert client.get("/jobs/999999/").status_code == 404


def test_cancel_from_the_page_is_audited_and_only_for_operators(client_as, run_jobs):
    job, _ = submit("test.sleep", {"seconds": 5, "tag": "x"}, request=admin_request(), target="hcap")
    assert client_as("viewer").post(f"/jobs/{job.pk}/cancel/").status_code == 403
    admin = client_as("admin")
    assert "Cancel job" in admin.get(f"/jobs/{job.pk}/").content.decode()
    response = admin.post(f"/jobs/{job.pk}/cancel/")
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.status == "cancelled" and job.cancelled_by == "admin"
    assert AuditEvent.objects.get(action="job.cancelled", details__job=job.pk).actor == "admin"
    assert admin.post(f"/jobs/{job.pk}/cancel/").status_code == 400


def test_abandoned_job_page_shows_last_step_and_advice(client_as, settings):
    from datetime import timedelta

    from django.utils import timezone

    old = timezone.now() - timedelta(minutes=5)
    [job] = make(1, kind="backup.manual", status="running", heartbeat_at=old, started_at=old,
                 steps=[{"name": "Back up database", "started_at": old.isoformat(), "finished_at": None,
                         "outcome": "running"}])
    html = client_as("viewer").get(f"/jobs/{job.pk}/").content.decode()
    job.refresh_from_db()
    assert job.status == "abandoned"
    assert "Last step: <strong>Back up database</strong>" in html
    assert ".sql.gz.in_progress file may be left" in html and "submit the job again" in html


def test_times_are_shown_in_the_portal_time_zone_and_backup_times_in_utc(client_as, settings, tmp_path):
    from datetime import datetime, timezone

    from tests.test_backups_pages import put

    settings.TIME_ZONE = "America/Vancouver"
    [job] = make(1, steps=[{"name": "Step", "started_at": "2026-11-25T08:00:00+00:00",
                            "finished_at": "2026-11-25T08:00:05+00:00", "outcome": "succeeded"}])
    html = client_as("viewer").get(f"/jobs/{job.pk}/").content.decode()
    assert "00:00:00–00:00:05" in html  # 08:00 UTC is 00:00 in Vancouver (PST)
    settings.BACKUP_DIR = str(tmp_path)
    name = put(tmp_path, datetime(2026, 11, 24, 6, 52, 43, tzinfo=timezone.utc), 100)
    html = client_as("viewer").get("/backups/").content.decode()
    assert name in html and "2026-11-24 06:52:43" in html


@pytest.mark.django_db
def test_an_abandoned_runbook_offers_resume_and_roll_back_to_admins_only(client_as):
    """The job page of an abandoned runbook shows its plan and, to admins, the
    two ways forward; each button queues the job again (audited) and a second
    press of the same one changes nothing."""
    import tests.test_runbook_kinds  # noqa: F401  registers test.rb*
    from hcapadmin.audit.models import AuditEvent
    from hcapadmin.jobs.models import Job

    job, _ = submit("test.rb", {"tag": "page"}, request=admin_request(), target="hcap")
    state = job.runbook
    state["steps"][0].update(status="done", data={"staging": "hcap_restore_20261125000000"})
    state["steps"][1].update(status="running")
    Job.objects.filter(pk=job.pk).update(status="abandoned", runbook=state, error="its worker died")
    viewer = client_as("viewer")  # (client_as logs the one test client in as that role)
    assert 'data-testid="job-reopen"' not in viewer.get(f"/jobs/{job.pk}/").content.decode()
    assert viewer.post(f"/jobs/{job.pk}/resume/").status_code == 403
    admin = client_as("admin")
    page = admin.get(f"/jobs/{job.pk}/").content.decode()
    assert 'data-testid="job-reopen"' in page and 'data-testid="job-plan"' in page
    assert "hcap_restore_20261125000000" in page
    response = admin.post(f"/jobs/{job.pk}/rollback/")
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}/"
    job.refresh_from_db()
    assert job.status == "queued" and job.runbook["mode"] == "rollback"
    assert admin.post(f"/jobs/{job.pk}/rollback/").status_code == 302  # already queued: no change
    assert AuditEvent.objects.filter(action="job.rollback_requested", details__job=job.pk).count() == 1
    assert admin.post(f"/jobs/{job.pk}/resume/").status_code == 400  # queued to roll back: not also resumed
