"""Permission checks for pages and for the JSON API.

``@permission_required("operate")`` on a page view: anonymous users go to the
login page; signed-in users without the permission get a 403 page.  A refused
state-changing request (anything but GET/HEAD/OPTIONS) writes an audit event.

``@api_endpoint("view", methods=("GET",))`` on an API view: errors are JSON
``{"error": "..."}`` with 401/403/405.  A state-changing API request
authenticated by the session cookie must pass the CSRF check (Bearer and
Basic requests carry no ambient authority and are exempt).
"""

from __future__ import annotations

from functools import wraps
from urllib.parse import urlencode

from django.http import HttpResponseRedirect
from django.shortcuts import render

from hcapadmin.accounts.principal import PERMISSIONS
from hcapadmin.core.api import json_error

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def record_denied(request, permission: str) -> None:
    if request.method not in SAFE_METHODS:
        from hcapadmin.audit.models import record

        record(
            "permission.denied",
            request=request,
            target=request.path,
            outcome="denied",
            details={"permission": permission, "method": request.method},
        )


def _csrf_refusal(request):
    from django.middleware.csrf import CsrfViewMiddleware

    def _checked(req):  # pragma: no cover - never called
        return None

    response = CsrfViewMiddleware(_checked).process_view(request, _checked, (), {})
    if response is not None:
        return json_error("CSRF check failed: send the X-CSRFToken header with a session, or use a Bearer token", 403)
    return None


def permission_required(permission: str):
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            principal = getattr(request, "principal", None)
            if principal is None:
                return HttpResponseRedirect("/login/?" + urlencode({"next": request.get_full_path()}))
            if not principal.has_perm(permission):
                record_denied(request, permission)
                return render(
                    request,
                    "403.html",
                    {"reason": f"Your roles ({', '.join(principal.role_list) or 'none'}) do not allow this."},
                    status=403,
                )
            return view(request, *args, **kwargs)

        wrapper.permission = permission
        return wrapper

    return decorator


def api_endpoint(permission: str, methods: tuple[str, ...] = ("GET",)):
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if request.method not in methods:
                response = json_error(f"method {request.method} not allowed", 405)
                response["Allow"] = ", ".join(methods)
                return response
            principal = getattr(request, "principal", None)
            if principal is None:
                return json_error(getattr(request, "auth_error", None) or "authentication required", 401)
            if request.method not in SAFE_METHODS and getattr(request, "auth_via", None) == "session":
                # A browser session carries ambient authority: CSRF applies even
                # if the view was marked csrf_exempt.
                refused = _csrf_refusal(request)
                if refused is not None:
                    return refused
            if not principal.has_perm(permission):
                record_denied(request, permission)
                return json_error("permission denied", 403)
            return view(request, *args, **kwargs)

        wrapper.permission = permission
        wrapper.api = True
        return wrapper

    return decorator
