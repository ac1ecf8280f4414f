"""A deploy's preview: what would be created, changed, kept and deleted,
taken from OpenShift's own template processing and server-side dry run
(ops/deploys.py), with each live object's resourceVersion.

Nothing is applied without a confirmed preview.  ``confirm`` records who
confirmed it and submits its job in one transaction with the audit event; a
destructive deploy (the Patroni redeploy) also needs ``approve`` by another
person with the approver role, and its job is submitted with that approval.
Each change is a conditional UPDATE, so two people acting at once cannot both
win.  Secret values are never stored here (ops.deploys.redact).
"""

from __future__ import annotations

from django.db import models, transaction
from django.utils import timezone

from hcapadmin.audit.models import record
from ops.errors import Conflict, Forbidden

DEPLOY_KINDS = ("db-prep", "db-create", "rollout", "rollback", "patroni-redeploy")
JOB_KINDS = {"db-prep": "deploy.apply", "db-create": "deploy.apply", "rollout": "deploy.rollout", "rollback": "deploy.rollout",
             "patroni-redeploy": "deploy.patroni_redeploy"}


class Preview(models.Model):
    kind = models.CharField(max_length=20, choices=[(k, k) for k in DEPLOY_KINDS])
    values = models.JSONField(default=dict)  # the parameters people gave (never generated ones)
    target_namespace = models.CharField(max_length=63)
    tools_namespace = models.CharField(max_length=63, blank=True)
    plan = models.JSONField(default=dict)  # {"items": [...], "warnings": [...]}, Secret values redacted
    summary = models.JSONField(default=dict)  # action -> count
    destructive = models.BooleanField(default=False)
    created_by = models.CharField(max_length=255, db_index=True)
    created_groups = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    confirmed_by = models.CharField(max_length=255, blank=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    approved_by = models.CharField(max_length=255, blank=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"deploy preview #{self.pk} {self.kind} in {self.target_namespace}"

    @property
    def items(self) -> list:
        return (self.plan or {}).get("items", [])

    @property
    def refused(self) -> list:
        return [i for i in self.items if i.get("action") == "refused"]

    @property
    def status(self) -> str:
        if self.job_id:
            return "submitted"
        if self.confirmed_at and self.destructive:
            return "awaiting approval"
        return "previewed"

    def details(self, **extra) -> dict:
        return {"preview": self.pk, "kind": self.kind, "namespace": self.target_namespace,
                "summary": self.summary, **extra}

    def _submit(self, request):
        from hcapadmin.jobs.lifecycle import default_target, submit

        job, _created = submit(JOB_KINDS[self.kind], {"preview": self.pk}, request=request, target=default_target())
        Preview.objects.filter(pk=self.pk).update(job=job)
        return job

    def confirm(self, *, request):
        """The requester (``operate``) confirms exactly this preview.  Returns
        the job when it was submitted (None while an approval is needed)."""
        who = request.principal
        if not who.has_perm("operate"):
            raise Forbidden("Only admins can confirm a deploy.")
        if self.refused:
            raise Conflict("OpenShift refuses part of this plan (see the preview); it cannot be confirmed.")
        with transaction.atomic():
            now = timezone.now()
            if not Preview.objects.filter(pk=self.pk, confirmed_at__isnull=True).update(
                    confirmed_by=who.name, confirmed_at=now):
                raise Conflict("This preview was already confirmed; make a new preview to deploy again.")
            self.refresh_from_db()
            job = None if self.destructive else self._submit(request)
            record("deploy.confirmed", request=request, target=self.target_namespace,
                   details=self.details(job=job.pk if job else None, plan=self._audit_plan()))
        self.refresh_from_db()
        return job

    def approve(self, *, request):
        """Another person's sign-off of a destructive deploy; submits its job."""
        who = request.principal
        if not self.destructive:
            raise Conflict("This deploy needs no approval.")
        if not who.has_perm("approve"):
            raise Forbidden("Only approvers can approve a destructive deploy.")
        if who.name in (self.created_by, self.confirmed_by):
            raise Forbidden("You asked for this deploy; another person must approve it.")
        with transaction.atomic():
            if not Preview.objects.filter(pk=self.pk, confirmed_at__isnull=False, approved_at__isnull=True).update(
                    approved_by=who.name, approved_at=timezone.now()):
                raise Conflict("This deploy is not waiting for approval (not confirmed yet, or already approved).")
            self.refresh_from_db()
            job = self._submit(request)
            record("deploy.approved", request=request, target=self.target_namespace,
                   details=self.details(job=job.pk, plan=self._audit_plan()))
        self.refresh_from_db()
        return job

    def _audit_plan(self) -> list:
        """The confirmed plan as the audit trail keeps it (names and actions)."""
        return [{"kind": i["kind"], "name": i["name"], "namespace": i["namespace"], "action": i["action"],
                 "resource_version": i.get("resource_version")} for i in self.items]
