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
from hcapadmin.jobs.models import Job
from hcapadmin.jobs.services import submit, sweep
from tests.test_jobs import admin_request

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def wait_for(predicate, timeout=30.0, what="condition"):
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
    job, _ = submit("test.sleep", {"seconds": 60, "tag": "kill"}, request=admin_request(), target="hcap")
    wait_for(lambda: Job.objects.get(pk=job.pk).status == "running", 40, "the worker to start the job")
    wait_for(lambda: "sleeping 60.0s" in Job.objects.get(pk=job.pk).log, 10, "the job log")
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    job.refresh_from_db()
    assert job.status == "running"  # nobody knows yet
    assert sweep() == []  # heartbeat still fresh
    # a surviving worker's periodic sweep finds it (the test itself does not sweep)
    jobs_worker_process(env={"HCAPADMIN_JOB_STALE_SECONDS": "4"})
    wait_for(lambda: Job.objects.get(pk=job.pk).status == "abandoned", 30, "a worker to sweep the dead job")
    job.refresh_from_db()
    assert job.status == "abandoned" and job.finished_at
    assert "during step “Sleep”" in job.error and "submit the job again" in job.error
    assert job.steps[-1]["outcome"] == "abandoned"
    event = AuditEvent.objects.get(action="job.abandoned", details__job=job.pk)
    assert event.actor == "system" and event.details["last_step"] == "Sleep"
    # a second sweep does not abandon it twice
    assert sweep() == []
    assert AuditEvent.objects.filter(action="job.abandoned", details__job=job.pk).count() == 1


def test_two_workers_never_run_two_mutating_jobs_on_one_target_at_once(jobs_worker_process):
    w1 = jobs_worker_process(imports=["tests.test_jobs_kinds"])
    w2 = jobs_worker_process(imports=["tests.test_jobs_kinds"])
    wait_for(lambda: all("Listening on" in worker_log(w) for w in (w1, w2)), 40, "both workers to listen")
    jobs = [submit("test.sleep", {"seconds": 1.5, "tag": f"t{i}"}, request=admin_request(), target="hcap")[0]
            for i in range(3)]
    other = submit("test.readonly", {}, request=admin_request(), target="hcap")[0]

    def all_done():
        return all(j.status == "succeeded" for j in Job.objects.filter(pk__in=[j.pk for j in jobs + [other]]))

    try:
        wait_for(all_done, 60, "all jobs to finish")
    except AssertionError:
        raise AssertionError(worker_log(w1)[-3000:] + worker_log(w2)[-3000:]) from None
    done = list(Job.objects.filter(pk__in=[j.pk for j in jobs]).order_by("started_at"))
    spans = [(datetime.fromisoformat(j.steps[0]["started_at"]), datetime.fromisoformat(j.steps[0]["finished_at"]))
             for j in done]
    for (s1, e1), (s2, e2) in zip(spans, spans[1:]):
        assert e1 <= s2, f"mutating jobs overlapped: {spans}"
    for a, b in zip(done, done[1:]):
        assert a.finished_at <= b.started_at
    # both workers took jobs, and one of them had to wait for the lock
    assert len({j.worker_name for j in done}) == 2
    assert any("Waiting: job #" in j.log for j in done)


def test_cancel_a_running_job_stops_it_and_audits_who(jobs_worker_process):
    from hcapadmin.jobs.services import cancel

    worker = jobs_worker_process(imports=["tests.test_jobs_kinds"])
    job, _ = submit("test.sleep", {"seconds": 60, "tag": "stop"}, request=admin_request(), target="hcap")
    wait_for(lambda: Job.objects.get(pk=job.pk).status == "running", 40, "the job to start")
    assert cancel(job, request=admin_request("bob")) == "requested"
    try:
        wait_for(lambda: Job.objects.get(pk=job.pk).status == "cancelled", 15, "the job to stop")
    except AssertionError:
        raise AssertionError(worker_log(worker)[-3000:]) from None
    job.refresh_from_db()
    assert job.steps[-1]["outcome"] == "cancelled" and "Cancelled on request." in job.log
    assert AuditEvent.objects.get(action="job.cancel_requested", details__job=job.pk).actor == "bob"
    assert AuditEvent.objects.get(action="job.cancelled", details__job=job.pk).actor == "bob"
    # the target lock was released: the next mutating job runs at once
    nxt, _ = submit("test.sleep", {"seconds": 0, "tag": "next"}, request=admin_request(), target="hcap")
    wait_for(lambda: Job.objects.get(pk=nxt.pk).status == "succeeded", 20, "the next job")
    assert "Waiting" not in Job.objects.get(pk=nxt.pk).log
