"""Restore requests: request from the catalog with a pinned backup, sign-off
by another person, expiry, cancellation, the restore runbook job the last
approval submits, how the job's end maps onto the request, and discarding
the pre-restore database.  (A restore run end to end through the API with a
real worker: tests/test_restores_e2e.py.)"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from hcapadmin.audit.models import AuditEvent
from hcapadmin.backups.models import BackupVerification
from hcapadmin.jobs.models import Job
from hcapadmin.restores import workflow
from hcapadmin.restores.models import RestoreRequest
from ops import backups

pytestmark = pytest.mark.django_db


@pytest.fixture
def backup_dir(tmp_path, settings):
    settings.BACKUP_DIR = str(tmp_path)
    return tmp_path


def put(root: Path, when=None, size: int = 1000, database="hcap", verified: bool | None = True) -> tuple[str, Path]:
    when = (when or timezone.now() - timedelta(hours=2)).replace(microsecond=0)
    name = backups.backup_name("hcap-patroni", database, when)
    path = root / backups.folder_kind(when.date()) / f"{when:%Y-%m-%d}" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x1f\x8b" + bytes(range(256)) * (size // 256 + 1))
    if verified is not None:
        BackupVerification.objects.create(backup_name=name, database=database, ok=verified, message="test")
    return name, path


def user(name: str, *roles: str):
    """A local account holding the given roles (through their mapped groups)."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    account, _ = get_user_model().objects.get_or_create(username=name)
    account.groups.set([Group.objects.get_or_create(name=settings.ROLE_GROUPS[r][0])[0] for r in roles])
    return account


def as_user(client, name, *roles):
    client.force_login(user(name, *roles))
    return client


def post_json(client, url, body):
    return client.post(url, data=json.dumps(body), content_type="application/json")


def create(client, name, **extra):
    body = {"backup": name, "target": "hcap", "mode": "online", "reason": "bad data load on Monday", **extra}
    return post_json(client, "/api/v1/restores", body)


def events(action, pk=None):
    rows = AuditEvent.objects.filter(action=action)
    return rows.filter(details__request=pk) if pk is not None else rows


