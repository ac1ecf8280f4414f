"""The job state machine: every status change is one model method doing a
conditional update and its audit event together (hcapadmin.jobs.models)."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, connections, transaction

import tests.test_jobs_kinds  # noqa: F401
from hcapadmin.audit.models import AuditEvent
from hcapadmin.jobs.models import Job, params_key


def make_job(status="queued", **fields) -> Job:
    key = params_key("test.readonly", {"n": time.monotonic_ns()}, "hcap")
    return Job.objects.create(kind="test.readonly", title="Test read-only", target="hcap", params_key=key,
                              status=status, requested_by="alice", **fields)


def events(job) -> list[str]:
    return list(AuditEvent.objects.filter(details__job=job.pk).order_by("id").values_list("action", flat=True))


@pytest.mark.django_db
def test_the_lifecycle_methods_change_status_and_audit_together():
    job = make_job()
    assert job.start(worker="w:1")
    assert job.status == "running" and job.started_at and job.heartbeat_at
    assert job.terminate("succeeded", result={"x": 1})
    job.refresh_from_db()
    assert job.status == "succeeded" and job.result == {"x": 1} and job.progress == 1.0 and job.finished_at
    assert events(job) == ["job.started", "job.succeeded"]
    event = AuditEvent.objects.get(action="job.succeeded", details__job=job.pk)
    assert event.actor == "system" and event.details["result"] == {"x": 1}


@pytest.mark.django_db
def test_an_invalid_transition_is_refused_and_writes_nothing():
    done = make_job(status="succeeded")
    assert not done.start(worker="w:1")
    assert not done.terminate("failed", error="late")
    assert done.request_cancel(actor="bob") == ""
    assert not done.abandon(error="gone", heartbeat_at=None)
    done.refresh_from_db()
    assert done.status == "succeeded" and done.error == "" and not done.cancel_requested
    queued = make_job()
    assert not queued.terminate("succeeded")  # only a running job can succeed
    queued.refresh_from_db()
    assert queued.status == "queued"
    assert events(done) == [] and events(queued) == []
    with pytest.raises(ValueError):
        queued.terminate("abandoned")  # the sweeper's transition, not an ending a worker picks
    with pytest.raises(ValueError):
        queued.terminate("succeeded", from_statuses=("queued",))


@pytest.mark.django_db
def test_cancel_requested_twice_is_audited_once():
    job = make_job(status="running")
    assert job.request_cancel(actor="bob") == "requested"
    assert Job.objects.get(pk=job.pk).request_cancel(actor="carol") == "requested"
    job.refresh_from_db()
    assert job.cancel_requested and job.cancelled_by == "bob" and job.status == "running"
    assert events(job) == ["job.cancel_requested"]
    queued = make_job()
    assert queued.request_cancel(actor="bob") == "cancelled"
    queued.refresh_from_db()
    assert queued.status == "cancelled" and queued.cancelled_by == "bob" and queued.finished_at
    assert events(queued) == ["job.cancelled"]


@pytest.mark.django_db
def test_the_sweeper_does_not_abandon_a_job_whose_heartbeat_moved():
    from django.utils import timezone

    seen = timezone.now()
    job = make_job(status="running", heartbeat_at=seen)
    Job.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now())  # the worker beat meanwhile
    assert not job.abandon(error="stale", heartbeat_at=seen)
    assert Job.objects.get(pk=job.pk).status == "running" and events(job) == []


def _blocked_on_a_row_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                       "AND query LIKE 'UPDATE \"jobs_job\"%%'")
        return cursor.fetchone()[0] > 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("second", ["terminate", "abandon"])
def test_two_racing_endings_exactly_one_wins_with_one_audit_event(second):
    """A worker ends the job while the sweeper (or a second worker) ends it
    too: the first holds the row until it commits, the second's conditional
    update then finds the status changed, and refuses."""
    job = make_job(status="running", heartbeat_at=None)
    updated = threading.Event()
    commit = threading.Event()
    results: dict[str, object] = {}

    def first():
        try:
            with transaction.atomic():
                results["first"] = Job.objects.get(pk=job.pk).terminate("succeeded", result={"by": "first"})
                updated.set()
                commit.wait(60)
        finally:
            connections.close_all()

    def other():
        try:
            mine = Job.objects.get(pk=job.pk)  # read while it is still running
            ready.set()
            if second == "terminate":
                results["second"] = mine.terminate("failed", error="second")
            else:
                results["second"] = mine.abandon(error="stale", heartbeat_at=None)
        finally:
            connections.close_all()

    ready = threading.Event()
    a = threading.Thread(target=first)
    a.start()
    assert updated.wait(60)
    b = threading.Thread(target=other)
    b.start()
    assert ready.wait(60)
    deadline = time.monotonic() + 60  # failure guard only
    while not _blocked_on_a_row_lock():
        assert time.monotonic() < deadline, "the second update never waited for the first"
        time.sleep(0.05)
    commit.set()
    a.join(60)
    b.join(60)
    assert results == {"first": True, "second": False}
    job.refresh_from_db()
    assert job.status == "succeeded" and job.result == {"by": "first"} and job.error == ""
    assert events(job) == ["job.succeeded"]
