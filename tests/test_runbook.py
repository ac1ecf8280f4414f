"""Runbook jobs (hcapadmin.jobs.runbook) run by real ``jobs_worker``
processes: the persisted plan and step data, compensation in reverse order,
needs_attention, cancel inside and between steps, per-step timeouts, and
resume / roll back after a worker was SIGKILLed."""

from __future__ import annotations

import os
import signal
from datetime import timedelta

import pytest
from rq.job import Job as RQJob

import tests.test_runbook_kinds  # noqa: F401  registers test.rb*
from hcapadmin.audit.models import AuditEvent
from hcapadmin.jobs import locks
from hcapadmin.jobs.models import Job
from hcapadmin.jobs.queue import redis_connection
from hcapadmin.jobs.lifecycle import cancel, resume, roll_back, submit, sweep
from ops.errors import Forbidden, Invalid
from tests.test_jobs import admin_request
from tests.test_jobs_workers import wait_for, worker_log
from tests.test_runbook_kinds import entered, events, release, saw_cancel

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

KINDS = ["tests.test_runbook_kinds"]


def statuses(job) -> dict:
    return {s["name"]: s["status"] for s in Job.objects.get(pk=job.pk).runbook["steps"]}


def actions(job) -> list[str]:
    return list(AuditEvent.objects.filter(details__job=job.pk).order_by("id").values_list("action", flat=True))


def finished(job, worker, what="the job to finish"):
    try:
        wait_for(lambda: Job.objects.get(pk=job.pk).is_finished, 120, what)
    except AssertionError:
        raise AssertionError(worker_log(worker)[-4000:]) from None
    return Job.objects.get(pk=job.pk)


def test_a_runbook_shows_its_plan_and_persists_what_each_step_recorded(jobs_worker_process):
    job, _ = submit("test.rb", {"tag": "ok"}, request=admin_request(), target="hcap")
    plan = Job.objects.get(pk=job.pk).runbook
    assert [(s["name"], s["title"], s["status"], s["cancellable"]) for s in plan["steps"]] == [
        ("alpha", "Step alpha", "pending", True), ("bravo", "Step bravo", "pending", False),
        ("charlie", "Step charlie", "pending", True)]
    assert plan["steps"][1]["manual"] == "put bravo back by hand" and plan["steps"][1]["timeout"] == 120
    worker = jobs_worker_process(imports=KINDS)
    job = finished(job, worker)
    assert job.status == "succeeded", job.error
    assert events("ok") == ["run:alpha", "run:bravo", "run:charlie"]
    steps = job.runbook["steps"]
    assert [s["status"] for s in steps] == ["done", "done", "done"] and job.runbook["phase"] == "done"
    assert steps[1]["data"] == {"before": "bravo", "value": "bravo-1"} and steps[1]["runs"] == 1
    assert job.result == {"steps": {n: {"before": n, "value": f"{n}-1"} for n in ("alpha", "bravo", "charlie")}}
    assert [s["name"] for s in job.steps] == ["Step alpha", "Step bravo", "Step charlie"]
    assert actions(job) == ["job.queued", "job.started", "job.succeeded"]
    # RQ's job-wide alarm is off for runbooks (each step has its own limit); the shown limit is their sum
    assert RQJob.fetch(job.rq_id, connection=redis_connection()).timeout == -1
    assert job.timeout_seconds == 360


def test_a_failing_step_undoes_it_and_every_step_before_it_in_reverse_order(jobs_worker_process):
    job, _ = submit("test.rb", {"tag": "fail", "fail_at": "charlie"}, request=admin_request(), target="hcap")
    job = finished(job, jobs_worker_process(imports=KINDS))
    assert events("fail") == ["run:alpha", "run:bravo", "run:charlie", "undo:charlie", "undo:bravo", "undo:alpha"]
    assert job.status == "failed"
    assert job.error.startswith("Step charlie broke.")
    assert "Undone: “Step charlie”, “Step bravo”, “Step alpha”" in job.error
    assert statuses(job) == {"alpha": "undone", "bravo": "undone", "charlie": "undone"}
    assert job.runbook["steps"][2]["error"] == "step charlie broke"
    assert actions(job)[-1] == "job.failed"
    assert AuditEvent.objects.get(action="job.failed", details__job=job.pk).details["undone"] == [
        "charlie", "bravo", "alpha"]


