"""Form fields shared by the forms that read query strings and posted forms.

``TextField``: an exact-match text filter or name, stripped, at most
``max_length`` characters and without NUL (PostgreSQL text cannot hold NUL,
so a NUL would fail the query instead of matching nothing).
``AsciiIntField``: an integer written with ASCII digits only (``int()`` and
``str.isdigit`` also accept other scripts' digits such as "²" or "٣") in a
closed range.
"""

from __future__ import annotations

import re

from django import forms
from django.core.exceptions import ValidationError

_ASCII_INT = re.compile(r"[0-9]{1,20}")


class TextField(forms.CharField):
    def __init__(self, *, max_length: int, required: bool = False, **kwargs):
        super().__init__(required=required, max_length=max_length, **kwargs)

    def clean(self, value):
        value = self.to_python(value)
        if value in self.empty_values:
            if self.required:
                raise ValidationError("required", code="required")
            return ""
        if len(value) > self.max_length:
            raise ValidationError(f"at most {self.max_length} characters", code="max_length")
        if "\x00" in value:
            raise ValidationError("contains a NUL character", code="null_characters_not_allowed")
        return value


class AsciiIntField(forms.Field):
    def __init__(self, *, min_value: int, max_value: int, message: str, **kwargs):
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)
        self.min_value, self.max_value, self.message = min_value, max_value, message

    def clean(self, value):
        value = (value or "").strip()
        if not value:
            if self.required:
                raise ValidationError(self.message, code="required")
            return None
        number = int(value) if _ASCII_INT.fullmatch(value) else None
        if number is None or not self.min_value <= number <= self.max_value:
            raise ValidationError(self.message, code="invalid")
        return number
