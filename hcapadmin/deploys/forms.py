"""Forms of the deploy pages: the parameter form (built from the templates'
parameters: prefilled with their values, required ones marked, generated
ones never shown) and the confirmation."""

from __future__ import annotations

from django import forms

from hcapadmin.core.forms import TextField
from ops.deploys import PARAM_VALUE_MAX


class ParametersForm(forms.Form):
    def __init__(self, params, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params = params
        for p in params:
            if p.generated or p.fixed:
                continue
            self.fields[p.name] = TextField(max_length=PARAM_VALUE_MAX, label=p.display_name or p.name,
                                            help_text=p.description, initial=p.value)
            self.fields[p.name].widget.attrs.update({"aria-required": "true"} if p.required else {})
            self.fields[p.name].required_mark = p.required

    def values(self) -> dict:
        return {name: value for name, value in self.cleaned_data.items() if value != ""}


class ConfirmForm(forms.Form):
    confirm = TextField(max_length=63, label="Type the namespace name to confirm")
