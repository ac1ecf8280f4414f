"""The forms that read the migrations pages' input: the list's query string
(``status``, ``page``; the API reads ``status`` only and refuses unknown
parameters) and the "Apply pending migrations" post (``confirm=apply`` and
the ``expected`` names the page showed)."""

from __future__ import annotations

import re

from django import forms
from django.core.exceptions import ValidationError

from hcapadmin.core.api import form_error
from ops.migrations.ordering import valid_name
from ops.migrations.report import APPLIED, MISSING, OUT_OF_ORDER, PENDING

STATUS_KEYS = (APPLIED, PENDING, MISSING, OUT_OF_ORDER)
STATUS_FILTERS = ("all",) + STATUS_KEYS
MAX_EXPECTED = 10_000
_DIGITS = re.compile(r"[0-9]{1,20}")  # ASCII only: str.isdigit would also take "²"


class MigrationFiltersForm(forms.Form):
    """``api=False`` (the page): ``status`` one of ``STATUS_FILTERS``
    (default ``all``) and ``page`` a number (its range is the paginator's,
    checked by the page).  ``api=True``: ``status`` one of ``STATUS_KEYS``
    (default: every status) and nothing else."""

    status = forms.CharField(label="status", required=False, strip=False)
    page = forms.CharField(label="page", required=False, strip=False)

    def __init__(self, data, *, api: bool = False):
        super().__init__(data)
        self.api = api
        if api:
            del self.fields["page"]

    def clean(self):
        data = super().clean()
        # One sentence each, without a field label: "status must be one of ...".
        if self.api:
            unknown = sorted(set(self.data) - {"status"})
            if unknown:
                raise ValidationError(f"unknown parameter(s): {', '.join(unknown)}"[:300], code="unknown")
        allowed = STATUS_KEYS if self.api else STATUS_FILTERS
        status = self.data.get("status")
        if status is not None and status not in allowed:
            raise ValidationError("status must be one of " + ", ".join(allowed), code="invalid_choice")
        data["status"] = status if status is not None else (None if self.api else "all")
        if not self.api:
            page = self.data.get("page")
            if page is not None and not _DIGITS.fullmatch(page):
                raise ValidationError("page must be a number", code="invalid")
            data["page"] = int(page) if page is not None else None
        return data

    def message(self) -> str:
        return form_error(self)


class ApplyForm(forms.Form):
    """``confirm=apply`` and the pending migrations' names as shown."""

    confirm = forms.CharField(label="confirm", required=False, strip=False)

    def clean(self):
        data = super().clean()
        if data.get("confirm") != "apply":
            raise ValidationError("confirm=apply is required", code="required")
        expected = self.data.getlist("expected") if hasattr(self.data, "getlist") else []
        if not expected or len(expected) > MAX_EXPECTED or not all(valid_name(n) for n in expected):
            raise ValidationError("expected: the names of the pending migrations shown on the page", code="invalid")
        data["expected"] = expected
        return data

    def message(self) -> str:
        return form_error(self)
