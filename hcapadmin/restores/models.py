"""Restore requests and their sign-offs.

A ``RestoreRequest`` pins what is to be restored (the backup's name, size and
SHA-256 taken when the request is made), where (target database, mode) and
why.  It moves through its statuses only by its own methods (``approve``,
``reject``, ``cancel``, ``expire``, ``mark_started``, ``finish``): each does a
conditional UPDATE of the status and writes its audit event in the same
transaction, so two people acting at once cannot both win, and a status never
changes without its record.

    pending -> approved -> running -> succeeded | failed | needs_attention
    pending -> rejected | expired | cancelled;  approved -> cancelled | failed | needs_attention
    needs_attention -> running | succeeded | failed  (its abandoned job was resumed or rolled back)
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from hcapadmin.audit.models import record
from ops import errors
from ops.errors import Forbidden

PENDING, APPROVED, RUNNING, SUCCEEDED, FAILED, NEEDS_ATTENTION, REJECTED, EXPIRED, CANCELLED = (
    "pending", "approved", "running", "succeeded", "failed", "needs_attention", "rejected", "expired", "cancelled")
STATUSES = (PENDING, APPROVED, RUNNING, SUCCEEDED, FAILED, NEEDS_ATTENTION, REJECTED, EXPIRED, CANCELLED)
OPEN = (PENDING, APPROVED, RUNNING)
ENDED = (SUCCEEDED, FAILED, NEEDS_ATTENTION)
MODES = ("online", "offline")


class Conflict(errors.Conflict):
    """The request is not in a status that allows this (answered 409)."""


class RestoreRequest(models.Model):
    backup_name = models.CharField(max_length=255)
    backup_database = models.CharField(max_length=100)
    backup_created_at = models.DateTimeField()
    backup_size = models.BigIntegerField()
    backup_sha256 = models.CharField(max_length=64)
    # The backup's latest verification when the request was made: True passed,
    # False failed, None never verified.
    backup_verified = models.BooleanField(null=True)
    acknowledge_unverified = models.BooleanField(default=False)
    target = models.CharField(max_length=63)
    mode = models.CharField(max_length=10, choices=[(m, m) for m in MODES])
    reason = models.TextField()
    ticket = models.CharField(max_length=100, blank=True)
    requested_by = models.CharField(max_length=255, db_index=True)
    requested_groups = models.JSONField(default=list)
    approvals_required = models.PositiveSmallIntegerField(default=1)
    status = models.CharField(max_length=20, choices=[(s, s) for s in STATUSES], default=PENDING, db_index=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    expires_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    ended_by = models.CharField(max_length=255, blank=True)  # who rejected or cancelled
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    # Restore rate measured by a succeeded run (MB of compressed backup per second).
    measured_mbps = models.FloatField(null=True, blank=True)
    # The kept pre-restore database (``<db>_pre_restore_<stamp>``), from the run's result.
    previous_database = models.CharField(max_length=63, blank=True)
    previous_discarded = models.BooleanField(default=False)
    discard_job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"restore request #{self.pk} {self.backup_name} -> {self.target} ({self.status})"

    # -- reading -------------------------------------------------------------------
    @property
    def audit_target(self) -> str:
        return self.target

    @property
    def is_due_to_expire(self) -> bool:
        return self.status == PENDING and self.expires_at <= timezone.now()

    def details(self, **extra) -> dict:
        return {"request": self.pk, "backup": self.backup_name, "target": self.target, "mode": self.mode, **extra}

    # -- status changes --------------------------------------------------------------
    def _move(self, from_statuses, to_status: str, action: str, *, request=None, actor=None, outcome="success",
              details=None, extra_filter=None, **fields) -> bool:
        """Conditional UPDATE plus audit event, in one transaction; False when
        the row was no longer in ``from_statuses`` (someone else got there)."""
        with transaction.atomic():
            rows = RestoreRequest.objects.filter(pk=self.pk, status__in=from_statuses)
            if extra_filter is not None:
                rows = rows.filter(extra_filter)
            if not rows.update(status=to_status, **fields):
                return False
            record(action, request=request, actor=actor, target=self.audit_target, outcome=outcome,
                   details=self.details(status=to_status, **(details or {})))
        self.refresh_from_db()
        return True

    def expire(self, now=None) -> bool:
        """pending -> expired once ``expires_at`` has passed; audited once (the
        conditional UPDATE lets exactly one caller through)."""
        now = now or timezone.now()
        return self._move((PENDING,), EXPIRED, "restore.expired", actor="system", outcome="failure",
                          extra_filter=models.Q(expires_at__lte=now), finished_at=now,
                          details={"expired_at": self.expires_at.isoformat()})

    def approve(self, *, request, comment: str = ""):
        """Record ``request.principal``'s approval.  When it is the last one
        needed, the request becomes ``approved`` and the restore runbook of
        this platform (``workflow.restore_kind()``) is submitted in the same
        transaction (enqueued on commit).  Returns the job when one was
        submitted, else None.  Refused before anything is written when this
        portal has no restore runbook for its platform (503) or the backup
        left the catalog (409)."""
        from hcapadmin.jobs.lifecycle import default_target, submit
        from hcapadmin.restores import workflow

        who = request.principal
        if not who.has_perm("approve"):
            raise Forbidden("Only approvers can approve restore requests.")
        if who.name == self.requested_by:
            raise Forbidden("You requested this restore; another person must approve it.")
        self.expire_if_due()
        kind = workflow.restore_kind()
        params = workflow.job_params(self)
        with transaction.atomic():
            # The row lock orders concurrent approvals: each sees the ones
            # committed before it, so exactly one of them is the last.
            row = RestoreRequest.objects.select_for_update().get(pk=self.pk)
            self._check_pending(row)
            if row.decisions.filter(approver=who.name, decision="approve").exists():
                raise Conflict(f"{who.name} has already approved this request; approvals must come from "
                               "different people.")
            RestoreDecision.objects.create(request=row, approver=who.name, approver_groups=list(who.groups),
                                           decision="approve", comment=comment)
            given = row.decisions.filter(decision="approve").count()
            record("restore.approval", request=request, target=row.target,
                   details=self.details(comment=comment[:500], approvals=given, needed=row.approvals_required))
            job = None
            if given >= row.approvals_required:
                now = timezone.now()
                if not RestoreRequest.objects.filter(pk=row.pk, status=PENDING).update(status=APPROVED,
                                                                                      decided_at=now):
                    raise Conflict("This request is no longer pending.")  # cannot happen under the row lock
                job, _created = submit(kind, params, request=request, target=default_target())
                RestoreRequest.objects.filter(pk=row.pk).update(job=job)
                record("restore.approved", request=request, target=row.target,
                       details=self.details(status=APPROVED, job=job.pk, approvals=given))
        self.refresh_from_db()
        return job

    def reject(self, *, request, comment: str) -> None:
        who = request.principal
        if not who.has_perm("approve"):
            raise Forbidden("Only approvers can reject restore requests.")
        if who.name == self.requested_by:
            raise Forbidden("You requested this restore; cancel it instead of rejecting it.")
        self.expire_if_due()
        with transaction.atomic():
            row = RestoreRequest.objects.select_for_update().get(pk=self.pk)
            self._check_pending(row)
            RestoreDecision.objects.create(request=row, approver=who.name, approver_groups=list(who.groups),
                                           decision="reject", comment=comment)
            now = timezone.now()
            if not self._move((PENDING,), REJECTED, "restore.rejected", request=request,
                              details={"comment": comment[:500]}, decided_at=now, finished_at=now,
                              ended_by=who.name):
                raise Conflict("This request is no longer pending.")
        self.refresh_from_db()

    def cancel(self, *, request, comment: str = "") -> None:
        """The requester or an admin withdraws the request before its job
        starts (a queued job is cancelled with it)."""
        from hcapadmin.jobs.models import CANCELLED as JOB_CANCELLED, QUEUED, Job

        who = request.principal
        if who.name != self.requested_by and not who.has_perm("operate"):
            raise Forbidden("Only the requester or an admin can cancel a restore request.")
        self.expire_if_due()
        with transaction.atomic():
            row = RestoreRequest.objects.select_for_update().get(pk=self.pk)
            if row.status not in (PENDING, APPROVED):
                raise Conflict(f"This request is {row.status}; only a pending or approved request that has not "
                               "started can be cancelled.")
            now = timezone.now()
            if row.job_id is not None:
                # The job is not cancellable once running; while still queued it
                # is withdrawn here (a worker skips a row that is not queued).
                if not Job.objects.filter(pk=row.job_id, status=QUEUED).update(
                        status=JOB_CANCELLED, finished_at=now, cancel_requested=True, cancelled_by=who.name,
                        error="Cancelled with its restore request before it started."):
                    raise Conflict(f"Its job #{row.job_id} has already started; it can no longer be cancelled.")
                record("job.cancelled", request=request, target=row.job.target,
                       details={"job": row.job_id, "kind": row.job.kind})
            if not self._move((PENDING, APPROVED), CANCELLED, "restore.cancelled", request=request,
                              details={"comment": comment[:500]}, finished_at=now, ended_by=who.name):
                raise Conflict("This request can no longer be cancelled.")
        self.refresh_from_db()

    def mark_started(self, job) -> bool:
        """approved -> running, called by the restore runbook's preflight
        (``job``: the Job or its id; it must be this request's job).  Also
        needs_attention -> running when that job, abandoned before or during
        its preflight, is resumed."""
        job_id = getattr(job, "pk", job)
        return self._move((APPROVED, NEEDS_ATTENTION), RUNNING, "restore.started", actor="system",
                          details={"job": job_id}, extra_filter=models.Q(job_id=job_id), started_at=timezone.now())

    def finish(self, status: str, *, error: str = "", result: dict | None = None,
               measured_mbps: float | None = None) -> bool:
        """End the run: ``succeeded``, ``failed`` (rolled back, nothing
        changed) or ``needs_attention`` (stopped half way; a person must look)."""
        if status not in ENDED:
            raise ValueError(f"finish() takes one of {ENDED}, not {status!r}")
        fields = {"finished_at": timezone.now()}
        if status == SUCCEEDED and measured_mbps and measured_mbps > 0:
            fields["measured_mbps"] = float(measured_mbps)
        previous = (result or {}).get("pre_restore_database")
        if isinstance(previous, str) and previous.startswith(f"{self.target}_pre_restore_") and len(previous) <= 63:
            fields["previous_database"] = previous
        outcome = {SUCCEEDED: "success", FAILED: "failure", NEEDS_ATTENTION: "error"}[status]
        # A request left needs_attention by an abandoned job ends as that job
        # ends once it was resumed or rolled back.
        from_statuses = (APPROVED, RUNNING) if status == NEEDS_ATTENTION else (APPROVED, RUNNING, NEEDS_ATTENTION)
        return self._move(from_statuses, status, "restore.finished", actor="system", outcome=outcome,
                          details={"job": self.job_id, "error": error[:500]}, **fields)

    def expire_if_due(self) -> None:
        """Lazy expiry: called whenever a request is read or acted on."""
        self.refresh_from_db(fields=["status", "expires_at"])
        if self.is_due_to_expire:
            self.expire()

    def _check_pending(self, row) -> None:
        if row.status == PENDING and row.is_due_to_expire:
            # Expired since expire_if_due() ran; the next read records the expiry.
            raise Conflict("This request has expired; open a new one.")
        if row.status == EXPIRED:
            raise Conflict("This request has expired; open a new one.")
        if row.status != PENDING:
            raise Conflict(f"This request is {row.status}, no longer pending.")


class RestoreDecision(models.Model):
    """One approver's approval or rejection of one request, with their comment."""

    request = models.ForeignKey(RestoreRequest, on_delete=models.PROTECT, related_name="decisions")
    approver = models.CharField(max_length=255)
    approver_groups = models.JSONField(default=list)
    decision = models.CharField(max_length=10, choices=[("approve", "approve"), ("reject", "reject")])
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            # Approvals come from distinct people, even in a race.
            models.UniqueConstraint(fields=["request", "approver"], condition=models.Q(decision="approve"),
                                    name="restores_one_approval_per_person"),
        ]


def expiry_for(now=None):
    return (now or timezone.now()) + timedelta(hours=int(settings.RESTORE_EXPIRY_HOURS))