# --- request ---------------------------------------------------------------------------------
def test_admin_requests_a_restore_and_the_backup_is_pinned(client, demo_users, backup_dir):
    name, path = put(backup_dir)
    response = create(as_user(client, "admin", "admin"), name, ticket="HCAP-1234")
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["status"] == "pending" and data["requested_by"] == "admin" and data["job"] is None
    assert data["backup"]["name"] == name and data["backup"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert data["backup"]["size_bytes"] == path.stat().st_size and data["backup"]["verified"] is True
    assert data["target"] == "hcap" and data["mode"] == "online" and data["ticket"] == "HCAP-1234"
    assert [s["name"] for s in data["steps"]] == ["preflight", "block", "safety_backup", "load", "check",
                                                  "cutover", "report"]
    assert {s["status"] for s in data["steps"]} == {"pending"}
    event = events("restore.requested", data["id"]).get()
    assert event.actor == "admin" and event.details["sha256"] == data["backup"]["sha256"]
    assert client.get(f"/api/v1/restores/{data['id']}").json()["id"] == data["id"]


@pytest.mark.parametrize("verified", [None, False])
def test_an_unverified_backup_needs_an_explicit_acknowledgement(client, demo_users, backup_dir, verified):
    name, _ = put(backup_dir, verified=verified)
    c = as_user(client, "admin", "admin")
    refused = create(c, name)
    assert refused.status_code == 400 and "acknowledge_unverified" in refused.json()["error"]
    assert not RestoreRequest.objects.exists() and not events("restore.requested").exists()
    accepted = create(c, name, acknowledge_unverified=True)
    assert accepted.status_code == 201
    assert accepted.json()["acknowledge_unverified"] is True
    assert events("restore.requested", accepted.json()["id"]).get().details["acknowledge_unverified"] is True


def test_request_refusals_write_nothing(client, demo_users, backup_dir):
    name, _ = put(backup_dir)
    c = as_user(client, "admin", "admin")
    cases = [
        ({"reason": ""}, 400), ({"reason": "   "}, 400), ({"target": "postgres"}, 400),
        ({"target": "hcap; DROP DATABASE hcap"}, 400), ({"target": "x" * 37}, 400), ({"mode": "fast"}, 400),
        ({"backup": "hcap-patroni-hcap_2020-01-01_00-00-00.sql.gz"}, 404), ({"backup": "../../etc/passwd"}, 400),
        ({"acknowledge_unverified": "yes"}, 400), ({"extra": 1}, 400), ({"ticket": "a\nb"}, 400),
    ]
    for extra, status in cases:
        response = create(c, extra.pop("backup", name), **extra)
        assert response.status_code == status, (extra, response.content)
        assert "error" in response.json()
    assert post_json(c, "/api/v1/restores", [1]).status_code == 400
    assert c.post("/api/v1/restores", data="{", content_type="application/json").status_code == 400
    assert not RestoreRequest.objects.exists() and not events("restore.requested").exists()


def test_pin_backup_reads_the_file_through_the_driver(backup_dir):
    from ops.errors import NotFound

    name, path = put(backup_dir)
    entry = next(e for e in backups.scan_local(str(backup_dir)) if e.name == name)
    assert workflow.pin_backup(entry) == {"size": path.stat().st_size,
                                          "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    path.unlink()
    with pytest.raises(NotFound):
        workflow.pin_backup(entry)


def test_check_pinned_refuses_a_changed_or_missing_file(client, demo_users, backup_dir):
    name, path = put(backup_dir)
    req = RestoreRequest.objects.get(pk=create(as_user(client, "admin", "admin"), name).json()["id"])
    assert workflow.check_pinned(req)["sha256"] == req.backup_sha256
    original = path.read_bytes()
    path.write_bytes(original[:-1] + b"!")  # same size, other content
    with pytest.raises(workflow.PinMismatch, match="changed"):
        workflow.check_pinned(req)
    path.write_bytes(original + b"more")
    with pytest.raises(workflow.PinMismatch, match="changed"):
        workflow.check_pinned(req)
    path.unlink()
    with pytest.raises(workflow.PinMismatch, match="no longer in the catalog"):
        workflow.check_pinned(req)


# --- sign-off --------------------------------------------------------------------------------
def _pending(client, backup_dir, requester=("admin", "admin")) -> int:
    name, _ = put(backup_dir)
    response = create(as_user(client, *requester), name)
    assert response.status_code == 201, response.content
    client.logout()
    return response.json()["id"]


def test_the_requester_never_approves_even_with_the_approver_role(client, demo_users, backup_dir):
    pk = _pending(client, backup_dir, requester=("boss", "admin", "approver"))
    c = as_user(client, "boss", "admin", "approver")
    response = post_json(c, f"/api/v1/restores/{pk}/approve", {"comment": "mine"})
    assert response.status_code == 403 and "another person" in response.json()["error"]
    page = c.post(f"/restores/{pk}/approve/", {"confirm": "hcap"})
    assert page.status_code == 403
    assert RestoreRequest.objects.get(pk=pk).status == "pending"
    assert not events("restore.approval", pk).exists() and not Job.objects.exists()


def test_approval_submits_the_platforms_restore_runbook_with_the_pinned_backup(client, demo_users, backup_dir):
    from hcapadmin.jobs.lifecycle import default_target

    name, path = put(backup_dir)
    pk = create(as_user(client, "admin", "admin"), name).json()["id"]
    req = RestoreRequest.objects.get(pk=pk)
    c = as_user(client, "approver", "approver")
    response = post_json(c, f"/api/v1/restores/{pk}/approve", {"comment": "checked with the team"})
    assert response.status_code == 200, response.content
    data = response.json()
    assert data["status"] == "approved" and data["job"] is not None
    assert data["approvals"] == [{"by": "approver", "decision": "approve", "comment": "checked with the team",
                                  "at": data["approvals"][0]["at"]}]
    job = Job.objects.get(pk=data["job"])
    assert job.kind == "restore.local" and job.mutating and job.target == default_target()
    stamp = job.params.pop("stamp")
    assert len(stamp) == 14 and stamp.isdigit()
    assert job.params == {"request": pk, "target": "hcap", "backup": name, "path": str(path),
                          "size": req.backup_size, "sha256": req.backup_sha256, "mode": "online"}
    assert [s["name"] for s in job.runbook["steps"]] == [s["name"] for s in data["steps"]]
    assert events("restore.approval", pk).count() == 1 and events("restore.approved", pk).count() == 1


def test_approval_without_a_restore_runbook_for_the_platform_is_refused_and_writes_nothing(
        client, demo_users, backup_dir, monkeypatch):
    pk = _pending(client, backup_dir)
    monkeypatch.setitem(workflow.RESTORE_KINDS, "local", "restore.nowhere")
    before = AuditEvent.objects.count()
    response = post_json(as_user(client, "approver", "approver"), f"/api/v1/restores/{pk}/approve", {})
    assert response.status_code == 503 and "cannot run restores on the local platform" in response.json()["error"]
    req = RestoreRequest.objects.get(pk=pk)
    assert req.status == "pending" and not req.decisions.exists() and req.job_id is None
    assert AuditEvent.objects.count() == before and not Job.objects.exists()
    page = as_user(client, "approver", "approver").post(f"/restores/{pk}/approve/", {"confirm": "hcap"})
    assert page.status_code == 503 and RestoreRequest.objects.get(pk=pk).status == "pending"
    assert client.get(f"/restores/{pk}/").status_code == 200  # the page still renders (without a plan)


def test_approval_of_a_backup_gone_from_the_catalog_is_refused(client, demo_users, backup_dir):
    name, path = put(backup_dir)
    pk = create(as_user(client, "admin", "admin"), name).json()["id"]
    path.unlink()
    response = post_json(as_user(client, "approver", "approver"), f"/api/v1/restores/{pk}/approve", {})
    assert response.status_code == 409 and "no longer in the catalog" in response.json()["error"]
    assert RestoreRequest.objects.get(pk=pk).status == "pending" and not Job.objects.exists()
    assert not events("restore.approval", pk).exists()


def test_two_approvals_from_distinct_people(client, demo_users, backup_dir, settings, run_jobs):
    settings.RESTORE_APPROVALS = 2
    pk = _pending(client, backup_dir)
    c = as_user(client, "approver", "approver")
    first = post_json(c, f"/api/v1/restores/{pk}/approve", {})
    assert first.status_code == 200 and first.json()["status"] == "pending" and first.json()["job"] is None
    again = post_json(c, f"/api/v1/restores/{pk}/approve", {})
    assert again.status_code == 409 and "already approved" in again.json()["error"]
    second = post_json(as_user(client, "approver2", "approver"), f"/api/v1/restores/{pk}/approve", {})
    assert second.status_code == 200 and second.json()["status"] == "approved"
    assert [a["by"] for a in second.json()["approvals"]] == ["approver", "approver2"]
    assert Job.objects.filter(kind="restore.local").count() == 1


def test_reject_needs_a_comment_and_ends_the_request(client, demo_users, backup_dir):
    pk = _pending(client, backup_dir)
    c = as_user(client, "approver", "approver")
    assert post_json(c, f"/api/v1/restores/{pk}/reject", {}).status_code == 400
    assert post_json(c, f"/api/v1/restores/{pk}/reject", {"comment": " "}).status_code == 400
    assert not events("restore.rejected", pk).exists()
    response = post_json(c, f"/api/v1/restores/{pk}/reject", {"comment": "wrong backup"})
    assert response.status_code == 200 and response.json()["status"] == "rejected"
    assert events("restore.rejected", pk).get().details["comment"] == "wrong backup"
    late = post_json(as_user(client, "approver2", "approver"), f"/api/v1/restores/{pk}/approve", {})
    assert late.status_code == 409 and not Job.objects.exists()


def test_cancel_by_the_requester_or_an_admin_only_before_it_starts(client, demo_users, backup_dir, run_jobs):
    pk = _pending(client, backup_dir, requester=("admin", "admin"))
    denied = post_json(as_user(client, "approver", "approver"), f"/api/v1/restores/{pk}/cancel", {})
    assert denied.status_code == 403
    assert post_json(as_user(client, "viewer", "viewer"), f"/api/v1/restores/{pk}/cancel", {}).status_code == 403
    other_admin = as_user(client, "admin2", "admin")
    response = post_json(other_admin, f"/api/v1/restores/{pk}/cancel", {"comment": "not needed"})
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert events("restore.cancelled", pk).get().actor == "admin2"
    assert post_json(other_admin, f"/api/v1/restores/{pk}/cancel", {}).status_code == 409
    # approved, job queued: cancelling also cancels the job
    pk2 = _pending(client, backup_dir)
    job_id = post_json(as_user(client, "approver", "approver"), f"/api/v1/restores/{pk2}/approve", {}).json()["job"]
    response = post_json(as_user(client, "admin", "admin"), f"/api/v1/restores/{pk2}/cancel", {})
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert Job.objects.get(pk=job_id).status == "cancelled"
    run_jobs()
    assert RestoreRequest.objects.get(pk=pk2).status == "cancelled"
    assert not events("restore.started", pk2).exists()


def test_expiry_is_lazy_on_read_and_by_sweep_and_audited_once(client, demo_users, backup_dir):
    pk = _pending(client, backup_dir)
    pk2 = _pending(client, backup_dir)
    RestoreRequest.objects.filter(pk__in=[pk, pk2]).update(expires_at=timezone.now() - timedelta(seconds=1))
    c = as_user(client, "viewer", "viewer")
    assert c.get(f"/api/v1/restores/{pk}").json()["status"] == "expired"
    assert c.get(f"/restores/{pk}/").status_code == 200
    assert events("restore.expired", pk).count() == 1
    assert workflow.expire_due() == [pk2] and workflow.expire_due() == []
    assert events("restore.expired", pk2).count() == 1 and events("restore.expired", pk).count() == 1
    late = post_json(as_user(client, "approver", "approver"), f"/api/v1/restores/{pk}/approve", {})
    assert late.status_code == 409 and not Job.objects.exists()


def test_approving_a_request_that_just_passed_its_deadline_expires_it(client, demo_users, backup_dir):
    pk = _pending(client, backup_dir)
    RestoreRequest.objects.filter(pk=pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = post_json(as_user(client, "approver", "approver"), f"/api/v1/restores/{pk}/approve", {})
    assert response.status_code == 409 and "expired" in response.json()["error"]
    assert RestoreRequest.objects.get(pk=pk).status == "expired" and events("restore.expired", pk).count() == 1


def test_approval_when_redis_is_down_writes_nothing(client, demo_users, backup_dir, settings):
    from devtools.services import free_port

    pk = _pending(client, backup_dir)
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    before = AuditEvent.objects.count()
    response = post_json(as_user(client, "approver", "approver"), f"/api/v1/restores/{pk}/approve", {})
    assert response.status_code == 503 and "Redis" in response.json()["error"]
    assert RestoreRequest.objects.get(pk=pk).status == "pending"
    assert not RestoreRequest.objects.get(pk=pk).decisions.exists() and AuditEvent.objects.count() == before


# --- estimates ---------------------------------------------------------------------------------
def test_estimate_uses_the_default_rate_until_restores_are_measured(client, demo_users, backup_dir, settings):
    settings.RESTORE_DEFAULT_MBPS = 10
    first = workflow.estimate(100_000_000, "online")
    assert first["rate_mbps"] == 10 and "default" in first["rate_source"]
    assert first["total_seconds"] == 2 * 10 + workflow.FIXED_SECONDS
    assert first["downtime_seconds"] == workflow.CUTOVER_SECONDS
    assert workflow.estimate(100_000_000, "offline")["downtime_seconds"] == first["total_seconds"]
    pk = _pending(client, backup_dir)
    RestoreRequest.objects.filter(pk=pk).update(status="succeeded", measured_mbps=50.0, finished_at=timezone.now())
    measured = workflow.estimate(100_000_000, "online")
    assert measured["rate_mbps"] == 50 and "measured" in measured["rate_source"]


# --- discard the pre-restore database ------------------------------------------------------------
def test_discard_previous_needs_the_typed_name_and_runs_as_a_job(client, demo_users, backup_dir, run_jobs):
    pk = _pending(client, backup_dir)
    c = as_user(client, "admin", "admin")
    assert post_json(c, f"/api/v1/restores/{pk}/discard-previous", {"confirm": "x"}).status_code == 409
    previous = "hcap_pre_restore_20260101000000"
    RestoreRequest.objects.filter(pk=pk).update(status="succeeded", previous_database=previous)
    wrong = post_json(c, f"/api/v1/restores/{pk}/discard-previous", {"confirm": "hcap"})
    assert wrong.status_code == 400 and previous in wrong.json()["error"] and not Job.objects.exists()
    approver = post_json(as_user(client, "approver", "approver"), f"/api/v1/restores/{pk}/discard-previous",
                         {"confirm": previous})
    assert approver.status_code == 403 and not Job.objects.exists()
    response = post_json(as_user(client, "admin", "admin"), f"/api/v1/restores/{pk}/discard-previous",
                         {"confirm": previous})
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["job"])
    assert job.kind == "restore.discard_previous" and job.params == {"request": pk, "database": previous}
    assert events("restore.discard_requested", pk).count() == 1
    run_jobs()
    job.refresh_from_db()
    assert job.status == "succeeded", job.error  # (that database never existed: dropping it is a no-op)
    assert RestoreRequest.objects.get(pk=pk).previous_discarded


def test_finish_keeps_the_pre_restore_name_and_rate_of_a_success(client, demo_users, backup_dir):
    pk = _pending(client, backup_dir)
    RestoreRequest.objects.filter(pk=pk).update(status="running")
    req = RestoreRequest.objects.get(pk=pk)
    assert req.finish("succeeded", result={"pre_restore_database": "other_pre_restore_20260101000000"},
                      measured_mbps=12.5)
    assert req.previous_database == "" and req.measured_mbps == 12.5  # another database's name is ignored
    assert not req.finish("failed")  # already ended: no second change, no second event
    assert events("restore.finished", pk).count() == 1


@pytest.mark.parametrize("request_status,job_status,expected", [
    ("approved", "failed", "failed"),          # never enqueued (Redis died at commit), or refused: nothing ran
    ("running", "failed", "failed"),           # a step failed and what ran was undone
    ("running", "cancelled", "failed"),        # cancelled: what ran was undone
    ("approved", "abandoned", "needs_attention"),  # the worker died: an admin resumes or rolls it back
    ("running", "abandoned", "needs_attention"),
    ("running", "needs_attention", "needs_attention"),  # an undo failed: a person must look
    ("running", "succeeded", "succeeded"),     # the report step did not record it
    ("needs_attention", "succeeded", "succeeded"),  # abandoned, then resumed to its end
    ("needs_attention", "cancelled", "failed"),     # abandoned, then rolled back
    ("succeeded", "succeeded", "succeeded"),   # the report step already did: nothing more
])
def test_a_job_that_ended_without_the_request_hearing_of_it(client, demo_users, request_status, job_status,
                                                            expected):
    from hcapadmin.jobs.models import params_key

    report = {"pre_restore": "hcap_pre_restore_20260101000000", "rows": 3}
    job = Job.objects.create(kind="restore.local", params={"request": 0}, target="hcap", status=job_status,
                             params_key=params_key("restore.local", {"x": request_status + job_status}, "hcap"),
                             requested_by="approver", error="" if job_status == "succeeded" else "worker gone",
                             result={"steps": {"report": report}} if job_status == "succeeded" else None,
                             finished_at=timezone.now())
    req = RestoreRequest.objects.create(
        backup_name="hcap-patroni-hcap_2026-01-01_00-00-00.sql.gz", backup_database="hcap",
        backup_created_at=timezone.now(), backup_size=10, backup_sha256="0" * 64, target="hcap", mode="online",
        reason="r", requested_by="admin", status=request_status, job=job, expires_at=timezone.now(),
        started_at=None if request_status == "approved" else timezone.now() - timedelta(seconds=5))
    data = as_user(client, "viewer", "viewer").get(f"/api/v1/restores/{req.pk}").json()
    assert data["status"] == expected
    ended = 0 if request_status == expected else 1
    assert events("restore.finished", req.pk).count() == ended
    client.get(f"/api/v1/restores/{req.pk}")
    assert workflow.upkeep()["settled"] == []
    assert events("restore.finished", req.pk).count() == ended
    if expected == "succeeded" and ended:
        req.refresh_from_db()
        assert req.previous_database == "hcap_pre_restore_20260101000000" and req.measured_mbps > 0
        assert data["report"] == {**report, "pre_restore_database": report["pre_restore"]}
    if job_status == "failed":
        assert data["error"] == "worker gone"


def test_the_workers_sweep_settles_a_request_whose_job_ended_unseen(client, demo_users):
    from hcapadmin.jobs.models import params_key

    job = Job.objects.create(kind="restore.local", params={"request": 0}, target="hcap", status="failed",
                             params_key=params_key("restore.local", {"x": "unseen"}, "hcap"),
                             requested_by="approver", error="boom", finished_at=timezone.now())
    req = RestoreRequest.objects.create(
        backup_name="hcap-patroni-hcap_2026-01-01_00-00-00.sql.gz", backup_database="hcap",
        backup_created_at=timezone.now(), backup_size=10, backup_sha256="0" * 64, target="hcap", mode="online",
        reason="r", requested_by="admin", status="running", job=job, expires_at=timezone.now())
    assert workflow.upkeep() == {"expired": [], "settled": [req.pk]}
    assert RestoreRequest.objects.get(pk=req.pk).status == "failed"
    assert events("restore.finished", req.pk).get().details["error"] == "boom"
    assert workflow.upkeep() == {"expired": [], "settled": []}


ENDPOINTS = {  # action -> (roles allowed, valid body)
    "create": ({"admin"}, None),
    "approve": ({"approver"}, {"comment": "ok"}),
    "reject": ({"approver"}, {"comment": "no"}),
    "cancel": ({"admin"}, {"comment": "not needed"}),
    "discard-previous": ({"admin"}, {"confirm": "hcap_pre_restore_20260101000000"}),
}


@pytest.mark.parametrize("action", sorted(ENDPOINTS))
@pytest.mark.parametrize("role", ["anonymous", "viewer", "admin", "approver", "auditor"])
def test_each_endpoint_with_a_valid_body_refuses_other_roles_and_writes_nothing(client, demo_users, backup_dir,
                                                                                 role, action):
    allowed, body = ENDPOINTS[action]
    name, _ = put(backup_dir)
    status = "succeeded" if action == "discard-previous" else "pending"
    req = RestoreRequest.objects.create(
        backup_name=name, backup_database="hcap", backup_created_at=timezone.now(), backup_size=10,
        backup_sha256="0" * 64, target="hcap", mode="online", reason="r", requested_by="someone-else",
        status=status, previous_database="hcap_pre_restore_20260101000000", expires_at=timezone.now() + timedelta(hours=1))
    if role != "anonymous":
        as_user(client, role, role)
    if action == "create":
        url, body = "/api/v1/restores", {"backup": name, "target": "hcap", "mode": "online", "reason": "r"}
    else:
        url = f"/api/v1/restores/{req.pk}/{action}"
    before = (RestoreRequest.objects.count(), Job.objects.count(), list(RestoreRequest.objects.values("status")),
              AuditEvent.objects.filter(action__startswith="restore.").count())
    response = post_json(client, url, body)
    if role in allowed:
        assert response.status_code in (200, 201, 202), response.content
        return
    assert response.status_code == (401 if role == "anonymous" else 403), response.content
    assert "error" in response.json()
    assert before == (RestoreRequest.objects.count(), Job.objects.count(),
                      list(RestoreRequest.objects.values("status")),
                      AuditEvent.objects.filter(action__startswith="restore.").count())
