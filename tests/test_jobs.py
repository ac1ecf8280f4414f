"""The job framework against the real Redis and PostgreSQL."""

from __future__ import annotations

import pytest
from django.test import RequestFactory

import tests.test_jobs_kinds  # noqa: F401  registers test.* kinds
from hcapadmin.accounts.principal import Principal
from hcapadmin.audit.models import AuditEvent
from hcapadmin.jobs.models import Job
from hcapadmin.jobs.lifecycle import QueueUnavailable, cancel, submit


def admin_request(name="alice"):
    request = RequestFactory().post("/x", REMOTE_ADDR="10.1.2.3")
    request.principal = Principal(name=name, groups=("hcap-admins",), roles=frozenset({"admin"}))
    return request


def actions(job):
    return [e.action for e in AuditEvent.objects.filter(details__job=job.pk).order_by("id")]


@pytest.mark.django_db
def test_submit_run_succeeds_with_steps_log_result_and_audit(run_jobs):
    job, created = submit("test.sleep", {"seconds": 0.2, "tag": "a"}, request=admin_request(), target="hcap")
    assert created and job.status == "queued" and job.requested_by == "alice"
    run_jobs()
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert job.result == {"slept": 0.2, "tag": "a"}
    assert [s["name"] for s in job.steps] == ["Sleep"] and job.steps[0]["outcome"] == "succeeded"
    assert job.steps[0]["finished_at"] >= job.steps[0]["started_at"]
    assert "sleeping 0.2s tag=a" in job.log
    assert job.progress == 1.0 and job.duration_seconds > 0
    assert actions(job) == ["job.queued", "job.started", "job.succeeded"]
    queued = AuditEvent.objects.get(action="job.queued", details__job=job.pk)
    assert queued.actor == "alice" and queued.source_ip == "10.1.2.3" and queued.target == "hcap"


@pytest.mark.django_db
def test_double_submit_returns_the_same_job(run_jobs):
    first, created1 = submit("test.sleep", {"seconds": 0, "tag": "dup"}, request=admin_request(), target="hcap")
    second, created2 = submit("test.sleep", {"tag": "dup", "seconds": 0}, request=admin_request(), target="hcap")
    assert created1 and not created2 and first.pk == second.pk
    other, created3 = submit("test.sleep", {"seconds": 0, "tag": "dup"}, request=admin_request(), target="other")
    assert created3 and other.pk != first.pk
    assert Job.objects.filter(kind="test.sleep", params__tag="dup").count() == 2
    run_jobs()
    # once finished, the same submission makes a new job
    third, created4 = submit("test.sleep", {"seconds": 0, "tag": "dup"}, request=admin_request(), target="hcap")
    assert created4 and third.pk not in (first.pk, other.pk)


@pytest.mark.django_db
def test_redis_down_gives_clear_error_and_writes_nothing(settings):
    from devtools.services import free_port

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    jobs_before, audit_before = Job.objects.count(), AuditEvent.objects.count()
    with pytest.raises(QueueUnavailable) as info:
        submit("test.sleep", {"seconds": 0}, request=admin_request(), target="hcap")
    assert "Redis" in str(info.value) and "nothing was recorded" in str(info.value)
    assert Job.objects.count() == jobs_before
    assert AuditEvent.objects.count() == audit_before


@pytest.mark.django_db
def test_ops_error_marks_job_failed_with_message_and_failed_step(run_jobs):
    job, _ = submit("test.fail", {}, request=admin_request(), target="hcap")
    run_jobs()
    job.refresh_from_db()
    assert job.status == "failed"
    assert job.error == "the managed database refused: disk full"
    assert [(s["name"], s["outcome"]) for s in job.steps] == [("Prepare", "succeeded"), ("Break", "failed")]
    assert "FAILED: the managed database refused: disk full" in job.log
    assert actions(job)[-1] == "job.failed"


@pytest.mark.django_db
def test_unexpected_exception_and_timeout_fail_clearly(run_jobs):
    crash, _ = submit("test.crash", {}, request=admin_request(), target="hcap")
    slow, _ = submit("test.timeout", {}, request=admin_request(), target="hcap")
    run_jobs()
    crash.refresh_from_db()
    slow.refresh_from_db()
    assert crash.status == "failed" and "ZeroDivisionError" in crash.error
    assert slow.status == "failed" and "longer than its limit of 1 seconds" in slow.error
    assert slow.steps[-1]["outcome"] == "failed"


