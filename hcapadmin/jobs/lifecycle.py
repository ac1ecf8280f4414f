"""Submitting, cancelling and sweeping jobs (called by views and by other
features).

    job, created = submit("backup.manual", {}, request=request, target="hcap")

The Job row and its ``job.queued`` audit event are written in one transaction;
the RQ enqueue runs on commit.  Redis is pinged first, so when it is down the
caller gets ``QueueUnavailable`` and nothing is written.  (If Redis dies in the
instant between the ping and the commit, the on-commit enqueue fails and the
job is marked ``failed`` with an audit event, never left ``queued`` forever.)
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models.functions import Coalesce
from django.utils import timezone

from hcapadmin.audit.models import record
from hcapadmin.jobs.models import ABANDONED, ACTIVE, FAILED, QUEUED, ROLLBACK, RUN, Job, params_key
from hcapadmin.jobs.runbook import PHASE_UNDO, UNDO_STATUSES, initial_state
from hcapadmin.jobs.queue import get_queue, redis_connection
from hcapadmin.jobs.registry import get_kind
from ops.errors import Forbidden, Invalid, Unavailable

logger = logging.getLogger("hcapadmin.jobs")

QUEUE_DOWN_MESSAGE = ("The job queue (Redis) cannot be reached, so the job was not started and nothing was recorded. "
                      "Try again in a minute; if it persists, ask an operator to check the Redis service.")


class QueueUnavailable(Unavailable):
    """Redis is unreachable: the job was not created."""


def _redis_errors():
    import redis

    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def _canonical(params: dict) -> dict:
    if not isinstance(params, dict):
        raise Invalid("job parameters must be an object")
    try:
        return json.loads(json.dumps(params, sort_keys=True))
    except (TypeError, ValueError):
        raise Invalid("job parameters must be plain JSON values") from None


def submit(kind: str, params: dict, *, request, target: str) -> tuple[Job, bool]:
    """Create and enqueue a job; returns (job, created).  An identical
    (kind, params, target) job that is queued or running is returned instead
    of a new one (created=False)."""
    spec = get_kind(kind)
    params = _canonical(params)
    key = params_key(kind, params, target)
    existing = Job.objects.filter(params_key=key, status__in=ACTIVE).first()
    if existing is not None:
        return existing, False
    try:
        redis_connection().ping()
    except _redis_errors():
        raise QueueUnavailable(QUEUE_DOWN_MESSAGE) from None
    principal = getattr(request, "principal", None)
    try:
        with transaction.atomic():
            job = Job.objects.create(
                kind=kind, title=spec.title, params=params, target=target, params_key=key, mutating=spec.mutating,
                cancellable=spec.cancellable, timeout_seconds=spec.timeout,
                requested_by=principal.name if principal else "system",
                requested_groups=list(principal.groups) if principal else [],
                queued_at=timezone.now(), runbook=initial_state(spec.steps) if spec.is_runbook else None,
            )
            record("job.queued", request=request, target=target,
                   details={"job": job.pk, "kind": kind, "params": params})
            transaction.on_commit(lambda: enqueue(job.pk))
    except IntegrityError:
        # Another request created the identical job between our check and insert.
        existing = Job.objects.filter(params_key=key, status__in=ACTIVE).first()
        if existing is not None:
            return existing, False
        raise
    if not connection.in_atomic_block:
        job.refresh_from_db()
        if job.status == FAILED and job.error == QUEUE_DOWN_MESSAGE:
            raise QueueUnavailable(QUEUE_DOWN_MESSAGE)
    return job, True


def enqueue(job_pk: int) -> None:
    """Put job #pk on the RQ queue (runs on commit of the submitting transaction)."""
    job = Job.objects.get(pk=job_pk)
    # A runbook's steps have their own timeouts, acted on by the engine at safe
    # points; RQ's limit (an alarm that can strike inside any step) is off.
    timeout = -1 if job.runbook is not None else job.timeout_seconds
    try:
        get_queue().enqueue(
            "hcapadmin.jobs.runner.execute", job.pk, job_id=job.rq_id, job_timeout=timeout,
            result_ttl=24 * 3600, failure_ttl=7 * 24 * 3600, description=f"{job.kind} #{job.pk}",
        )
    except _redis_errors() as exc:
        logger.error("job %s could not be enqueued: %s", job.pk, exc)
        job.terminate(FAILED, from_statuses=(QUEUED,), error=QUEUE_DOWN_MESSAGE, outcome="error",
                      reason="queue unavailable")


