"""Job pages and the job API.  Logic lives in hcapadmin.jobs.lifecycle; the
list's query string is read by hcapadmin.jobs.forms.JobFiltersForm."""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from hcapadmin.accounts.decorators import api_endpoint, permission_required
from hcapadmin.core.api import form_errors
from hcapadmin.jobs.forms import JobFiltersForm
from hcapadmin.jobs.models import STATUSES, Job
from hcapadmin.jobs.registry import all_kinds
from hcapadmin.jobs.lifecycle import cancel, resume, roll_back, sweep
from ops.errors import NotFound

PAGE_SIZE = 25
LOG_TAIL_CHARS = 200_000


def _get_job(pk) -> Job:
    job = Job.objects.filter(pk=pk).first()
    if job is None:
        raise Http404("no such job")
    return job


def _sweep_quietly() -> None:
    try:
        sweep()
    except Exception:  # a page view must not fail because the sweep did
        pass


@never_cache
@permission_required("view")
def job_list(request):
    _sweep_quietly()
    kinds = all_kinds()
    form = JobFiltersForm(request.GET)
    if not form.is_valid():
        return render(request, "jobs/list.html", {"title": "Jobs", "errors": form_errors(form), "kinds": kinds,
                                                  "statuses": STATUSES, "filters": {}}, status=400)
    jobs = form.queryset(Job.objects.all().order_by("-id"))
    page = Paginator(jobs.defer("log"), PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "jobs/list.html", {
        "title": "Jobs", "page": page, "kinds": kinds, "statuses": STATUSES,
        "filters": {name: form.cleaned_data[name] for name in ("kind", "status", "user")},
        "query": query.urlencode(),
    })


def _detail_context(request, job: Job) -> dict:
    log = job.log or ""
    truncated = len(log) > LOG_TAIL_CHARS
    return {
        "title": f"Job #{job.pk}", "job": job, "log": log[-LOG_TAIL_CHARS:], "log_truncated": truncated,
        "may_cancel": job.cancellable and job.is_active and request.principal.has_perm("operate"),
        # an abandoned runbook job: an admin resumes it or rolls it back
        "may_reopen": job.status == "abandoned" and job.runbook is not None and request.principal.has_perm("operate"),
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
    outcome = cancel(job, request=request)  # Invalid (not cancellable) -> 400 page
    if outcome == "cancelled":
        messages.success(request, f"Job #{job.pk} was cancelled before it started.")
    else:
        messages.warning(request, f"Job #{job.pk} was asked to stop; it stops at its next check.")
    return HttpResponseRedirect(reverse("job_detail", args=[job.pk]))


def _reopen(request, pk: int, action, done: str):
    job = _get_job(pk)
    outcome = action(job, request=request)  # Invalid (not an abandoned runbook job) -> 400 page
    if outcome == "already queued":
        messages.info(request, f"Job #{job.pk} is already queued to be {done}.")
    else:
        messages.success(request, f"Job #{job.pk} is queued to be {done}; the page follows it.")
    return HttpResponseRedirect(reverse("job_detail", args=[job.pk]))


@require_POST
@permission_required("operate")
def job_resume(request, pk: int):
    """Resume an abandoned runbook job from the step its worker died in."""
    return _reopen(request, pk, resume, "resumed")


@require_POST
@permission_required("operate")
def job_rollback(request, pk: int):
    """Undo, in reverse order, the steps an abandoned runbook job ran."""
    return _reopen(request, pk, roll_back, "rolled back")


@never_cache
@api_endpoint("view", methods=("GET",))
def api_job(request, pk: int):
    _sweep_quietly()
    job = Job.objects.filter(pk=pk).first()
    if job is None:
        raise NotFound("no such job")
    return JsonResponse(job.as_api())

