"""Restore pages: list (pending first, pagination, empty state), the new
request form from a backup, the request page (plan, objects, estimate, mode
statement, sign-off forms with typed confirmation, live job) and the
dashboard's "waiting for your approval"."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from hcapadmin.jobs.models import Job
from hcapadmin.restores.models import RestoreRequest
from tests.test_restores import as_user, backup_dir, create, put  # noqa: F401  (backup_dir is a fixture)

pytestmark = pytest.mark.django_db


def make(status="pending", requested_by="someone-else", **extra) -> RestoreRequest:
    now = timezone.now()
    fields = dict(backup_name="hcap-patroni-hcap_2026-01-01_00-00-00.sql.gz", backup_database="hcap",
                  backup_created_at=now, backup_size=10, backup_sha256="0" * 64, backup_verified=True,
                  target="hcap", mode="online", reason="pages", requested_by=requested_by, status=status,
                  expires_at=now + timedelta(hours=1))
    fields.update(extra)
    return RestoreRequest.objects.create(**fields)


def test_list_is_empty_then_pending_first_and_paginated(client, demo_users):
    c = as_user(client, "viewer", "viewer")
    html = c.get("/restores/").content.decode()
    assert 'data-testid="restores-empty"' in html and "Restore…" not in html
    done = make(status="succeeded")
    pending = make()
    html = c.get("/restores/").content.decode()
    assert html.index(f'data-id="{pending.pk}"') < html.index(f'data-id="{done.pk}"')
    for _ in range(30):
        make(status="rejected")
    first = c.get("/restores/").content.decode()
    assert "Page 1 of 2" in first and f'data-id="{pending.pk}"' in first
    assert c.get("/restores/?page=2").status_code == 200
    assert c.get("/restores/?page=999999999999999999999").status_code == 200
    assert c.get("/restores/?status=nonsense").status_code == 400
    assert f'data-id="{done.pk}"' in c.get("/restores/?status=succeeded").content.decode()


def test_backups_page_links_each_backup_to_a_new_request(client, demo_users, backup_dir):  # noqa: F811
    name, _ = put(backup_dir)
    html = as_user(client, "admin", "admin").get("/backups/").content.decode()
    assert f'href="/restores/new/?backup={name}"' in html


def test_new_request_form_round_trip(client, demo_users, backup_dir):  # noqa: F811
    name, _ = put(backup_dir, verified=None)
    c = as_user(client, "admin", "admin")
    form = c.get(f"/restores/new/?backup={name}")
    html = form.content.decode()
    assert form.status_code == 200 and name in html and "never verified" in html
    assert 'name="csrfmiddlewaretoken"' in html and 'name="acknowledge_unverified"' in html
    assert '<label for="id_reason">' in html and 'value="hcap"' in html
    missing = c.post("/restores/new/", {"backup": name, "target": "hcap", "mode": "online", "reason": "r"})
    assert missing.status_code == 400 and "acknowledge" in missing.content.decode()
    no_reason = c.post("/restores/new/", {"backup": name, "target": "hcap", "mode": "online", "reason": "",
                                          "acknowledge_unverified": "on"})
    assert no_reason.status_code == 400 and not RestoreRequest.objects.exists()
    done = c.post("/restores/new/", {"backup": name, "target": "hcap", "mode": "offline", "reason": "restore it",
                                     "ticket": "HCAP-1", "acknowledge_unverified": "on"})
    req = RestoreRequest.objects.get()
    assert done.status_code == 302 and done["Location"] == f"/restores/{req.pk}/"
    assert req.mode == "offline" and req.acknowledge_unverified and req.requested_by == "admin"
    assert c.get("/restores/new/?backup=hcap-patroni-hcap_2020-01-01_00-00-00.sql.gz").status_code == 404
    assert as_user(client, "approver", "approver").get(f"/restores/new/?backup={name}").status_code == 403


def test_request_page_shows_plan_objects_estimate_and_mode(client, demo_users, backup_dir):  # noqa: F811
    name, _ = put(backup_dir)
    pk = create(as_user(client, "admin", "admin"), name).json()["id"]
    html = as_user(client, "auditor", "auditor").get(f"/restores/{pk}/").content.decode()
    from hcapadmin.restores.runbook import STEPS

    for step in STEPS:  # the plan is the runbook's declaration
        assert f'data-step="{step.name}"' in html and step.title in html, step.title
    assert "Create hcap_restore_&lt;ts&gt; beside the live database" in html
    assert "rename hcap to hcap_pre_restore_&lt;ts&gt;" in html
    assert "stay in the pre-restore database" in html  # online mode
    assert "exists: yes" in html and "size: unknown" not in html  # the driver reports the target database's size
    assert "Estimate: about" in html and "HCAPADMIN_RESTORE_DEFAULT_MBPS" in html
    assert "passed" in html and "Approve restore" not in html  # auditors cannot sign off
    offline = create(as_user(client, "admin", "admin"), name, mode="offline").json()["id"]
    assert "clients are blocked from the safety backup on" in client.get(f"/restores/{offline}/").content.decode()


def test_sign_off_forms_need_the_typed_target_and_show_the_job(client, demo_users, backup_dir):  # noqa: F811
    name, _ = put(backup_dir)
    pk = create(as_user(client, "admin", "admin"), name).json()["id"]
    own = client.get(f"/restores/{pk}/").content.decode()
    assert "another person must approve it" in own and "Approve restore" not in own and "Cancel request" in own
    c = as_user(client, "approver", "approver")
    html = c.get(f"/restores/{pk}/").content.decode()
    assert "Approve restore" in html and 'name="confirm" required' in html
    assert c.post(f"/restores/{pk}/approve/", {"confirm": "hca"}).status_code == 400
    assert RestoreRequest.objects.get(pk=pk).status == "pending" and not Job.objects.exists()
    done = c.post(f"/restores/{pk}/approve/", {"confirm": "hcap", "comment": "ok"})
    assert done.status_code == 302
    req = RestoreRequest.objects.get(pk=pk)
    assert req.status == "approved" and req.job_id
    page = c.get(f"/restores/{pk}/").content.decode()
    assert 'data-testid="job-live"' in page and f'hx-get="/jobs/{req.job_id}/live/"' in page
    assert "Approve restore" not in page
    assert "Cancel request" in as_user(client, "admin", "admin").get(f"/restores/{pk}/").content.decode()
    assert f'action="/jobs/{req.job_id}/cancel/"' not in page  # restore jobs are withdrawn with their request


def test_reject_and_cancel_pages(client, demo_users):
    req = make()
    c = as_user(client, "approver", "approver")
    assert c.post(f"/restores/{req.pk}/reject/", {"comment": ""}).status_code == 400
    assert c.post(f"/restores/{req.pk}/reject/", {"comment": "no"}).status_code == 302
    assert RestoreRequest.objects.get(pk=req.pk).status == "rejected"
    other = make(requested_by="admin")
    admin = as_user(client, "admin", "admin")
    assert admin.post(f"/restores/{other.pk}/cancel/", {}).status_code == 400
    assert admin.post(f"/restores/{other.pk}/cancel/", {"confirm": "yes"}).status_code == 302
    assert RestoreRequest.objects.get(pk=other.pk).status == "cancelled"
    assert admin.post(f"/restores/{other.pk}/cancel/", {"confirm": "yes"}).status_code == 409
    assert client.get("/restores/999999/").status_code == 404


def test_dashboard_lists_requests_waiting_for_this_approver(client, demo_users):
    waiting = make()
    own = make(requested_by="approver")
    html = as_user(client, "approver", "approver").get("/").content.decode()
    assert 'data-testid="dash-restores-waiting"' in html
    assert f'href="/restores/{waiting.pk}/"' in html and f'href="/restores/{own.pk}/"' not in html
    assert 'dash-restores-waiting' not in as_user(client, "viewer", "viewer").get("/").content.decode()


def test_list_filters_go_through_one_form(client, demo_users):
    """The page and the API read ``status`` and ``page`` through
    RestoreFiltersForm: other scripts' digits and words are a 400, not page 1."""
    c = as_user(client, "viewer", "viewer")
    for query in ("page=%D9%A3", "page=abc", "page=0", "status=nonsense"):
        page = c.get("/restores/?" + query)
        assert page.status_code == 400 and "<title>Bad request" in page.content.decode(), query
        api = c.get("/api/v1/restores?" + query)
        assert api.status_code == 400 and api.json()["error"].split(":")[0] in ("page", "status"), query
