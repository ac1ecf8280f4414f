"""The POST behind "Apply pending migrations": checked up front, then queued.

Routed directly (migrations_ui/urls.py); the post goes through
``migrations_ui.forms.ApplyForm`` (a bad one is a 400 page); a refusal shows
the migrations page again, built by the list view's own context builder."""

from __future__ import annotations

from django.contrib import messages
from django.db import transaction
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from hcapadmin.accounts.decorators import permission_required
from hcapadmin.audit.models import record
from hcapadmin.core.api import error_page
from hcapadmin.jobs.lifecycle import QueueUnavailable, default_target, submit
from migrations_ui import state
from migrations_ui.forms import ApplyForm
from migrations_ui.jobs import KIND, check_ready
from migrations_ui.views import _page_context
from ops.errors import Invalid


@require_POST
@permission_required("operate")
def handle(request):
    form = ApplyForm(request.POST)
    if not form.is_valid():
        return error_page(request, 400, form.message())
    expected = form.cleaned_data["expected"]
    target = default_target()  # the same lock name as every other job on the managed database
    report = state.report()
    try:
        check_ready(report, expected)
    except Invalid as exc:  # refused: audited, and the page again with the reason (409)
        with transaction.atomic():
            record("migrations.apply", request=request, target=target, outcome="denied",
                   details={"reason": str(exc)[:500], "refusal": report.refusal})
        messages.error(request, f"Not applied: {exc}")
        return _refused(request, report)
    try:
        with transaction.atomic():
            job, created = submit(KIND, {"expected": expected}, request=request, target=target)
            record("migrations.apply", request=request, target=target, outcome="success",
                   details={"job": job.pk, "created": created, "migrations": expected[:100], "count": len(expected)})
    except QueueUnavailable as exc:  # back to the page, which says the queue is down
        messages.error(request, str(exc))
        return redirect("migrations")
    if not created:
        messages.info(request, f"The same apply job is already queued or running (job #{job.pk}).")
    return redirect(job_url(job))


def _refused(request, report):
    """The migrations page again, with the reason, as 409 Conflict."""
    return render(request, "migrations_ui/list.html", _page_context(request, report), status=409)


def job_url(job) -> str:
    return reverse("job_detail", args=[job.pk])
