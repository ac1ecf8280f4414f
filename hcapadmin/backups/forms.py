"""What the backup pages' forms and the backup API's JSON bodies accept.

Pages post Django forms; the API's bodies are pydantic models (unknown
fields refused).  Whether a name is a well-formed backup name, and whether
the catalog holds it, is ``hcapadmin.backups.inventory.find``'s business."""

from __future__ import annotations

from typing import ClassVar, Literal

from django import forms
from pydantic import BaseModel, ConfigDict

from hcapadmin.core.forms import TextField


ENGINE_CHOICES = [("", "(not given)"), ("postgres", "postgres"), ("mongo", "mongo")]
ENGINE_ERRORS = {"invalid_choice": "engine must be one of postgres, mongo"}


class ManualBackupForm(forms.Form):
    confirm = forms.ChoiceField(choices=[("yes", "yes")], label="confirm",
                                error_messages={"required": "Confirm the manual backup (confirm=yes).",
                                                "invalid_choice": "Confirm the manual backup (confirm=yes)."})
    engine = forms.ChoiceField(choices=ENGINE_CHOICES, required=False, error_messages=ENGINE_ERRORS)


class VerifyBackupForm(forms.Form):
    name = TextField(label="name", max_length=300, required=True, strip=False)  # find() judges the exact name
    engine = forms.ChoiceField(choices=ENGINE_CHOICES, required=False, error_messages=ENGINE_ERRORS)


class ManualBackupBody(BaseModel):
    """POST /api/v1/backups: an empty object (or no body), or the engine."""

    model_config = ConfigDict(extra="forbid", strict=True)
    usage: ClassVar[str] = 'a manual backup takes only an optional "engine" ("postgres" or "mongo")'

    engine: Literal["postgres", "mongo", ""] | None = None


class VerifyBackupBody(BaseModel):
    """POST /api/v1/backups/verify."""

    model_config = ConfigDict(extra="forbid", strict=True)
    usage: ClassVar[str] = ('expected {"name": "<backup name from GET /api/v1/backups>"} and optionally '
                            '"engine" ("postgres" or "mongo")')

    name: str
    engine: Literal["postgres", "mongo", ""] | None = None