@pytest.mark.django_db
def test_cancel_queued_job_is_audited_with_the_canceller(run_jobs):
    job, _ = submit("test.sleep", {"seconds": 5, "tag": "c"}, request=admin_request(), target="hcap")
    assert cancel(job, request=admin_request("bob")) == "cancelled"
    run_jobs()
    job.refresh_from_db()
    assert job.status == "cancelled" and job.started_at is None
    event = AuditEvent.objects.get(action="job.cancelled", details__job=job.pk)
    assert event.actor == "bob"
    from ops.errors import Invalid

    with pytest.raises(Invalid):
        cancel(job, request=admin_request("bob"))
    ro, _ = submit("test.readonly", {}, request=admin_request(), target="hcap")
    with pytest.raises(Invalid):
        cancel(ro, request=admin_request("bob"))


@pytest.mark.django_db
def test_mutating_job_waits_for_the_target_lock_and_fails_clearly_past_its_timeout(run_jobs):
    from hcapadmin.jobs import locks
    from hcapadmin.jobs.queue import redis_connection

    conn = redis_connection()
    assert locks.try_acquire(conn, "locked-db", 999999)  # another job holds the database
    assert conn.ttl(locks.lock_key("locked-db")) > 0  # and it would expire by itself
    try:
        job, _ = submit("test.mutating_impatient", {}, request=admin_request(), target="locked-db")
        free, _ = submit("test.mutating_quick", {}, request=admin_request(), target="free-db")
        run_jobs()
        job.refresh_from_db()
        free.refresh_from_db()
        assert free.status == "succeeded"  # other targets are not blocked
        assert job.status == "failed" and job.started_at is None
        assert "waited longer than the job's limit of 2 seconds" in job.error
        assert "Waiting: job #999999 is changing locked-db" in job.log
        assert locks.holder(conn, "locked-db") == 999999  # the waiter never touched the other job's lock
    finally:
        locks.release(conn, "locked-db", 999999)
    job2, _ = submit("test.mutating_quick", {}, request=admin_request(), target="locked-db")
    run_jobs()
    job2.refresh_from_db()
    assert job2.status == "succeeded" and locks.holder(conn, "locked-db") is None


@pytest.mark.django_db
def test_enqueue_failing_after_commit_marks_the_job_failed_not_stuck_queued(settings):
    from devtools.services import free_port
    from hcapadmin.jobs.lifecycle import QUEUE_DOWN_MESSAGE, enqueue

    job, _ = submit("test.readonly", {"x": 1}, request=admin_request(), target="hcap")
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # Redis gone between the ping and the commit
    enqueue(job.pk)
    job.refresh_from_db()
    assert job.status == "failed" and job.error == QUEUE_DOWN_MESSAGE
    event = AuditEvent.objects.get(action="job.failed", details__job=job.pk)
    assert event.outcome == "error" and event.details["reason"] == "queue unavailable"


@pytest.mark.django_db
def test_a_job_that_loses_its_lock_stops_at_its_next_check_and_fails_clearly(run_jobs):
    """Redis forgot the lock mid-job (restart, flush, expiry): the job's next
    safe point stops it instead of letting it change the database beside the
    next lock holder."""
    from hcapadmin.jobs import locks
    from hcapadmin.jobs.queue import redis_connection

    job, _ = submit("test.hold", {"tag": "lost", "drop_lock": True, "guard": 60}, request=admin_request(),
                    target="hcap")
    run_jobs()
    job.refresh_from_db()
    assert job.status == "failed", (job.error, job.log)
    assert job.error.startswith("Stopped: this job lost its lock on hcap")
    assert "another change on hcap could start beside it" in job.error
    assert job.steps[-1] == {**job.steps[-1], "name": "Hold", "outcome": "failed"}
    assert "FAILED: Stopped: this job lost its lock" in job.log
    event = AuditEvent.objects.get(action="job.failed", details__job=job.pk)
    assert event.outcome == "failure" and event.details["reason"] == "lock lost"
    assert locks.holder(redis_connection(), "hcap") is None


@pytest.mark.django_db
def test_a_lock_taken_over_by_another_job_also_stops_the_first(run_jobs):
    """The lock expired and another job took it: the owner check is by job id."""
    from hcapadmin.jobs import locks
    from hcapadmin.jobs.queue import redis_connection

    conn = redis_connection()
    job, _ = submit("test.hold", {"tag": "taken", "lock_taken_by": 888888, "guard": 60}, request=admin_request(),
                    target="taken-db")
    run_jobs()
    job.refresh_from_db()
    assert job.status == "failed" and "lost its lock on taken-db" in job.error
    assert locks.holder(conn, "taken-db") == 888888  # the other job's lock is left alone
    locks.release(conn, "taken-db", 888888)