def cancel(job: Job, *, request) -> str:
    """Cancel a queued job at once, or ask a running one to stop at its next
    check.  Returns "cancelled" or "requested"; raises Invalid otherwise."""
    job = Job.objects.get(pk=job.pk)
    if not job.cancellable:
        raise Invalid(f"{job.title or job.kind} jobs cannot be cancelled once submitted.")
    if job.runbook is not None and job.is_active:
        if job.runbook.get("mode") == ROLLBACK or job.runbook.get("phase") == PHASE_UNDO:
            raise Invalid(f"Job #{job.pk} is rolling back; a roll back cannot be cancelled.")
        if job.status == QUEUED and job.attempt > 1:
            raise Invalid(f"Job #{job.pk} is queued to resume an interrupted runbook; cancel it once it runs "
                          "(what its steps did is then undone).")
    outcome = job.request_cancel(request=request)
    if outcome == "cancelled":
        rq_id = job.rq_id
        transaction.on_commit(lambda: _cancel_rq(rq_id))
    if outcome:
        return outcome
    raise Invalid(f"Job #{job.pk} has already finished ({job.status}).")


def _cancel_rq(rq_id: str) -> None:
    from rq.job import Job as RQJob

    try:
        conn = redis_connection()
        RQJob.fetch(rq_id, connection=conn).cancel()
    except Exception as exc:  # the worker skips non-queued rows anyway
        logger.info("cancelling RQ job %s: %s", rq_id, exc)


ABANDONED_ADVICE = (
    "The worker running this job stopped responding (crash, out-of-memory kill, or redeploy). "
    "Check what the last step may have changed before trying again{extra}, then submit the job again."
)
RUNBOOK_ABANDONED_ADVICE = (
    "The worker running this job stopped responding (crash, out-of-memory kill, or redeploy). "
    "Its steps' state is kept: an admin can resume it (the interrupted step runs again, the done ones are kept) "
    "or roll it back (what ran is undone in reverse order){extra}."
)


