"""HTML forms of the restore pages, and the list's query string (shared by
the page and GET /api/v1/restores).  They check shapes and lengths; the
rules (target names, verified backups, who may sign off) live in
hcapadmin.restores.workflow and the model methods, shared with the API."""

from __future__ import annotations

import re

from django import forms
from django.core.exceptions import ValidationError

from hcapadmin.core.api import form_error
from hcapadmin.restores.models import STATUSES
from hcapadmin.restores.workflow import COMMENT_MAX, REASON_MAX

_DIGITS = re.compile(r"[0-9]+")  # ASCII only: int() would also read "٣"
MAX_PAGE = 10**9  # beyond every list's last page, which it then shows


class RestoreFiltersForm(forms.Form):
    """``status`` (one of the model's statuses, or empty for all) and
    ``page`` (ASCII digits; a number past the last page shows the last, as
the paginator does)."""

    status = forms.CharField(label="status", required=False)
    page = forms.CharField(label="page", required=False, max_length=100)

    def clean_status(self):
        status = self.cleaned_data["status"]
        if status and status not in STATUSES:
            raise ValidationError(f"Unknown status; choose one of {', '.join(STATUSES)}.", code="invalid_choice")
        return status

    def clean_page(self):
        page = self.cleaned_data["page"]
        if not page:
            return None
        if not _DIGITS.fullmatch(page) or int(page) < 1:
            raise ValidationError("expected a page number from 1", code="invalid")
        return min(int(page), MAX_PAGE)

    def message(self) -> str:
        return form_error(self)

    def queryset(self, rows):
        """``rows`` narrowed by the status of a valid form."""
        status = self.cleaned_data["status"]
        return rows.filter(status=status) if status else rows

    @property
    def page_number(self) -> int:
        return self.cleaned_data["page"] or 1


class NewRequestForm(forms.Form):
    backup = forms.CharField(max_length=255, widget=forms.HiddenInput)
    target = forms.CharField(max_length=63, label="Target database",
                             help_text="The database to replace, e.g. hcap. Letters, digits and underscores.")
    mode = forms.ChoiceField(choices=[("online", "Online: keep the service running until the cut-over"),
                                      ("offline", "Offline: block clients from the safety backup on")],
                             widget=forms.RadioSelect, initial="online")
    reason = forms.CharField(max_length=REASON_MAX, widget=forms.Textarea(attrs={"rows": 3}), label="Reason")
    ticket = forms.CharField(max_length=100, required=False, label="Ticket reference (optional)")
    acknowledge_unverified = forms.BooleanField(
        required=False, label="I know this backup has not passed a verification and still want it restored")


class DecisionForm(forms.Form):
    comment = forms.CharField(max_length=COMMENT_MAX, required=False, widget=forms.Textarea(attrs={"rows": 2}))
    confirm = forms.CharField(max_length=63, required=False)


class ConfirmForm(forms.Form):
    confirm = forms.CharField(max_length=63)
    comment = forms.CharField(max_length=COMMENT_MAX, required=False)
