"""What the backup pages' forms and the backup API's JSON bodies accept.

Pages post Django forms; the API's bodies are pydantic models (unknown
fields refused).  Whether a name is a well-formed backup name, and whether
the catalog holds it, is ``hcapadmin.backups.services.find``'s business."""

from __future__ import annotations

from typing import ClassVar

from django import forms
from pydantic import BaseModel, ConfigDict

from hcapadmin.core.forms import TextField


class ManualBackupForm(forms.Form):
    confirm = forms.ChoiceField(choices=[("yes", "yes")], label="confirm",
                                error_messages={"required": "Confirm the manual backup (confirm=yes).",
                                                "invalid_choice": "Confirm the manual backup (confirm=yes)."})


class VerifyBackupForm(forms.Form):
    name = TextField(label="name", max_length=300, required=True, strip=False)  # find() judges the exact name


class ManualBackupBody(BaseModel):
    """POST /api/v1/backups: an empty object (or no body)."""

    model_config = ConfigDict(extra="forbid")
    usage: ClassVar[str] = "a manual backup takes no parameters"


class VerifyBackupBody(BaseModel):
    """POST /api/v1/backups/verify."""

    model_config = ConfigDict(extra="forbid", strict=True)
    usage: ClassVar[str] = 'expected exactly {"name": "<backup name from GET /api/v1/backups>"}'

    name: str
