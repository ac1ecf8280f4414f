"""The one form that reads the audit filters, used by the review page, its
exports and GET /api/v1/audit.

``AuditFiltersForm(request.GET, paging=...)``: ``paging="page"`` also reads the
``before`` cursor (the page has a fixed page size), ``"api"`` reads ``before``
and ``limit``, ``None`` (the exports) reads neither.  Meaning of the values:
exact-match text (stripped, bounded, no NUL), an outcome from the model's
list, ``since``/``until`` as dates or date-times (ASCII digits only, calendar
edges clamped, ``until=DATE`` includes that whole day; see
``hcapadmin.audit.query.when``), ``before`` a signed cursor from a previous
page, ``limit`` 1-500 in ASCII digits.  ``filters()`` gives the typed value.
"""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from hcapadmin.audit import query
from hcapadmin.audit.models import OUTCOMES
from hcapadmin.core.api import form_error
from hcapadmin.core.forms import AsciiIntField, TextField


class WhenField(forms.Field):
    """``since`` (start of a range) or ``until`` (end: a date includes its
    whole day) as an aware UTC datetime, or None when empty."""

    def __init__(self, *, end: bool, **kwargs):
        super().__init__(required=False, **kwargs)
        self.end = end

    def clean(self, value):
        value = (value or "").strip()
        if not value:
            return None
        try:
            return query.when(value, self.end)
        except query.FilterError as exc:
            raise ValidationError(str(exc), code="invalid") from None


class CursorField(forms.Field):
    def __init__(self, **kwargs):
        super().__init__(required=False, **kwargs)

    def clean(self, value):
        value = (value or "").strip()
        if not value:
            return None
        try:
            return query.read_cursor(value)
        except query.FilterError as exc:
            raise ValidationError(str(exc), code="invalid") from None


class AuditFiltersForm(forms.Form):
    actor = TextField(label="actor", max_length=query.TEXT_FILTERS["actor"])
    action = TextField(label="action", max_length=query.TEXT_FILTERS["action"])
    target = TextField(label="target", max_length=query.TEXT_FILTERS["target"])
    outcome = forms.CharField(label="outcome", required=False)
    since = WhenField(label="since", end=False)
    until = WhenField(label="until", end=True)
    before = CursorField(label="before")
    limit = AsciiIntField(label="limit", min_value=1, max_value=query.MAX_LIMIT,
                          message=f"expected an integer from 1 to {query.MAX_LIMIT}")

    PAGING = {"page": ("before",), "api": ("before", "limit"), None: ()}

    def __init__(self, data, *, paging: str | None = None):
        super().__init__(data)
        for name in ("before", "limit"):
            if name not in self.PAGING[paging]:
                del self.fields[name]

    def clean_outcome(self):
        outcome = self.cleaned_data["outcome"]
        if outcome and outcome not in OUTCOMES:
            raise ValidationError(f"expected one of {', '.join(OUTCOMES)}", code="invalid_choice")
        return outcome

    def clean(self):
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since and until and since >= until:
            self.add_error("since", "must be before until")
        return data

    def message(self) -> str:
        return form_error(self)

    def filters(self) -> query.Filters:
        """The typed filters of a valid form; ``raw`` keeps the given text of
        each filter that was set, for links and the export's audit event."""
        data = self.cleaned_data
        f = query.Filters(actor=data["actor"], action=data["action"], target=data["target"],
                          outcome=data["outcome"], since=data["since"], until=data["until"])
        for name in ("actor", "action", "target", "outcome", "since", "until"):
            if data[name]:
                f.raw[name] = data[name] if isinstance(data[name], str) else self.data.get(name, "").strip()
        return f

    @property
    def cursor(self) -> int | None:
        return self.cleaned_data.get("before")

    @property
    def page_size(self) -> int:
        return self.cleaned_data.get("limit") or query.PAGE_SIZE
