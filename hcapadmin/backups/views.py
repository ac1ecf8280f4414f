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
from hcapadmin.backups import inventory
from hcapadmin.backups.charts import size_chart
from hcapadmin.backups.forms import ManualBackupBody, ManualBackupForm, VerifyBackupBody, VerifyBackupForm
from hcapadmin.core.api import error_page, explained, form_error, partial
from hcapadmin.jobs.lifecycle import submit
from ops.errors import Conflict, Timeout, Unavailable
from ops.logbackups import MONGO, parse_engine

CATALOG_DOWN = "the backup catalog cannot be read"


@never_cache
@permission_required("view")
def backup_list(request):
    log_errors: list[str] = []  # the log database's backups failing to list leaves the rest shown
    items, error = partial(lambda: inventory.catalog(log_errors))  # the page renders (with the reason) when down
    items = items or []
    databases = inventory.per_database(items)
    charts = [(name, size_chart(db["history"])) for name, db in databases.items()]
    return render(request, "backups/list.html", {
        "title": "Backups", "items": items, "error": error, "warnings": inventory.warnings(items),
        "databases": databases, "charts": charts,
        "may_operate": request.principal.has_perm("operate"),
        "log_errors": log_errors, "log_backup_refusal": inventory.log_backup_refusal(),
    })


def _engine_params(engine: str) -> dict:
    """A job's engine parameter: none for PostgreSQL (so its params stay as
    before and dedupe with older jobs), ``{"engine": "mongo"}`` for the log database."""
    return {"engine": MONGO} if engine == MONGO else {}


def _manual_params(engine: str) -> dict:
    if engine == MONGO and inventory.log_backup_refusal():
        raise Conflict(inventory.log_backup_refusal())
    return _engine_params(engine)


def _start_from_page(request, kind: str, params_of, already: str):
    """Find what to act on and queue the job, then show the job.  ``params_of()``
    gives the job parameters (it may read the catalog).  A catalog or queue
    that cannot be reached goes back to the catalog with the reason; bad
    input and unknown names propagate to the decorator (400/404)."""
    try:
        params = params_of()
        job, created = submit(kind, params, request=request, target=inventory.target_for(params.get("engine", "")))
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
        return error_page(request, 400, form_error(form))
    engine = parse_engine(form.cleaned_data["engine"])
    return _start_from_page(request, "backup.manual", lambda: _manual_params(engine),
                            "A manual backup is already {job.status} (job #{job.pk}); showing it.")


@require_POST
@permission_required("operate")
def backup_verify(request):
    form = VerifyBackupForm(request.POST)
    if not form.is_valid():
        return error_page(request, 400, form_error(form))

    def params():
        with explained("The catalog cannot be read"):
            item = inventory.find(form.cleaned_data["name"], engine=parse_engine(form.cleaned_data["engine"], default=None))
        return {"name": item.entry.name, **_engine_params(item.entry.engine)}

    return _start_from_page(request, "backup.verify", params,
                            "This backup is already being verified (job #{job.pk}).")


def _accepted(job, created) -> JsonResponse:
    return JsonResponse({"job": job.pk, "created": created, "status": job.status}, status=202)


@never_cache
@api_endpoint({"GET": "view", "POST": "operate"}, methods=("GET", "POST"), body=ManualBackupBody)
def api_backups(request, body: ManualBackupBody | None = None):
    """GET: the catalog.  POST (operate): start a manual backup -> 202 {"job": id}."""
    if request.method == "POST":
        engine = parse_engine(body.engine if body else None)
        return _accepted(*submit("backup.manual", _manual_params(engine), request=request,
                                 target=inventory.target_for(engine)))
    log_errors: list[str] = []
    with explained(CATALOG_DOWN):
        items = inventory.catalog(log_errors)
    data = {"items": [i.as_api() for i in items], "warnings": inventory.warnings(items)}
    if log_errors:
        data["errors"] = log_errors
    return JsonResponse(data)


@api_endpoint("operate", methods=("POST",), body=VerifyBackupBody)
def api_backup_verify(request, body: VerifyBackupBody):
    """POST {"name": "<backup name>"[, "engine": "postgres"|"mongo"]} -> 202 {"job": id}."""
    with explained(CATALOG_DOWN):
        item = inventory.find(body.name, engine=parse_engine(body.engine, default=None))
    return _accepted(*submit("backup.verify", {"name": item.entry.name, **_engine_params(item.entry.engine)},
                             request=request, target=inventory.target_for(item.entry.engine)))
