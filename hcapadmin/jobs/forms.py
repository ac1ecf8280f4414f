"""The one form that reads the job list's filters (``kind``, ``status``,
``user``; ``page`` is the paginator's).  Exact-match text, stripped, bounded,
without NUL; a status from the model's list."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from hcapadmin.core.forms import TextField
from hcapadmin.jobs.models import STATUSES


class JobFiltersForm(forms.Form):
    kind = TextField(label="Kind", max_length=100)
    status = forms.CharField(label="Status", required=False)
    user = TextField(label="User", max_length=255)

    def clean_status(self):
        status = self.cleaned_data["status"]
        if status and status not in STATUSES:
            raise ValidationError(f"unknown status {status[:40]!r}; choose one of {', '.join(STATUSES)}.",
                                  code="invalid_choice")
        return status

    def queryset(self, jobs):
        """``jobs`` narrowed by the filters of a valid form."""
        data = self.cleaned_data
        if data["kind"]:
            jobs = jobs.filter(kind=data["kind"])
        if data["status"]:
            jobs = jobs.filter(status=data["status"])
        if data["user"]:
            jobs = jobs.filter(requested_by=data["user"])
        return jobs