def test_an_undo_that_fails_leaves_the_job_needing_attention_with_what_to_do_by_hand(jobs_worker_process):
    job, _ = submit("test.rb", {"tag": "undo", "fail_at": "charlie", "undo_fail": "bravo"}, request=admin_request(),
                    target="hcap")
    job = finished(job, jobs_worker_process(imports=KINDS))
    assert events("undo") == ["run:alpha", "run:bravo", "run:charlie", "undo:charlie", "undo:bravo"]  # alpha kept
    assert job.status == "needs_attention"
    assert statuses(job) == {"alpha": "done", "bravo": "undo_failed", "charlie": "undone"}
    assert "undoing step “Step bravo” failed: undo of bravo broke" in job.error
    by_hand = job.error.split("To do by hand, in this order:")[1]
    assert by_hand.index("put bravo back by hand") < by_hand.index("put alpha back by hand")
    assert "put charlie back by hand" not in by_hand
    event = AuditEvent.objects.get(action="job.needs_attention", details__job=job.pk)
    assert event.outcome == "error" and event.details["state"]["bravo"] == "undo_failed"


def test_cancel_inside_a_cancellable_step_interrupts_it_and_undoes_everything(jobs_worker_process):
    worker = jobs_worker_process(imports=KINDS)
    job, _ = submit("test.rb", {"tag": "cc", "hold": "charlie"}, request=admin_request(), target="hcap")
    wait_for(lambda: entered("cc", "charlie"), 120, "step charlie to start")
    assert cancel(job, request=admin_request("bob")) == "requested"
    job = finished(job, worker)
    assert job.status == "cancelled", job.error
    assert events("cc") == ["run:alpha", "run:bravo", "run:charlie", "undo:charlie", "undo:bravo", "undo:alpha"]
    assert statuses(job) == {"alpha": "undone", "bravo": "undone", "charlie": "undone"}
    assert "value" not in job.runbook["steps"][2]["data"]  # charlie never got to its end
    assert AuditEvent.objects.get(action="job.cancelled", details__job=job.pk).actor == "bob"
    assert locks.holder(redis_connection(), "hcap") is None


def test_cancel_during_a_step_that_is_not_cancellable_lets_it_finish_then_undoes(jobs_worker_process):
    worker = jobs_worker_process(imports=KINDS)
    job, _ = submit("test.rb", {"tag": "nc", "hold": "bravo"}, request=admin_request(), target="hcap")
    wait_for(lambda: entered("nc", "bravo"), 120, "step bravo to start")
    assert cancel(job, request=admin_request("bob")) == "requested"
    # the step sees the request and goes on: nothing interrupts it
    wait_for(lambda: saw_cancel("nc") == "bravo", 120, "step bravo to see the cancel request")
    assert Job.objects.get(pk=job.pk).status == "running" and statuses(job)["bravo"] == "running"
    release("nc", "bravo")
    job = finished(job, worker)
    assert job.status == "cancelled", job.error
    assert events("nc") == ["run:alpha", "run:bravo", "undo:bravo", "undo:alpha"]
    assert statuses(job) == {"alpha": "undone", "bravo": "undone", "charlie": "skipped"}
    assert job.runbook["steps"][1]["data"]["value"] == "bravo-1"  # it ran to its end


def test_a_cancellable_step_past_its_own_timeout_is_stopped_and_undone(jobs_worker_process):
    job, _ = submit("test.rb_timeout", {"tag": "to"}, request=admin_request(), target="hcap")
    job = finished(job, jobs_worker_process(imports=KINDS))
    assert job.status == "failed"
    assert "Step wait” ran longer than its limit of 1 seconds" in job.error
    assert events("to") == ["run:alpha", "run:wait", "undo:wait", "undo:alpha"]
    assert statuses(job) == {"alpha": "undone", "wait": "undone"}


def test_a_step_that_is_not_cancellable_runs_past_its_timeout_to_its_end_then_is_undone(jobs_worker_process):
    job, _ = submit("test.rb_overrun", {"tag": "or"}, request=admin_request(), target="hcap")
    job = finished(job, jobs_worker_process(imports=KINDS))
    assert job.status == "failed"
    assert "ran longer than its limit of 1 seconds (it cannot be interrupted, so it was let finish)" in job.error
    assert job.runbook["steps"][1]["data"] == {"renamed": True}
    assert events("or") == ["run:alpha", "run:rename", "undo:rename", "undo:alpha"]
    assert statuses(job) == {"alpha": "undone", "rename": "undone", "charlie": "skipped"}


