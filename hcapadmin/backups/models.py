from django.db import models
from django.utils import timezone


class BackupVerification(models.Model):
    """The outcome of one verification of one backup file (keyed by its name;
    the latest row for a name is its current status)."""

    backup_name = models.CharField(max_length=255, db_index=True)
    database = models.CharField(max_length=100, blank=True)
    ok = models.BooleanField()
    message = models.TextField(blank=True)
    details = models.JSONField(default=dict)
    verified_at = models.DateTimeField(default=timezone.now, db_index=True)
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-verified_at", "-id"]

    def __str__(self) -> str:
        return f"{self.backup_name}: {'passed' if self.ok else 'failed'} at {self.verified_at:%Y-%m-%d %H:%M}"
