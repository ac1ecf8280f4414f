"""The Job record: one row per operation run on the queue.

PostgreSQL holds the truth about a job (status, steps, log, result); RQ only
carries "run job #N" to a worker.  See docs/jobs.md.
"""

from __future__ import annotations

import hashlib
import json

from django.db import models
from django.utils import timezone

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, ABANDONED = (
    "queued", "running", "succeeded", "failed", "cancelled", "abandoned")
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, ABANDONED)
ACTIVE = (QUEUED, RUNNING)
FINISHED = (SUCCEEDED, FAILED, CANCELLED, ABANDONED)


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
    def rq_id(self) -> str:
        return f"hcapadmin-job-{self.pk}"

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
        }
