"""Job pages and the job API.  Logic lives in hcapadmin.jobs.services."""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from hcapadmin.accounts.decorators import api_endpoint, permission_required
from hcapadmin.core.api import json_error
from hcapadmin.jobs.models import STATUSES, Job
from hcapadmin.jobs.registry import all_kinds
from hcapadmin.jobs.services import cancel, sweep
from ops.errors import Invalid

PAGE_SIZE = 25
LOG_TAIL_CHARS = 200_000


def _get_job(pk) -> Job:
    try:
        return Job.objects.get(pk=pk)
    except Job.DoesNotExist:
        raise Http404("no such job") from None


def _sweep_quietly() -> None:
    try:
        sweep()
    except Exception:  # a page view must not fail because the sweep did
        pass


def _text_error(label: str, value: str, limit: int) -> str | None:
    """Why a text filter cannot be used, or None.  PostgreSQL text cannot
    hold NUL, so a NUL in a filter would fail the query instead of matching
    nothing."""
    if len(value) > limit:
        return f"{label} is too long."
    if "\x00" in value:
        return f"{label} contains a NUL character."
    return None


@never_cache
@permission_required("view")
def job_list(request):
    _sweep_quietly()
    kinds = all_kinds()
    kind = request.GET.get("kind", "").strip()
    status = request.GET.get("status", "").strip()
    user = request.GET.get("user", "").strip()
    errors = []
    jobs = Job.objects.all().order_by("-id")
    if kind:
        error = _text_error("Kind", kind, 100)
        if error:
            errors.append(error)
        else:
            jobs = jobs.filter(kind=kind)
    if status:
        if status not in STATUSES:
            errors.append(f"Unknown status {status[:40]!r}; choose one of {', '.join(STATUSES)}.")
        else:
            jobs = jobs.filter(status=status)
    if user:
        error = _text_error("User", user, 255)
        if error:
            errors.append(error)
        else:
            jobs = jobs.filter(requested_by=user)
    if errors:
        return render(request, "jobs/list.html", {"title": "Jobs", "errors": errors, "kinds": kinds,
                                                  "statuses": STATUSES, "filters": {}}, status=400)
    page = Paginator(jobs.defer("log"), PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "jobs/list.html", {
        "title": "Jobs", "page": page, "kinds": kinds, "statuses": STATUSES,
        "filters": {"kind": kind, "status": status, "user": user}, "query": query.urlencode(),
    })


def _detail_context(request, job: Job) -> dict:
    log = job.log or ""
    truncated = len(log) > LOG_TAIL_CHARS
    return {
        "title": f"Job #{job.pk}", "job": job, "log": log[-LOG_TAIL_CHARS:], "log_truncated": truncated,
        "may_cancel": job.cancellable and job.is_active and request.principal.has_perm("operate"),
    }


@never_cache
@permission_required("view")
def job_detail(request, pk: int):
    _sweep_quietly()
    job = _get_job(pk)
    return render(request, "jobs/detail.html", _detail_context(request, job))


@never_cache
@permission_required("view")
def job_live(request, pk: int):
    """The live part of the job page (htmx polls it every 2 s).  Once the job
    has finished, the fragment comes back without the polling trigger."""
    _sweep_quietly()
    job = _get_job(pk)
    return render(request, "jobs/_live.html", _detail_context(request, job))


@require_POST
@permission_required("operate")
def job_cancel(request, pk: int):
    job = _get_job(pk)
    try:
        outcome = cancel(job, request=request)
    except Invalid as exc:
        return render(request, "400.html", {"reason": str(exc)}, status=400)
    if outcome == "cancelled":
        messages.success(request, f"Job #{job.pk} was cancelled before it started.")
    else:
        messages.warning(request, f"Job #{job.pk} was asked to stop; it stops at its next check.")
    return HttpResponseRedirect(f"/jobs/{job.pk}/")


@never_cache
@api_endpoint("view", methods=("GET",))
def api_job(request, pk: int):
    _sweep_quietly()
    try:
        job = Job.objects.get(pk=pk)
    except Job.DoesNotExist:
        return json_error("no such job", 404)
    return JsonResponse(job.as_api())

