"""The Job record: one row per operation run on the queue.

PostgreSQL holds the truth about a job (status, steps, log, result); RQ only
carries "run job #N" to a worker.  See docs/jobs.md.

Every status change is one method here (``start``, ``terminate``,
``request_cancel``, ``abandon``): a conditional ``UPDATE ... WHERE status IN
(...)`` and its audit event in one transaction, so when a worker, the sweeper
and a person race for the same job exactly one of them wins and exactly one
event is written.  ``TRANSITIONS`` is the whole state machine.
"""

from __future__ import annotations

import hashlib
import json

from django.db import models, transaction
from django.utils import timezone

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, ABANDONED = (
    "queued", "running", "succeeded", "failed", "cancelled", "abandoned")
# A runbook job whose compensation could not finish (an undo failed, or it
# lost its lock): a person must finish by hand what ``error`` describes.
NEEDS_ATTENTION = "needs_attention"
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, ABANDONED, NEEDS_ATTENTION)
ACTIVE = (QUEUED, RUNNING)
FINISHED = (SUCCEEDED, FAILED, CANCELLED, ABANDONED, NEEDS_ATTENTION)

# Which status may follow which.  Anything else is refused.  abandoned ->
# queued is a runbook job resumed or rolled back (``reopen``).
TRANSITIONS: dict[str, tuple[str, ...]] = {
    QUEUED: (RUNNING, FAILED, CANCELLED, ABANDONED),
    RUNNING: (SUCCEEDED, FAILED, CANCELLED, ABANDONED, NEEDS_ATTENTION),
    ABANDONED: (QUEUED,),
}
TERMINAL = (SUCCEEDED, FAILED, CANCELLED, NEEDS_ATTENTION)  # what ``terminate`` may set
# The audit outcome of each ending, unless the caller says otherwise.
_OUTCOMES = {SUCCEEDED: "success", FAILED: "failure", CANCELLED: "success", NEEDS_ATTENTION: "error"}
# Runbook modes: run the steps forward (first run or resume), or undo them.
RUN, ROLLBACK = "run", "rollback"


def sources(to_status: str) -> tuple[str, ...]:
    """The statuses from which ``to_status`` may be reached."""
    return tuple(src for src, targets in TRANSITIONS.items() if to_status in targets)


def params_key(kind: str, params: dict, target: str) -> str:
    body = json.dumps({"kind": kind, "params": params, "target": target}, sort_keys=True, separators=(",", ":"),
                      default=str)
    return hashlib.sha256(body.encode()).hexdigest()


