"""Restore request pages and API: list, new request from a catalog backup,
the request's page (plan, sign-offs, live job), approve / reject / cancel /
discard the kept pre-restore database.  Rules live in the model methods and
hcapadmin.restores.workflow; these views raise their errors and the
decorators answer with the status of each class (docs/conventions.md).  The
list's query string goes through ``RestoreFiltersForm``, API bodies through
``api_endpoint(..., body=<model>)``."""

from __future__ import annotations


from django.contrib import messages
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Case, IntegerField, Value, When
from django.http import Http404, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST
from pydantic import ValidationError

from hcapadmin.accounts.decorators import api_endpoint, permission_required, record_denied, validation_message
from hcapadmin.audit.models import record
from hcapadmin.core.api import error_page, json_error
from hcapadmin.jobs.lifecycle import default_target, submit
from hcapadmin.restores import schemas, workflow
from hcapadmin.restores.forms import ConfirmForm, DecisionForm, NewRequestForm, RestoreFiltersForm
from hcapadmin.restores.models import (
    APPROVED, PENDING, RUNNING, STATUSES, SUCCEEDED, Conflict, RestoreRequest)
from ops.errors import Forbidden, Invalid, NotFound, OpsError

PAGE_SIZE = 25
API_PAGE_SIZE = 50


def _get(pk) -> RestoreRequest:
    try:
        req = RestoreRequest.objects.select_related("job").get(pk=pk)
    except RestoreRequest.DoesNotExist:
        raise Http404("no such restore request") from None
    return workflow.refresh(req)


def _ordered():
    """Pending first, then approved and running, then the rest; newest first within each."""
    rank = Case(When(status=PENDING, then=Value(0)), When(status__in=(APPROVED, RUNNING), then=Value(1)),
                default=Value(2), output_field=IntegerField())
    return RestoreRequest.objects.annotate(rank=rank).order_by("rank", "-created_at", "-id")


# --- pages -------------------------------------------------------------------------------
@never_cache
@permission_required("view")
def restore_list(request):
    workflow.expire_due()
    form = RestoreFiltersForm(request.GET)
    if not form.is_valid():
        return error_page(request, 400, form.message())
    page = Paginator(form.queryset(_ordered()), PAGE_SIZE).get_page(form.page_number)
    return render(request, "restores/list.html", {
        "title": "Restores", "page": page, "statuses": STATUSES, "status": form.cleaned_data["status"],
        "may_operate": request.principal.has_perm("operate"),
    })


def _catalog_item(name):
    from hcapadmin.backups import inventory as backups

    return backups.find(name)


@never_cache
@require_http_methods(["GET", "POST"])
@permission_required("operate")
def restore_new(request):
    source = request.POST if request.method == "POST" else request.GET
    item = _catalog_item(source.get("backup", ""))
    context = {"title": f"Request a restore of {item.entry.name}", "item": item}
    if request.method == "GET":
        form = NewRequestForm(initial={"backup": item.entry.name, "target": item.entry.database,
                                       "mode": "online"})
        return render(request, "restores/new.html", {**context, "form": form})
    form = NewRequestForm(request.POST)
    if not form.is_valid():
        return render(request, "restores/new.html", {**context, "form": form}, status=400)
    data = form.cleaned_data
    try:
        req = workflow.create_request(request=request, backup=data["backup"], target=data["target"],
                                      mode=data["mode"], reason=data["reason"], ticket=data["ticket"],
                                      acknowledge_unverified=data["acknowledge_unverified"])
    except Invalid as exc:
        # Back to the form with the reason beside the fields (the form keeps what was typed).
        form.add_error(None, str(exc))
        return render(request, "restores/new.html", {**context, "form": form}, status=400)
    messages.success(request, f"Restore request #{req.pk} is waiting for approval.")
    return HttpResponseRedirect(reverse("restore_detail", args=[req.pk]))


