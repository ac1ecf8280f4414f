"""Backup catalog page, manual backup and verify forms, and the backup API."""

from __future__ import annotations

import json

from django.contrib import messages
from django.http import HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from hcapadmin.accounts.decorators import record_denied, api_endpoint, permission_required
from hcapadmin.backups import services
from hcapadmin.backups.charts import size_chart
from hcapadmin.core.api import json_error
from hcapadmin.jobs.services import QueueUnavailable, submit
from ops.errors import Invalid, NotFound, OpsError
from ops.logbackups import MONGO, parse_engine


def _bad(request, reason: str, status: int = 400):
    template = "404.html" if status == 404 else "400.html"
    return render(request, template, {"reason": reason, "title": "Bad request"}, status=status)


@never_cache
@permission_required("view")
def backup_list(request):
    error = None
    items = []
    log_errors: list[str] = []
    try:
        items = services.catalog(log_errors)
    except OpsError as exc:
        error = str(exc)
    databases = services.per_database(items)
    charts = [(name, size_chart(db["history"])) for name, db in databases.items()]
    return render(request, "backups/list.html", {
        "title": "Backups", "items": items, "error": error, "warnings": services.warnings(items),
        "databases": databases, "charts": charts,
        "may_operate": request.principal.has_perm("operate"),
        "log_backup_errors": log_errors, "log_backup_refusal": services.log_backup_refusal(),
    })


def _submit_or_error(request, kind: str, params: dict, target: str):
    try:
        return submit(kind, params, request=request, target=target), None
    except QueueUnavailable as exc:
        return (None, False), str(exc)


@require_POST
@permission_required("operate")
def backup_run(request):
    if request.POST.get("confirm") != "yes":
        return _bad(request, "Confirm the manual backup (confirm=yes).")
    try:
        engine = parse_engine(request.POST.get("engine"))
    except Invalid as exc:
        return _bad(request, str(exc))
    if engine == MONGO and services.log_backup_refusal():
        return _bad(request, services.log_backup_refusal(), 409)
    params = {"engine": MONGO} if engine == MONGO else {}
    (job, created), error = _submit_or_error(request, "backup.manual", params, services.target_for(engine))
    if error:
        messages.error(request, error)
        return HttpResponseRedirect("/backups/")
    if not created:
        messages.info(request, f"A manual backup is already {job.status} (job #{job.pk}); showing it.")
    return HttpResponseRedirect(f"/jobs/{job.pk}/")


@require_POST
@permission_required("operate")
def backup_verify(request):
    try:
        engine = parse_engine(request.POST.get("engine"), default=None)
        item = services.find(request.POST.get("name"), engine=engine)
    except Invalid as exc:
        return _bad(request, str(exc))
    except NotFound as exc:
        return _bad(request, str(exc), 404)
    except OpsError as exc:
        messages.error(request, f"The catalog cannot be read: {exc}")
        return HttpResponseRedirect("/backups/")
    (job, created), error = _submit_or_error(request, "backup.verify", _verify_params(item),
                                             services.target_for(item.entry.engine))
    if error:
        messages.error(request, error)
        return HttpResponseRedirect("/backups/")
    if not created:
        messages.info(request, f"This backup is already being verified (job #{job.pk}).")
    return HttpResponseRedirect(f"/jobs/{job.pk}/")


def _verify_params(item) -> dict:
    """A verify job's params: the name, and the engine for a log backup (a
    PostgreSQL verify keeps its params as before, so it dedupes with older jobs)."""
    return {"name": item.entry.name, "engine": MONGO} if item.entry.engine == MONGO else {"name": item.entry.name}


def _json_body(request) -> dict:
    if not request.body:
        return {}
    if not request.content_type.startswith("application/json"):
        if request.content_type in ("multipart/form-data", "application/x-www-form-urlencoded") and not request.POST:
            return {}  # an empty form post
        raise Invalid("send a JSON body (Content-Type: application/json)")
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        raise Invalid("the body is not valid JSON") from None
    except RecursionError:  # nested deeper than the parser's recursion limit
        raise Invalid("the body is nested too deeply") from None
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object")
    return body


@never_cache
@api_endpoint("view", methods=("GET", "POST"))
def api_backups(request):
    """GET: the catalog.  POST (operate): start a manual backup -> 202 {"job": id}."""
    if request.method == "POST":
        if not request.principal.has_perm("operate"):
            record_denied(request, "operate")
            return json_error("permission denied", 403)
        try:
            body = _json_body(request)
        except Invalid as exc:
            return json_error(str(exc), 400)
        unknown = set(body) - {"engine"}
        if unknown:
            fields = ", ".join(sorted(str(k) for k in unknown))[:200]
            return json_error(f"unknown field(s): {fields}; a manual backup takes only an optional engine "
                              '("postgres" or "mongo")', 400)
        try:
            engine = parse_engine(body.get("engine"))
        except Invalid as exc:
            return json_error(str(exc), 400)
        if engine == MONGO and services.log_backup_refusal():
            return json_error(services.log_backup_refusal(), 409)
        params = {"engine": MONGO} if engine == MONGO else {}
        (job, created), error = _submit_or_error(request, "backup.manual", params, services.target_for(engine))
        if error:
            return json_error(error, 503)
        return JsonResponse({"job": job.pk, "created": created, "status": job.status}, status=202)
    log_errors: list[str] = []
    try:
        items = services.catalog(log_errors)
    except OpsError as exc:
        return json_error(f"the backup catalog cannot be read: {exc}", 503)
    data = {"items": [i.as_api() for i in items], "warnings": services.warnings(items)}
    if log_errors:
        data["errors"] = log_errors
    return JsonResponse(data)


@api_endpoint("operate", methods=("POST",))
def api_backup_verify(request):
    """POST {"name": "<backup name>"[, "engine": "postgres"|"mongo"]} -> 202 {"job": id}."""
    try:
        body = _json_body(request)
        if "name" not in body or not set(body) <= {"name", "engine"}:
            raise Invalid('expected {"name": "<backup name from GET /api/v1/backups>"} and optionally '
                          '"engine" ("postgres" or "mongo")')
        item = services.find(body["name"], engine=parse_engine(body.get("engine"), default=None))
    except Invalid as exc:
        return json_error(str(exc), 400)
    except NotFound as exc:
        return json_error(str(exc), 404)
    except OpsError as exc:
        return json_error(f"the backup catalog cannot be read: {exc}", 503)
    (job, created), error = _submit_or_error(request, "backup.verify", _verify_params(item),
                                             services.target_for(item.entry.engine))
    if error:
        return json_error(error, 503)
    return JsonResponse({"job": job.pk, "created": created, "status": job.status}, status=202)