class Job(models.Model):
    kind = models.CharField(max_length=100, db_index=True)
    title = models.CharField(max_length=200, blank=True)
    params = models.JSONField(default=dict)
    target = models.CharField(max_length=200, db_index=True)
    params_key = models.CharField(max_length=64)
    mutating = models.BooleanField(default=False)
    cancellable = models.BooleanField(default=False)
    timeout_seconds = models.PositiveIntegerField(default=3600)
    status = models.CharField(max_length=20, choices=[(s, s) for s in STATUSES], default=QUEUED, db_index=True)
    requested_by = models.CharField(max_length=255, db_index=True)
    requested_groups = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    worker_name = models.CharField(max_length=255, blank=True)
    progress = models.FloatField(default=0.0)
    steps = models.JSONField(default=list)
    log = models.TextField(blank=True, default="")
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    cancel_requested = models.BooleanField(default=False)
    cancelled_by = models.CharField(max_length=255, blank=True)
    # When it was last put on the queue (submit, resume, roll back); null for
    # rows older than the field, which count from created_at.
    queued_at = models.DateTimeField(null=True, blank=True)
    # Runbook kinds only: the plan and each step's state, so that another
    # worker can resume or roll back (hcapadmin.jobs.runbook).
    runbook = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            # At most one queued/running job per identical (kind, params, target):
            # a double click cannot create two backups, even in a race.
            models.UniqueConstraint(
                fields=["params_key"], condition=models.Q(status__in=ACTIVE), name="jobs_job_one_active_per_key"
            ),
        ]

    def __str__(self) -> str:
        return f"job #{self.pk} {self.kind} ({self.status})"

    @property
    def attempt(self) -> int:
        """1, then one more each time a runbook job is resumed or rolled back."""
        return int((self.runbook or {}).get("attempt", 1))

    @property
    def rq_id(self) -> str:
        # A resumed job is a new RQ job: the dead worker's entry may still be
        # in RQ's registries under the old id.
        return f"hcapadmin-job-{self.pk}" if self.attempt <= 1 else f"hcapadmin-job-{self.pk}-{self.attempt}"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED

    @property
    def duration_seconds(self) -> float | None:
        if not self.started_at:
            return None
        end = self.finished_at or timezone.now()
        return max(0.0, (end - self.started_at).total_seconds())

    @property
    def last_step(self) -> dict | None:
        return self.steps[-1] if self.steps else None

    @property
    def percent(self) -> int:
        return int(round(max(0.0, min(1.0, self.progress or 0.0)) * 100))

    # -- status transitions ---------------------------------------------------
    def _transition(self, to_status: str, action: str, *, from_statuses=None, actor: str | None = None,
                    request=None, outcome: str = "success", details: dict | None = None, where: dict | None = None,
                    **fields) -> bool:
        """Move this job to ``to_status`` and write ``action`` to the audit
        trail, in one transaction; only if its row is still in one of
        ``from_statuses`` (default: every status ``TRANSITIONS`` allows) and
        matches ``where``.  False, with nothing written, when it is not (a
        racing worker, sweeper or person got there first, or the transition
        is not allowed)."""
        from hcapadmin.audit.models import record

        allowed = sources(to_status)
        if from_statuses is None:
            from_statuses = allowed
        elif not set(from_statuses) <= set(allowed):
            raise ValueError(f"a job cannot go from {sorted(set(from_statuses) - set(allowed))} to {to_status}")
        if not from_statuses:
            return False
        with transaction.atomic():
            changed = Job.objects.filter(pk=self.pk, status__in=from_statuses, **(where or {})).update(
                status=to_status, **fields)
            if not changed:
                return False
            if request is not None:
                record(action, request=request, actor=actor, target=self.target, outcome=outcome,
                       details={"job": self.pk, "kind": self.kind, **(details or {})})
            else:
                record(action, actor=actor or "system", target=self.target, outcome=outcome,
                       details={"job": self.pk, "kind": self.kind, **(details or {})})
        self.status = to_status
        for name, value in fields.items():
            setattr(self, name, value)
        return True

    def start(self, *, worker: str) -> bool:
        """queued -> running, by the worker that picked the job up."""
        now = timezone.now()
        # A resumed runbook job keeps the time it first started.
        return self._transition(RUNNING, "job.started", started_at=self.started_at or now, heartbeat_at=now,
                                details={"worker": worker, **({"attempt": self.attempt} if self.runbook else {})})

    def terminate(self, status: str, *, error: str = "", result: dict | None = None, reason: str | None = None,
                  actor: str | None = None, request=None, outcome: str | None = None, from_statuses=None,
                  details: dict | None = None, **fields) -> bool:
        """End the job as ``succeeded``, ``failed`` or ``cancelled`` (audit
        action ``job.<status>``).  ``reason`` goes into the audit details."""
        if status not in TERMINAL:
            raise ValueError(f"terminate() ends a job as one of {TERMINAL}, not {status!r}")
        audit = dict(details or {})
        if reason is not None:
            audit.setdefault("reason", reason)
        values = {"finished_at": timezone.now(), **fields}
        if error:
            values["error"] = error[:5000]
        if status == SUCCEEDED:
            values["result"] = result
            values.setdefault("progress", 1.0)
            audit.setdefault("result", result)
        return self._transition(status, f"job.{status}", from_statuses=from_statuses, actor=actor, request=request,
                                outcome=outcome or _OUTCOMES[status], details=audit, **values)

    def request_cancel(self, *, request=None, actor: str | None = None) -> str:
        """A queued job is cancelled at once ("cancelled"); a running one is
        asked to stop at its next check ("requested", audited once however
        often it is asked).  "" when the job has already finished."""
        if request is not None and actor is None:
            principal = getattr(request, "principal", None)
            actor = principal.name if principal else "anonymous"
        who = actor or "system"
        if self._transition(CANCELLED, "job.cancelled", from_statuses=(QUEUED,), actor=actor, request=request,
                            finished_at=timezone.now(), cancel_requested=True, cancelled_by=who,
                            error="Cancelled before it started."):
            return "cancelled"
        # Running and not asked yet: the flag is set once, so the request is audited once.
        from hcapadmin.audit.models import record

        with transaction.atomic():
            if Job.objects.filter(pk=self.pk, status=RUNNING, cancel_requested=False).update(
                    cancel_requested=True, cancelled_by=who):
                record("job.cancel_requested", request=request, actor=who, target=self.target,
                       details={"job": self.pk, "kind": self.kind})
                self.cancel_requested, self.cancelled_by = True, who
                return "requested"
        self.refresh_from_db(fields=["status", "cancel_requested", "cancelled_by"])
        if self.status == RUNNING and self.cancel_requested:
            return "requested"
        return ""

    def abandon(self, *, error: str, heartbeat_at, steps: list | None = None, details: dict | None = None) -> bool:
        """queued/running -> abandoned, by the sweeper: only if the heartbeat
        is still the stale one it saw (a worker that just beat keeps its job)."""
        fields = {"finished_at": timezone.now(), "error": error}
        if steps is not None:
            fields["steps"] = steps
        return self._transition(ABANDONED, "job.abandoned", outcome="error", details=details,
                                where={"heartbeat_at": heartbeat_at}, **fields)

    def reopen(self, mode: str, *, request, runbook: dict) -> bool:
        """abandoned -> queued: a runbook job resumed (``mode`` "run") or
        rolled back ("rollback") by a person, with ``runbook`` its state for
        the next attempt.  Only if nobody reopened it first (same attempt)."""
        action = "job.resume_requested" if mode == RUN else "job.rollback_requested"
        return self._transition(
            QUEUED, action, request=request, where={"runbook__attempt": self.attempt},
            details={"attempt": runbook.get("attempt"), "mode": mode},
            runbook=runbook, queued_at=timezone.now(), finished_at=None, heartbeat_at=None, worker_name="",
            error="", cancel_requested=False, cancelled_by="")

    def as_api(self) -> dict:
        return {
            "id": self.pk,
            "kind": self.kind,
            "title": self.title,
            "target": self.target,
            "params": self.params,
            "status": self.status,
            "requested_by": self.requested_by,
            "created_at": self.created_at.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "duration_seconds": self.duration_seconds,
            "progress": self.progress,
            "steps": self.steps,
            "result": self.result,
            "error": self.error or None,
            "cancel_requested": self.cancel_requested,
            "runbook": self.runbook,
        }