def _detail_context(request, req: RestoreRequest) -> dict:
    from hcapadmin.jobs.views import _detail_context as job_context

    principal = request.principal
    decided = {d.approver for d in req.decisions.all()}
    context = {
        "title": f"Restore request #{req.pk}", "req": req, "steps": workflow.steps_with_status(req),
        "mode_statement": workflow.mode_statement(req.mode),
        "estimate": workflow.estimate(req.backup_size, req.mode),
        "target_state": workflow.target_state(req.target),
        "decisions": list(req.decisions.all()),
        "may_decide": (req.status == PENDING and principal.has_perm("approve")
                       and principal.name != req.requested_by and principal.name not in decided),
        "own_request": principal.name == req.requested_by,
        "may_cancel_request": (req.status in (PENDING, APPROVED) and (req.job_id is None or req.job.status == "queued")
                       and (principal.name == req.requested_by or principal.has_perm("operate"))),
        "may_discard": (req.status == SUCCEEDED and req.previous_database and not req.previous_discarded
                        and principal.has_perm("operate")),
        "backup_item": _current_backup(req),
        "report": workflow.report_of(req.job) if req.job_id else None,
    }
    if req.job_id:
        context.update({k: v for k, v in job_context(request, req.job).items() if k != "title"})
    return context


def _current_backup(req):
    """The backup as the catalog shows it now (None if gone or unreadable)."""
    try:
        return _catalog_item(req.backup_name)
    except OpsError:
        return None


@never_cache
@permission_required("view")
def restore_detail(request, pk: int):
    req = _get(pk)
    return render(request, "restores/detail.html", _detail_context(request, req))


def _back_to(req: RestoreRequest):
    return HttpResponseRedirect(reverse("restore_detail", args=[req.pk]))


@require_POST
@permission_required("approve")
def restore_approve(request, pk: int):
    req = _get(pk)
    form = DecisionForm(request.POST)
    if not form.is_valid():
        raise Invalid("The comment is too long or not valid text.")
    if form.cleaned_data["confirm"] != req.target:
        raise Invalid(f"Type the target database name ({req.target}) to confirm.")
    comment = workflow.validate_text(form.cleaned_data["comment"], "comment", required=False,
                                     limit=workflow.COMMENT_MAX)
    job = req.approve(request=request, comment=comment)
    if job is not None:
        messages.success(request, f"Approved. The restore is queued as job #{job.pk}.")
    else:
        messages.success(request, "Approved. More approvals are needed before it runs.")
    return _back_to(req)


@require_POST
@permission_required("approve")
def restore_reject(request, pk: int):
    req = _get(pk)
    form = DecisionForm(request.POST)
    if not form.is_valid():
        raise Invalid("The comment is too long or not valid text.")
    comment = workflow.validate_text(form.cleaned_data["comment"], "comment", required=True,
                                     limit=workflow.COMMENT_MAX)
    req.reject(request=request, comment=comment)
    messages.success(request, "Rejected.")
    return _back_to(req)


def _check_may_cancel(request, req: RestoreRequest) -> None:
    """Only the requester or someone with ``operate`` cancels (a refusal is audited)."""
    if request.principal.name != req.requested_by and not request.principal.has_perm("operate"):
        record_denied(request, "operate")
        raise Forbidden("Only the requester or an admin can cancel a restore request.")


@require_POST
@permission_required("view")
def restore_cancel(request, pk: int):
    req = _get(pk)
    _check_may_cancel(request, req)
    form = ConfirmForm(request.POST)
    if not form.is_valid() or form.cleaned_data["confirm"] != "yes":
        raise Invalid("Confirm the cancellation (confirm=yes).")
    comment = workflow.validate_text(form.cleaned_data["comment"], "comment", required=False,
                                     limit=workflow.COMMENT_MAX)
    req.cancel(request=request, comment=comment)
    messages.success(request, f"Restore request #{req.pk} was cancelled.")
    return _back_to(req)


def discard_previous(request, req: RestoreRequest, confirm):
    """Submit the job that drops ``req``'s kept pre-restore database; returns the job."""
    if req.status != SUCCEEDED or not req.previous_database:
        raise Conflict("Only a succeeded restore that kept a pre-restore database has one to discard.")
    if req.previous_discarded:
        raise Conflict(f"{req.previous_database} was already discarded.")
    if confirm != req.previous_database:
        raise Invalid(f"Type the pre-restore database name ({req.previous_database}) to confirm.")
    with transaction.atomic():
        job, _created = submit("restore.discard_previous", {"request": req.pk, "database": req.previous_database},
                               request=request, target=default_target())
        RestoreRequest.objects.filter(pk=req.pk).update(discard_job=job)
        record("restore.discard_requested", request=request, target=req.target,
               details=req.details(database=req.previous_database, job=job.pk))
    return job


