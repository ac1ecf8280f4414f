from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache

from hcapadmin.accounts.decorators import permission_required
from hcapadmin.core.api import is_api_path, partial
from hcapadmin.core.health import public_summary, readiness


@never_cache
def healthz(request):
    return HttpResponse("ok\n", content_type="text/plain")


@never_cache
def readyz(request):
    """Anyone may ask (the probes are anonymous): ok/down per component, no
    error text; the details go to the log and to admins on the dashboard."""
    result = readiness()
    return JsonResponse(public_summary(result), status=200 if result["status"] != "down" else 503)


@never_cache
@permission_required("view")
def dashboard(request):
    """Backups per database (red when stale), last verification, running jobs,
    Patroni members and leader.  Each part fails on its own with a message."""
    from django.conf import settings

    from hcapadmin.backups import inventory as backups
    from hcapadmin.core.platform import get_driver
    from hcapadmin.jobs.models import ACTIVE, Job
    from hcapadmin.jobs.lifecycle import sweep
    from hcapadmin.restores.workflow import dashboard_context as restores_dashboard

    context = {"title": "Dashboard", "stale_hours": settings.BACKUP_STALE_HOURS}
    context["log_backup_errors"] = []  # the log database's backups failing to list leaves the rest shown
    items, backup_error = partial(lambda: backups.catalog(context["log_backup_errors"]))
    if backup_error is not None:
        context["backup_error"] = backup_error
    else:
        context["databases"] = backups.per_database(items)
        context["in_progress"] = [i for i in items if i.entry.in_progress]
        context["backup_warnings"] = backups.warnings(items)
    try:
        sweep()
    except Exception:  # the dashboard must render even if the sweep fails
        pass
    context["running_jobs"] = list(Job.objects.filter(status__in=ACTIVE).defer("log").order_by("id")[:20])
    context["recent_jobs"] = list(Job.objects.exclude(status__in=ACTIVE).defer("log").order_by("-id")[:5])
    cluster, cluster_error = partial(lambda: get_driver().cluster_state())
    if cluster_error is not None:
        context["cluster_error"] = cluster_error
    else:
        context["cluster"] = cluster
    context.update(restores_dashboard(request.principal))
    if request.principal.has_perm("operate"):  # admins: the readiness details /readyz does not show
        context["health"] = readiness()
    return render(request, "core/dashboard.html", context)


def _wants_json(request) -> bool:
    return is_api_path(request.path)


def bad_request(request, exception=None):
    if _wants_json(request):
        return JsonResponse({"error": "bad request"}, status=400)
    return render(request, "400.html", status=400)


def forbidden(request, exception=None):
    if _wants_json(request):
        return JsonResponse({"error": "forbidden"}, status=403)
    return render(request, "403.html", {"reason": str(exception or "")[:200]}, status=403)


def not_found(request, exception=None):
    if _wants_json(request):
        return JsonResponse({"error": "not found"}, status=404)
    return render(request, "404.html", status=404)


def server_error(request):
    if _wants_json(request):
        return JsonResponse({"error": "internal error"}, status=500)
    return render(request, "500.html", status=500)
