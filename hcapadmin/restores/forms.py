"""HTML forms of the restore pages.  They check shapes and lengths; the
rules (target names, verified backups, who may sign off) live in
hcapadmin.restores.services and the model methods, shared with the API."""

from __future__ import annotations

from django import forms

from hcapadmin.restores.services import COMMENT_MAX, REASON_MAX


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