def sweep(now=None) -> list[int]:
    """Mark jobs whose worker died as ``abandoned``.  Cheap enough to call on
    every job page view; the worker also runs it periodically."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=int(getattr(settings, "JOB_STALE_SECONDS", 30)))
    abandoned: list[int] = []
    for job in Job.objects.filter(status__in=ACTIVE, heartbeat_at__lt=stale):
        if _abandon(job, job.heartbeat_at, "no heartbeat from its worker since "
                    f"{timezone.localtime(job.heartbeat_at):%Y-%m-%d %H:%M:%S}"):
            abandoned.append(job.pk)
    # Queued for long without any worker picking it up, and RQ no longer has it.
    grace = now - timedelta(seconds=int(getattr(settings, "JOB_QUEUE_GRACE_SECONDS", 300)))
    lost = list(Job.objects.annotate(since=Coalesce("queued_at", "created_at"))
                .filter(status=QUEUED, heartbeat_at__isnull=True, since__lt=grace)[:50])
    if lost:
        try:
            from rq.job import Job as RQJob

            conn = redis_connection()
            for job in lost:
                if not RQJob.exists(job.rq_id, connection=conn):
                    if _abandon(job, None, "the queue no longer holds it (Redis restarted or was flushed)"):
                        abandoned.append(job.pk)
        except _redis_errors():
            pass
    return abandoned


# Other apps' periodic upkeep (expiring restore requests, ...), registered
# from their AppConfig.ready() and run by the worker's sweeper after sweep().
_UPKEEP: list = []


def register_upkeep(func) -> None:
    """Have the worker's periodic sweep also call ``func()`` (no arguments;
    it must be idempotent and audit what it changes)."""
    if func not in _UPKEEP:
        _UPKEEP.append(func)


def run_upkeep() -> None:
    """Call every registered upkeep function; one failing does not stop the others."""
    for func in list(_UPKEEP):
        try:
            func()
        except Exception as exc:
            logger.warning("upkeep %s.%s failed: %s", func.__module__, func.__qualname__, exc)


def _abandon(job: Job, heartbeat_at, why: str) -> bool:
    step = job.last_step
    step_text = f" during step “{step['name']}”" if step else " before its first step"
    try:
        extra = get_kind(job.kind).advice
    except KeyError:
        extra = ""
    advice = RUNBOOK_ABANDONED_ADVICE if job.runbook is not None else ABANDONED_ADVICE
    message = f"Abandoned{step_text}: {why}. " + advice.format(extra=(" " + extra) if extra else "")
    steps = list(job.steps or [])
    if steps and steps[-1].get("outcome") == "running":
        steps[-1] = {**steps[-1], "outcome": "abandoned"}
    return job.abandon(error=message, heartbeat_at=heartbeat_at, steps=steps,
                       details={"last_step": step["name"] if step else None, "worker": job.worker_name})


def resume(job: Job, *, request) -> str:
    """Resume an abandoned runbook job: a worker runs its steps on from the
    one its dead worker was in (run again from its start; the step's code
    checks the world first).  Admin only; audited ``job.resume_requested``.
    Returns "queued", or "already queued" when it already was (a repeat is a
    no-op); raises Invalid when the job cannot be resumed."""
    return _reopen(job, RUN, request)


def roll_back(job: Job, *, request) -> str:
    """Roll back an abandoned runbook job: a worker undoes, in reverse order,
    every step that ran or was running.  Admin only; audited
    ``job.rollback_requested``; the job then ends ``cancelled`` (or
    ``needs_attention`` if an undo fails).  Same returns as ``resume``."""
    return _reopen(job, ROLLBACK, request)


def _reopen(job: Job, mode: str, request) -> str:
    principal = getattr(request, "principal", None)
    if principal is None or not principal.has_perm("operate"):
        raise Forbidden("Only an admin can resume or roll back a job.")
    verb = "resumed" if mode == RUN else "rolled back"
    job = Job.objects.get(pk=job.pk)
    if job.runbook is None:
        raise Invalid(f"Job #{job.pk} is not a runbook job, so it cannot be {verb}; submit it again instead.")
    if job.is_active and job.attempt > 1:
        if job.runbook.get("mode") == mode:
            return "already queued"
        other = "roll back" if mode == RUN else "resume"
        raise Invalid(f"Job #{job.pk} is already {job.status} to {other}; it cannot also be {verb}.")
    if job.status != ABANDONED:
        raise Invalid(f"Job #{job.pk} is {job.status}; only an abandoned runbook job can be {verb}.")
    undoing = job.runbook.get("phase") == PHASE_UNDO or any(
        step.get("status") in UNDO_STATUSES for step in job.runbook.get("steps", []))
    if mode == RUN and undoing:
        raise Invalid(f"Job #{job.pk} was undoing its steps when its worker died; it can only be rolled back.")
    state = {**job.runbook, "mode": mode, "attempt": job.attempt + 1, "requested_by": principal.name}
    try:
        with transaction.atomic():
            won = job.reopen(mode, request=request, runbook=state)
            if won:
                transaction.on_commit(lambda: enqueue(job.pk))
    except IntegrityError:
        other = Job.objects.filter(params_key=job.params_key, status__in=ACTIVE).first()
        raise Invalid(f"An identical job (#{other.pk if other else '?'}) is queued or running; job #{job.pk} can "
                      f"be {verb} once it has finished.") from None
    if not won:  # someone else reopened it between our read and our update: answer from the new state
        return _reopen(job, mode, request)
    return "queued"


def default_target() -> str:
    """The one name jobs on the managed HCAP database lock on (and audit as
    their target): backups, verifications, migration applies and restores all
    submit with it, so that on either platform two of them never run at once.
    HCAPADMIN_TARGET_DATABASE when set; otherwise, on the local driver, the
    database name of HCAPADMIN_MANAGED_DATABASE_URL; otherwise "hcap".  (On
    OpenShift that URL only serves to read ``pgmigrations``; backups and
    migrations run in the pods, on the database the pods are configured with.)"""
    name = getattr(settings, "TARGET_DATABASE", None)
    if name:
        return name
    from hcapadmin.core.platform import get_driver  # here only to keep this change to this function

    return get_driver().managed_database() or "hcap"
