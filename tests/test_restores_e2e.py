"""Restore requests carried out end to end through the API: an admin
requests a restore of a real pg_dump backup (ops.backups.local_backup) of a
managed database of the test's own, another person approves it, a real
``jobs_worker`` process runs the local restore runbook, and the request
ends with what happened: ``succeeded`` with the data of the backup in the
target (then the kept pre-restore database is discarded), or ``failed`` with
the target untouched.  Also the worker's periodic sweep expiring requests.

Each test points HCAPADMIN_MANAGED_DATABASE_URL at a database of its own
(tests.test_restore_runbook.Scene), so the session's ``hcap`` is never
restored over."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from django.utils import timezone

from hcapadmin.audit.models import AuditEvent
from hcapadmin.jobs.models import Job
from hcapadmin.restores.models import RestoreRequest
from tests.test_jobs_workers import wait_for, worker_log
from tests.test_restore_ops import OWNER, OWNER_PASSWORD, ci, exists, take_backup
from tests.test_restore_runbook import Scene
from tests.test_restores import as_user, events

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture(scope="module", autouse=True)
def _drop_test_databases(pg):
    yield
    out = pg.psql("SELECT datname FROM pg_database WHERE datname LIKE 'rqe\\_%'")
    for name in filter(None, out.splitlines()):
        pg.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def scene(pg, settings, tmp_path, jobs_worker_process):
    def make(db):
        return Scene(pg, settings, tmp_path, jobs_worker_process, db)

    return make


def post(client, url, body):
    return client.post(url, data=json.dumps(body), content_type="application/json")


def request_and_approve(client, s, backup_path) -> tuple[int, Job]:
    """An admin requests the restore of ``backup_path`` over the scene's
    database; another person approves it.  Returns (request id, job)."""
    body = {"backup": Path(backup_path).name, "target": s.db, "mode": "online", "reason": "bad import on Monday",
            "acknowledge_unverified": True}
    made = post(as_user(client, "admin", "admin"), "/api/v1/restores", body)
    assert made.status_code == 201, made.content
    pk = made.json()["id"]
    approved = post(as_user(client, "approver", "approver"), f"/api/v1/restores/{pk}/approve", {"comment": "ok"})
    assert approved.status_code == 200, approved.content
    assert approved.json()["status"] == "approved"
    return pk, Job.objects.get(pk=approved.json()["job"])


def finished(s, job) -> Job:
    try:
        wait_for(lambda: Job.objects.get(pk=job.pk).is_finished, 240, "the restore job to finish")
    except AssertionError:
        raise AssertionError("\n".join(worker_log(w)[-3000:] for w in s.workers)) from None
    return Job.objects.get(pk=job.pk)


def one_start_one_end(pk, outcome):
    assert events("restore.started", pk).count() == 1
    end = events("restore.finished", pk).get()
    assert end.outcome == outcome and end.actor == "system"
    return end


def test_a_request_approved_by_another_person_restores_the_backup_and_its_previous_database_is_discarded(
        client, demo_users, scene):
    s = scene("rqe_e2e")
    pk, job = request_and_approve(client, s, s.path)
    assert job.kind == "restore.local" and job.params["request"] == pk and job.params["path"] == s.path
    stamp = job.params["stamp"]
    s.worker()
    job = finished(s, job)
    assert job.status == "succeeded", job.error
    # the report step marked the request succeeded itself, before any read
    req = RestoreRequest.objects.get(pk=pk)
    assert req.status == "succeeded" and req.started_at and req.finished_at and req.measured_mbps > 0
    pre = f"{s.db}_pre_restore_{stamp}"
    assert req.previous_database == pre
    data = as_user(client, "viewer", "viewer").get(f"/api/v1/restores/{pk}").json()
    assert data["status"] == "succeeded" and data["previous_database"] == pre and data["error"] is None
    assert data["report"]["pre_restore_database"] == pre and data["report"]["rows"] == 523
    assert {st["name"]: st["status"] for st in data["steps"]} == dict.fromkeys(
        ["preflight", "block", "safety_backup", "load", "check", "cutover", "report"], "done")
    assert one_start_one_end(pk, "success").details["job"] == job.pk
    # the target holds the backup's data; the pre-restore database the data from before
    s.assert_restored(stamp)
    with psycopg.connect(ci(s.pg, s.db, OWNER, OWNER_PASSWORD)) as conn:  # the application's own role
        assert conn.execute("SELECT count(*) FROM applicants").fetchone()[0] == 500
    # running the same request again is refused
    again = post(as_user(client, "approver2", "approver"), f"/api/v1/restores/{pk}/approve", {})
    assert again.status_code == 409 and Job.objects.filter(kind="restore.local").count() == 1
    # discarding the kept database: typed name, a job, audited
    c = as_user(client, "admin", "admin")
    response = post(c, f"/api/v1/restores/{pk}/discard-previous", {"confirm": pre})
    assert response.status_code == 202, response.content
    discard = finished(s, Job.objects.get(pk=response.json()["job"]))
    assert discard.status == "succeeded", discard.error
    assert not exists(s.pg, pre) and exists(s.pg, s.db)
    assert RestoreRequest.objects.get(pk=pk).previous_discarded
    assert AuditEvent.objects.filter(action="restore.previous_discarded", details__request=pk).count() == 1
    assert post(c, f"/api/v1/restores/{pk}/discard-previous", {"confirm": pre}).status_code == 409


def test_a_restore_that_fails_ends_the_request_failed_with_nothing_changed(client, demo_users, scene):
    s = scene("rqe_fail")
    # a second backup of the same database in the catalog, cut short after it was taken
    broken = Path(take_backup(s.pg, s.folder, s.db, second=1))
    blob = broken.read_bytes()
    broken.write_bytes(blob[: len(blob) * 2 // 3])
    pk, job = request_and_approve(client, s, broken)
    stamp = job.params["stamp"]
    s.worker()
    job = finished(s, job)
    assert job.status == "failed" and "truncated or corrupt" in job.error
    data = as_user(client, "viewer", "viewer").get(f"/api/v1/restores/{pk}").json()
    assert data["status"] == "failed" and "truncated or corrupt" in data["error"]
    assert data["previous_database"] is None
    assert one_start_one_end(pk, "failure")
    s.assert_old(stamp)


def test_a_backup_changed_after_the_approval_is_refused_at_the_preflight(client, demo_users, scene):
    s = scene("rqe_changed")
    pk, job = request_and_approve(client, s, s.path)
    stamp = job.params["stamp"]
    blob = bytearray(Path(s.path).read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # same size, other content
    Path(s.path).write_bytes(bytes(blob))
    s.worker()
    job = finished(s, job)
    assert job.status == "failed" and "does not have the approved sha256" in job.error
    runbook = {st["name"]: st["status"] for st in job.runbook["steps"]}
    assert runbook["preflight"] == "failed" and runbook["safety_backup"] == "skipped"
    data = as_user(client, "viewer", "viewer").get(f"/api/v1/restores/{pk}").json()
    assert data["status"] == "failed"
    assert one_start_one_end(pk, "failure")
    s.assert_old(stamp)


def test_the_workers_periodic_sweep_expires_due_requests_once(client, demo_users, scene, jobs_worker_process):
    s = scene("rqe_expire")
    body = {"backup": Path(s.path).name, "target": s.db, "mode": "online", "reason": "r",
            "acknowledge_unverified": True}
    pks = [post(as_user(client, "admin", "admin"), "/api/v1/restores", body).json()["id"] for _ in range(2)]
    RestoreRequest.objects.filter(pk=pks[0]).update(expires_at=timezone.now() - timedelta(seconds=1))
    jobs_worker_process(env=s.env)  # nobody reads the requests: only the worker's sweep can expire them
    wait_for(lambda: RestoreRequest.objects.get(pk=pks[0]).status == "expired", 60, "the sweep to expire it")
    event = events("restore.expired", pks[0]).get()
    assert event.actor == "system" and event.outcome == "failure"
    assert RestoreRequest.objects.get(pk=pks[1]).status == "pending"  # not due yet
    assert not events("restore.expired", pks[1]).exists()
    # later sweeps leave it alone: still exactly one event
    RestoreRequest.objects.filter(pk=pks[1]).update(expires_at=timezone.now() - timedelta(seconds=1))
    wait_for(lambda: RestoreRequest.objects.get(pk=pks[1]).status == "expired", 60, "the next sweep")
    assert events("restore.expired", pks[0]).count() == 1 and events("restore.expired", pks[1]).count() == 1


def test_a_restore_job_naming_a_request_it_was_not_approved_for_changes_nothing(client, demo_users, scene):
    from hcapadmin.jobs.lifecycle import default_target, submit
    from tests.test_jobs import admin_request

    s = scene("rqe_foreign")
    body = {"backup": Path(s.path).name, "target": s.db, "mode": "online", "reason": "r",
            "acknowledge_unverified": True}
    pk = post(as_user(client, "admin", "admin"), "/api/v1/restores", body).json()["id"]  # pending, not approved
    job, _ = submit("restore.local", s.params(stamp="20261125040000", request=pk), request=admin_request(),
                    target=default_target())
    s.worker()
    job = finished(s, job)
    assert job.status == "failed" and f"Restore request #{pk} is pending, not approved for this job" in job.error
    assert RestoreRequest.objects.get(pk=pk).status == "pending"
    assert not events("restore.started", pk).exists() and not events("restore.finished", pk).exists()
    s.assert_old("20261125040000")


@pytest.mark.parametrize("value", [True, "1", 0, -3, 1.5, None])
def test_the_runbook_refuses_a_request_id_that_is_not_one(value):
    from hcapadmin.restores.runbook import validate_params
    from ops.errors import Invalid

    params = {"target": "hcap", "backup": "b", "path": "/p", "size": 1, "sha256": "0" * 64, "mode": "online",
              "stamp": "20261125040000"}
    assert validate_params(dict(params)) == params  # a direct submit has none
    assert validate_params({**params, "request": 7})["request"] == 7
    with pytest.raises(Invalid, match="request must be"):
        validate_params({**params, "request": value})
