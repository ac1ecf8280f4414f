from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache

from hcapadmin.accounts.decorators import permission_required
from hcapadmin.core.health import readiness


@never_cache
def healthz(request):
    return HttpResponse("ok\n", content_type="text/plain")


@never_cache
def readyz(request):
    result = readiness()
    return JsonResponse(result, status=200 if result["status"] != "down" else 503)


@permission_required("view")
def dashboard(request):
    return render(request, "core/dashboard.html", {"title": "Dashboard"})


@permission_required("view")
def restores(request):
    return render(request, "core/restores.html", {"title": "Restores"})


def _wants_json(request) -> bool:
    return request.path.startswith("/api/")


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