@require_POST
@permission_required("operate")
def restore_discard(request, pk: int):
    req = _get(pk)
    form = ConfirmForm(request.POST)
    if not form.is_valid():
        raise Invalid("Type the pre-restore database name to confirm.")
    job = discard_previous(request, req, form.cleaned_data["confirm"])
    return HttpResponseRedirect(reverse("job_detail", args=[job.pk]))


# --- API -------------------------------------------------------------------------------------
def _api_get(pk) -> RestoreRequest:
    try:
        req = RestoreRequest.objects.select_related("job").get(pk=pk)
    except RestoreRequest.DoesNotExist:
        raise NotFound("no such restore request") from None
    return workflow.refresh(req)


@never_cache
@api_endpoint({"GET": "view", "POST": "operate"}, methods=("GET", "POST"), body=schemas.CreateBody)
def api_restores(request, body: schemas.CreateBody | None = None):
    """GET: requests, pending first (``?status=``, ``?page=``).  POST
    (operate): open a request -> 201 with the request."""
    if request.method == "POST":
        req = workflow.create_request(request=request, **body.model_dump())
        return JsonResponse(workflow.as_api(req), status=201)
    workflow.expire_due()
    form = RestoreFiltersForm(request.GET)
    if not form.is_valid():
        return json_error(form.message(), 400)
    rows = form.queryset(_ordered().select_related("job").prefetch_related("decisions"))
    page = Paginator(rows, API_PAGE_SIZE).get_page(form.page_number)
    rate = workflow.restore_rate()
    return JsonResponse({"items": [workflow.as_api(r, rate) for r in page], "page": page.number,
                         "pages": page.paginator.num_pages, "count": page.paginator.count})


@never_cache
@api_endpoint("view", methods=("GET",))
def api_restore(request, pk: int):
    return JsonResponse(workflow.as_api(_api_get(pk)))


@api_endpoint("approve", methods=("POST",), body=schemas.CommentBody)
def api_restore_approve(request, pk: int, body: schemas.CommentBody):
    req = _api_get(pk)
    comment = workflow.validate_text(body.comment, "comment", required=False, limit=workflow.COMMENT_MAX)
    req.approve(request=request, comment=comment)
    return JsonResponse(workflow.as_api(req))


@api_endpoint("approve", methods=("POST",), body=schemas.CommentBody)
def api_restore_reject(request, pk: int, body: schemas.CommentBody):
    req = _api_get(pk)
    comment = workflow.validate_text(body.comment, "comment", required=True, limit=workflow.COMMENT_MAX)
    req.reject(request=request, comment=comment)
    return JsonResponse(workflow.as_api(req))


@api_endpoint("view", methods=("POST",))
def api_restore_cancel(request, pk: int):
    """The requester or an admin: who may is checked (403) before the body
    (which ``api_endpoint`` has read as ``request.json``) is validated."""
    req = _api_get(pk)
    _check_may_cancel(request, req)
    try:
        body = schemas.CommentBody.model_validate(request.json)
    except ValidationError as exc:
        raise Invalid(validation_message(exc, schemas.CommentBody)) from None
    comment = workflow.validate_text(body.comment, "comment", required=False, limit=workflow.COMMENT_MAX)
    req.cancel(request=request, comment=comment)
    return JsonResponse(workflow.as_api(req))


@api_endpoint("operate", methods=("POST",), body=schemas.DiscardBody)
def api_restore_discard(request, pk: int, body: schemas.DiscardBody):
    """{"confirm": "<pre-restore database name>"} -> 202 {"job": id}."""
    req = _api_get(pk)
    job = discard_previous(request, req, body.confirm)
    return JsonResponse({"job": job.pk, "status": job.status, "database": req.previous_database}, status=202)
