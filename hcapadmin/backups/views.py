"""Backup catalog page, manual backup and verify forms, and the backup API.

Input comes through ``hcapadmin.backups.forms``; ``ops.errors`` raised here
(a bad or unknown backup name, the catalog or the queue down) become their
status in the decorators.  On the pages, a catalog or queue that cannot be
reached sends the operator back to the catalog with the reason instead."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from hcapadmin.accounts.decorators import api_endpoint, permission_required
from hcapadmin.backups import services
from hcapadmin.backups.charts import size_chart
from hcapadmin.backups.forms import ManualBackupBody, ManualBackupForm, VerifyBackupBody, VerifyBackupForm
from hcapadmin.core.api import error_page, explained, form_error, partial
from hcapadmin.jobs.services import default_target, submit
from ops.errors import Timeout, Unavailable

CATALOG_DOWN = "the backup catalog cannot be read"


@never_cache
@permission_required("view")
def backup_list(request):
    items, error = partial(services.catalog)  # the page still renders (with the reason) when the catalog is down
    items = items or []
    databases = services.per_database(items)
    charts = [(name, size_chart(db["history"])) for name, db in databases.items()]
    return render(request, "backups/list.html", {
        "title": "Backups", "items": items, "error": error, "warnings": services.warnings(items),
        "databases": databases, "charts": charts,
        "may_operate": request.principal.has_perm("operate"),
    })


def _start_from_page(request, kind: str, params_of, already: str):
    """Find what to act on and queue the job, then show the job.  ``params_of()``
    gives the job parameters (it may read the catalog).  A catalog or queue
    that cannot be reached goes back to the catalog with the reason; bad
    input and unknown names propagate to the decorator (400/404)."""
    try:
        job, created = submit(kind, params_of(), request=request, target=default_target())
    except (Unavailable, Timeout) as exc:
        messages.error(request, str(exc))
        return HttpResponseRedirect(reverse("backups_list"))
    if not created:
        messages.info(request, already.format(job=job))
    return HttpResponseRedirect(reverse("job_detail", args=[job.pk]))


@require_POST
@permission_required("operate")
def backup_run(request):
    form = ManualBackupForm(request.POST)
    if not form.is_valid():
        return error_page(request, 400, form.errors["confirm"][0])
    return _start_from_page(request, "backup.manual", dict,
                            "A manual backup is already {job.status} (job #{job.pk}); showing it.")


@require_POST
@permission_required("operate")
def backup_verify(request):
    form = VerifyBackupForm(request.POST)
    if not form.is_valid():
        return error_page(request, 400, form_error(form))

    def params():
        with explained("The catalog cannot be read"):
            return {"name": services.find(form.cleaned_data["name"]).entry.name}

    return _start_from_page(request, "backup.verify", params,
                            "This backup is already being verified (job #{job.pk}).")


def _accepted(job, created) -> JsonResponse:
    return JsonResponse({"job": job.pk, "created": created, "status": job.status}, status=202)


@never_cache
@api_endpoint({"GET": "view", "POST": "operate"}, methods=("GET", "POST"), body=ManualBackupBody)
def api_backups(request, body: ManualBackupBody | None = None):
    """GET: the catalog.  POST (operate): start a manual backup -> 202 {"job": id}."""
    if request.method == "POST":
        return _accepted(*submit("backup.manual", {}, request=request, target=default_target()))
    with explained(CATALOG_DOWN):
        items = services.catalog()
    return JsonResponse({"items": [i.as_api() for i in items], "warnings": services.warnings(items)})


@api_endpoint("operate", methods=("POST",), body=VerifyBackupBody)
def api_backup_verify(request, body: VerifyBackupBody):
    """POST {"name": "<backup name>"} -> 202 {"job": id}."""
    with explained(CATALOG_DOWN):
        item = services.find(body.name)
    return _accepted(*submit("backup.verify", {"name": item.entry.name}, request=request, target=default_target()))