def _killed_in_bravo(jobs_worker_process, settings, tag):
    """Start the runbook, SIGKILL its worker inside step bravo, and sweep it
    to abandoned."""
    worker = jobs_worker_process(imports=KINDS)
    job, _ = submit("test.rb", {"tag": tag, "hold": "bravo"}, request=admin_request(), target="hcap")
    wait_for(lambda: entered(tag, "bravo"), 120, "step bravo to start")
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=60)
    job.refresh_from_db()
    assert sweep(now=job.heartbeat_at + timedelta(seconds=settings.JOB_STALE_SECONDS + 1)) == [job.pk]
    job.refresh_from_db()
    assert job.status == "abandoned" and "an admin can resume it" in job.error
    assert statuses(job) == {"alpha": "done", "bravo": "running", "charlie": "pending"}
    # the dead worker's lock would expire by its TTL; do not make the test wait for it
    redis_connection().delete(locks.lock_key("hcap"))
    return job


def test_resume_after_a_crash_reruns_the_interrupted_step_and_completes(jobs_worker_process, settings):
    job = _killed_in_bravo(jobs_worker_process, settings, "resume")
    release("resume", "bravo")  # the re-run of bravo goes through
    with pytest.raises(Forbidden):
        resume(job, request=admin_request_without_admin())
    assert resume(job, request=admin_request("carol")) == "queued"
    assert resume(job, request=admin_request("carol")) == "already queued"  # a repeat changes nothing
    with pytest.raises(Invalid, match="already queued to resume"):
        roll_back(job, request=admin_request("carol"))
    with pytest.raises(Invalid, match="cancel it once it runs"):
        cancel(job, request=admin_request("carol"))
    job = finished(job, jobs_worker_process(imports=KINDS))
    assert job.status == "succeeded", job.error
    assert events("resume") == ["run:alpha", "run:bravo", "run:bravo", "run:charlie"]  # alpha not run again
    steps = {s["name"]: s for s in job.runbook["steps"]}
    assert steps["alpha"]["runs"] == 1 and steps["bravo"]["runs"] == 2 and steps["charlie"]["runs"] == 1
    assert steps["bravo"]["data"] == {"before": "bravo", "value": "bravo-2"}
    assert job.runbook["attempt"] == 2 and job.rq_id.endswith(f"{job.pk}-2")
    assert actions(job) == ["job.queued", "job.started", "job.abandoned", "job.resume_requested", "job.started",
                            "job.succeeded"]
    assert AuditEvent.objects.get(action="job.resume_requested", details__job=job.pk).actor == "carol"
    # finished: neither can be asked again, and nothing runs
    with pytest.raises(Invalid, match="only an abandoned runbook job"):
        resume(job, request=admin_request("carol"))
    with pytest.raises(Invalid, match="only an abandoned runbook job"):
        roll_back(job, request=admin_request("carol"))
    assert events("resume") == ["run:alpha", "run:bravo", "run:bravo", "run:charlie"]


def test_roll_back_after_a_crash_undoes_what_ran_in_reverse_order(jobs_worker_process, settings):
    job = _killed_in_bravo(jobs_worker_process, settings, "rollback")
    assert roll_back(job, request=admin_request("carol")) == "queued"
    assert roll_back(job, request=admin_request("carol")) == "already queued"
    with pytest.raises(Invalid, match="already queued to roll back"):
        resume(job, request=admin_request("carol"))
    with pytest.raises(Invalid, match="cannot be cancelled"):
        cancel(job, request=admin_request("carol"))
    job = finished(job, jobs_worker_process(imports=KINDS))
    assert job.status == "cancelled", job.error
    assert events("rollback") == ["run:alpha", "run:bravo", "undo:bravo", "undo:alpha"]
    assert statuses(job) == {"alpha": "undone", "bravo": "undone", "charlie": "skipped"}
    assert "rolled back on request by carol" in job.error.lower()
    assert actions(job)[-3:] == ["job.rollback_requested", "job.started", "job.cancelled"]
    assert AuditEvent.objects.get(action="job.cancelled", details__job=job.pk).actor == "carol"
    with pytest.raises(Invalid, match="only an abandoned runbook job"):
        roll_back(job, request=admin_request("carol"))
    assert events("rollback") == ["run:alpha", "run:bravo", "undo:bravo", "undo:alpha"]


