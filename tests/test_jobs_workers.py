"""Real ``manage.py jobs_worker`` processes: crash detection and the
one-mutating-job-per-target lock."""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime

import pytest

import tests.test_jobs_kinds  # noqa: F401
from hcapadmin.audit.models import AuditEvent
from hcapadmin.jobs import locks
from hcapadmin.jobs.queue import redis_connection
from hcapadmin.jobs.models import Job
from hcapadmin.jobs.lifecycle import submit, sweep
from tests.test_jobs import admin_request
from tests.test_jobs_kinds import release

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def wait_for(predicate, timeout=60.0, what="condition"):
    """Poll ``predicate``; ``timeout`` is only a failure guard, never part of
    what a test checks."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def worker_log(proc) -> str:
    with open(proc.log_path) as fh:
        return fh.read()


def test_worker_killed_with_sigkill_mid_job_becomes_abandoned(jobs_worker_process, settings):
    settings.JOB_STALE_SECONDS = 4
    worker = jobs_worker_process(imports=["tests.test_jobs_kinds"])
    job, _ = submit("test.hold", {"tag": "kill"}, request=admin_request(), target="hcap")
    wait_for(lambda: Job.objects.get(pk=job.pk).status == "running", 60, "the worker to start the job")
    wait_for(lambda: "holding tag=kill" in Job.objects.get(pk=job.pk).log, 60, "the job log")
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=60)
    job.refresh_from_db()
    assert job.status == "running"  # nobody knows yet
    # not stale as seen right after its last heartbeat (however long the kill took)
    assert sweep(now=job.heartbeat_at) == []
    # a surviving worker's periodic sweep finds it (the test itself does not sweep)
    jobs_worker_process(env={"HCAPADMIN_JOB_STALE_SECONDS": "4"})
    wait_for(lambda: Job.objects.get(pk=job.pk).status == "abandoned", 60, "a worker to sweep the dead job")
    job.refresh_from_db()
    assert job.status == "abandoned" and job.finished_at
    assert "during step “Hold”" in job.error and "submit the job again" in job.error
    assert job.steps[-1]["outcome"] == "abandoned"
    event = AuditEvent.objects.get(action="job.abandoned", details__job=job.pk)
    assert event.actor == "system" and event.details["last_step"] == "Hold"
    # a second sweep does not abandon it twice
    assert sweep() == []
    assert AuditEvent.objects.filter(action="job.abandoned", details__job=job.pk).count() == 1


def test_two_workers_never_run_two_mutating_jobs_on_one_target_at_once(jobs_worker_process):
    """Job A holds the target until the test releases it; job B, taken by the
    other worker meanwhile, must wait for the lock, and only runs after A."""
    w1 = jobs_worker_process(imports=["tests.test_jobs_kinds"])
    w2 = jobs_worker_process(imports=["tests.test_jobs_kinds"])

    def logs():
        return worker_log(w1)[-3000:] + worker_log(w2)[-3000:]

    first, _ = submit("test.hold", {"tag": "two-a"}, request=admin_request(), target="hcap")
    wait_for(lambda: "holding tag=two-a" in Job.objects.get(pk=first.pk).log, 60, "job A to run")
    running_worker = Job.objects.get(pk=first.pk).worker_name
    second, _ = submit("test.hold", {"tag": "two-b"}, request=admin_request(), target="hcap")
    other, _ = submit("test.readonly", {}, request=admin_request(), target="hcap")
    try:
        wait_for(lambda: f"Waiting: job #{first.pk} is changing hcap" in Job.objects.get(pk=second.pk).log, 60,
                 "job B to wait for the lock")
        second.refresh_from_db()
        assert second.status == "queued" and second.worker_name and second.worker_name != running_worker
        assert "holding" not in second.log
        assert locks.holder(redis_connection(), "hcap") == first.pk
        release("two-a")
        wait_for(lambda: "holding tag=two-b" in Job.objects.get(pk=second.pk).log, 60, "job B to run after A")
        release("two-b")
        wait_for(lambda: all(j.status == "succeeded" for j in Job.objects.filter(pk__in=[first.pk, second.pk,
                                                                                          other.pk])),
                 60, "all jobs to finish")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{logs()}") from None
    a, b = Job.objects.get(pk=first.pk), Job.objects.get(pk=second.pk)
    assert a.finished_at <= b.started_at
    assert datetime.fromisoformat(a.steps[0]["finished_at"]) <= datetime.fromisoformat(b.steps[0]["started_at"])
    assert a.worker_name != b.worker_name
    assert locks.holder(redis_connection(), "hcap") is None


def test_cancel_a_running_job_stops_it_and_audits_who(jobs_worker_process):
    from hcapadmin.jobs.lifecycle import cancel

    worker = jobs_worker_process(imports=["tests.test_jobs_kinds"])
    job, _ = submit("test.hold", {"tag": "stop"}, request=admin_request(), target="hcap")
    wait_for(lambda: Job.objects.get(pk=job.pk).status == "running", 60, "the job to start")
    assert cancel(job, request=admin_request("bob")) == "requested"
    try:
        wait_for(lambda: Job.objects.get(pk=job.pk).status == "cancelled", 60, "the job to stop")
    except AssertionError:
        raise AssertionError(worker_log(worker)[-3000:]) from None
    job.refresh_from_db()
    assert job.steps[-1]["outcome"] == "cancelled" and "Cancelled on request." in job.log
    assert AuditEvent.objects.get(action="job.cancel_requested", details__job=job.pk).actor == "bob"
    assert AuditEvent.objects.get(action="job.cancelled", details__job=job.pk).actor == "bob"
    # the target lock was released: the next mutating job runs at once
    nxt, _ = submit("test.sleep", {"seconds": 0, "tag": "next"}, request=admin_request(), target="hcap")
    wait_for(lambda: Job.objects.get(pk=nxt.pk).status == "succeeded", 60, "the next job")
    assert "Waiting" not in Job.objects.get(pk=nxt.pk).log


def test_worker_stops_a_job_whose_lock_redis_lost(jobs_worker_process):
    """The lock key vanishes while the job runs (Redis restarted without its
    data): the worker's heartbeat or the job's next check notices, and the job
    fails saying so instead of going on."""
    worker = jobs_worker_process(imports=["tests.test_jobs_kinds"])
    job, _ = submit("test.hold", {"tag": "redis-lost"}, request=admin_request(), target="hcap")
    wait_for(lambda: "holding tag=redis-lost" in Job.objects.get(pk=job.pk).log, 60, "the job to run")
    assert redis_connection().delete(locks.lock_key("hcap")) == 1
    try:
        wait_for(lambda: Job.objects.get(pk=job.pk).status == "failed", 60, "the job to stop")
    except AssertionError:
        raise AssertionError(worker_log(worker)[-3000:]) from None
    job.refresh_from_db()
    assert "lost its lock on hcap" in job.error and job.steps[-1]["outcome"] == "failed"
    assert AuditEvent.objects.get(action="job.failed", details__job=job.pk).details["reason"] == "lock lost"
    assert "WARNING: the lock on this database expired" not in job.log  # said once, as the failure


def test_heartbeat_refreshes_the_lock_while_the_portal_database_fails(pg):
    """The portal database goes away under a running job (its session ended,
    new connections refused): every beat's job-row update fails, and the lock
    is refreshed all the same."""
    from django.db import connection

    from hcapadmin.jobs.runner import Heartbeat

    conn = redis_connection()
    job, _ = submit("test.readonly", {"heartbeat": True}, request=admin_request(), target="hcap")
    assert locks.try_acquire(conn, "hb-db", job.pk)
    key = locks.lock_key("hb-db")
    heartbeat = Heartbeat(job.pk, "hb-db", conn, interval=0.1)
    heartbeat.holds_lock = True
    dbname = connection.settings_dict["NAME"]
    heartbeat.start()
    try:
        wait_for(lambda: heartbeat.lock_refreshes >= 1, 60, "a first beat (its database session is open)")
        assert heartbeat.db_failures == 0
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            own_pid = cursor.fetchone()[0]  # the test's own session stays
        pg.psql(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
        pg.psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{dbname}' "
                f"AND pid <> {own_pid}")
        wait_for(lambda: heartbeat.db_failures >= 1, 60, "the heartbeat's job-row update to fail")
        # from now on every beat fails its update; shorten the lock and see a beat renew it
        conn.expire(key, 5)
        wait_for(lambda: conn.ttl(key) > 5, 60, "the lock to be refreshed")
        assert not heartbeat.lock_lost and locks.holds(conn, "hb-db", job.pk)
    finally:
        heartbeat.stop()
        pg.psql(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
        locks.release(conn, "hb-db", job.pk)


def test_worker_reconnects_when_its_database_sessions_were_ended_between_jobs(jobs_worker_process):
    """The portal database restarts (here: every session of the worker is
    terminated) while the worker waits for work: the next job must still run,
    on a new connection, instead of failing on the dead one."""
    from django.db import connection

    worker = jobs_worker_process(imports=["tests.test_jobs_kinds"])
    first, _ = submit("test.sleep", {"seconds": 0, "tag": "before"}, request=admin_request(), target="hcap")
    wait_for(lambda: Job.objects.get(pk=first.pk).status == "succeeded", 60, "the first job")
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        assert cursor.fetchone()[0] >= 1
    second, _ = submit("test.sleep", {"seconds": 0, "tag": "after"}, request=admin_request(), target="hcap")
    try:
        wait_for(lambda: Job.objects.get(pk=second.pk).status == "succeeded", 60, "the second job")
    except AssertionError:
        raise AssertionError(worker_log(worker)[-3000:]) from None
