"""The one form that reads the log browser's query string, shared by the log
page, its fragments (histogram, follow), the export and GET /api/v1/logs.

``LogFilterForm(request.GET, default_range=..., tz_default=..., default_limit=...)``
reads ``source``, the filters (``range``, ``since``, ``until``, ``tz``,
``level``, ``label``, ``host``, ``q``, ``meta.<key>``), ``limit``, the
``before``/``after`` cursors and ``follow``.  What each value means is
checked by ``ops.logs.make_filter`` (plain Python, typed values); a value
given twice with different text is refused.  Cursors are
``ops.logs.cursor_value`` signed with ``django.core.signing`` salted
``hcapadmin.logs.cursor``, so a cursor is only accepted here and a client
cannot make one up.  Valid: ``source``, ``collection``, ``filter`` (a
``LogFilter``), ``limit``, ``before``/``after`` (``Position`` or None),
``follow``.
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.core import signing
from django.core.exceptions import ValidationError

from hcapadmin.core.api import form_error
from hcapadmin.logbrowser import mongo
from ops import logs

CURSOR_SALT = "hcapadmin.logs.cursor"
MAX_CURSOR = 300


def sign_cursor(position: logs.Position) -> str:
    return signing.Signer(salt=CURSOR_SALT).sign(logs.cursor_value(position))


def read_cursor(token: str) -> logs.Position:
    """The position in a cursor ``sign_cursor`` made; ``LogFilterError`` otherwise."""
    if not isinstance(token, str) or len(token) > MAX_CURSOR:
        raise logs.LogFilterError(logs.CURSOR_EXPECTED)
    try:
        value = signing.Signer(salt=CURSOR_SALT).unsign(token)
    except signing.BadSignature:
        raise logs.LogFilterError(logs.CURSOR_EXPECTED) from None
    return logs.position_from(value)


class LogFilterForm(forms.Form):
    def __init__(self, data, *, default_range: str, tz_default: str, default_limit: int):
        super().__init__(data)
        self.default_range, self.tz_default, self.default_limit = default_range, tz_default, default_limit

    def _one(self, name: str) -> str:
        """The value of ``name`` (empty when absent); the same name twice with
        different values is refused."""
        values = self.data.getlist(name)
        if len(set(values)) > 1:
            raise logs.LogFilterError(f"{name}: give it once")
        return values[0] if values else ""

    def clean(self):
        data = super().clean()
        try:
            data["source"], data["collection"] = mongo.collection(self._one("source") or None)
            meta = [(name[len("meta."):], self._one(name)) for name in self.data if name.startswith("meta.")]
            data["filter"] = logs.make_filter(
                since=self._one("since"), until=self._one("until"), range=self._one("range"), tz=self._one("tz"),
                levels=self.data.getlist("level"), label=self._one("label"), host=self._one("host"),
                text=self._one("q"), meta=meta, tz_default=self.tz_default, default_range=self.default_range,
                meta_keys=settings.LOG_META_KEYS)
            data["limit"] = logs.parse_limit(self.data.get("limit"), default=self.default_limit)
            before, after = self.data.get("before"), self.data.get("after")
            if before and after:
                raise logs.LogFilterError("give before or after, not both")
            data["before"] = read_cursor(before) if before else None
            data["after"] = read_cursor(after) if after else None
        except logs.LogFilterError as exc:
            # The message names its parameter already ("tz: unknown time zone ...").
            raise ValidationError(str(exc), code="invalid") from None
        data["follow"] = self.data.get("follow") == "1"
        return data

    def message(self) -> str:
        return form_error(self)


class LogEntryForm(forms.Form):
    """The entry page's query string: ``source`` (a configured one, default
    the first) and ``tz`` (the zone times are shown in).  Valid: ``source``,
    ``collection``, ``tz`` (a ``ZoneInfo``)."""

    def __init__(self, data, *, tz_default: str):
        super().__init__(data)
        self.tz_default = tz_default

    def clean(self):
        data = super().clean()
        try:
            data["source"], data["collection"] = mongo.collection(self.data.get("source") or None)
            data["tz"] = logs.parse_timezone(self.data.get("tz"), self.tz_default)
        except logs.LogFilterError as exc:
            raise ValidationError(str(exc), code="invalid") from None
        return data

    def message(self) -> str:
        return form_error(self)