def test_a_worker_whose_job_was_abandoned_under_it_stops_without_touching_its_state(jobs_worker_process):
    """A worker paused past the stale limit comes back: its job is no longer
    its own (someone may have resumed it elsewhere), so it runs no further
    step, undoes nothing, and overwrites neither the state nor the status."""
    job, _ = submit("test.rb", {"tag": "taken", "abandon_at": "bravo"}, request=admin_request(), target="hcap")
    worker = jobs_worker_process(imports=KINDS)
    wait_for(lambda: "this worker stops here" in worker_log(worker), 120, "the worker to give the job up")
    job.refresh_from_db()
    assert job.status == "abandoned"
    assert events("taken") == ["run:alpha", "run:bravo"]
    assert statuses(job) == {"alpha": "done", "bravo": "running", "charlie": "pending"}
    assert "after" not in job.runbook["steps"][1]["data"]
    assert actions(job) == ["job.queued", "job.started"]


def test_a_runbook_that_loses_its_lock_stops_and_undoes_nothing(jobs_worker_process):
    """Another change may already run on the target: undoing beside it is not
    safe either, so the job needs a person, with the state and the manual steps."""
    job, _ = submit("test.rb", {"tag": "lock", "hold": "charlie", "drop_lock": "charlie"}, request=admin_request(),
                    target="hcap")
    job = finished(job, jobs_worker_process(imports=KINDS))
    assert job.status == "needs_attention"
    assert "lost its lock on hcap" in job.error
    assert events("lock") == ["run:alpha", "run:bravo", "run:charlie"]
    assert statuses(job) == {"alpha": "done", "bravo": "done", "charlie": "failed"}
    by_hand = job.error.split("To do by hand, in this order:")[1]
    assert [by_hand.index(f"put {n} back by hand") for n in ("charlie", "bravo", "alpha")] == sorted(
        by_hand.index(f"put {n} back by hand") for n in ("charlie", "bravo", "alpha"))
    assert AuditEvent.objects.get(action="job.needs_attention", details__job=job.pk).details["reason"] == "lock lost"


@pytest.mark.django_db
def test_a_job_abandoned_while_undoing_can_only_be_rolled_back():
    job, _ = submit("test.rb", {"tag": "half"}, request=admin_request(), target="hcap")
    state = job.runbook
    state["phase"] = "undo"
    state["steps"][0].update(status="done")
    state["steps"][1].update(status="undone")
    Job.objects.filter(pk=job.pk).update(status="abandoned", runbook=state)
    with pytest.raises(Invalid, match="can only be rolled back"):
        resume(job, request=admin_request())
    assert roll_back(job, request=admin_request()) == "queued"
    job.refresh_from_db()
    assert job.status == "queued" and job.runbook["mode"] == "rollback" and job.runbook["attempt"] == 2
    assert job.queued_at and job.finished_at is None and job.error == ""


def admin_request_without_admin():
    from django.test import RequestFactory

    from hcapadmin.accounts.principal import Principal

    request = RequestFactory().post("/x", REMOTE_ADDR="10.1.2.3")
    request.principal = Principal(name="vic", groups=("hcap-viewers",), roles=frozenset({"viewer"}))
    return request


@pytest.mark.django_db
def test_only_abandoned_runbook_jobs_can_be_resumed():
    ordinary, _ = submit("test.readonly", {"rb": 1}, request=admin_request(), target="hcap")
    with pytest.raises(Invalid, match="not a runbook job"):
        resume(ordinary, request=admin_request())
    queued, _ = submit("test.rb", {"tag": "q"}, request=admin_request(), target="hcap")
    with pytest.raises(Invalid, match="is queued; only an abandoned runbook job"):
        roll_back(queued, request=admin_request())
    assert not AuditEvent.objects.filter(action__in=["job.resume_requested", "job.rollback_requested"]).exists()
