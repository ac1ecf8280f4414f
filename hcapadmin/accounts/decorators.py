"""Permission checks, input parsing and error mapping for pages and for the
JSON API: every view goes through one of the two decorators here.

``@permission_required("operate")`` on a page view: anonymous users go to the
login page; signed-in users without the permission get a 403 page.  A refused
state-changing request (anything but GET/HEAD/OPTIONS) writes an audit event.
An ``ops.errors`` exception escaping the view becomes the matching error page
(400/403/404/409/503/504, see ``hcapadmin.core.api``).

``@api_endpoint("view", methods=("GET",))`` on an API view: errors are JSON
``{"error": "..."}`` with 401/403/405, and an ``ops.errors`` exception
escaping the view becomes its status.  The permission may differ per method
(``{"GET": "view", "POST": "operate"}``).  A state-changing API request
authenticated by the session cookie must pass the CSRF check (Bearer and
Basic requests carry no ambient authority and are exempt).  The body of a
state-changing request is read once, after the permission check: it must be
a JSON object (an empty body counts as ``{}``), at most ``MAX_JSON_BYTES``
long and ``MAX_JSON_DEPTH`` deep; the view finds it as ``request.json``.
Given ``body=<pydantic model>``, the object is also validated against the
model and the view receives the instance as its ``body`` argument.
"""

from __future__ import annotations

import json
from functools import wraps
from urllib.parse import urlencode

from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from pydantic import BaseModel, ValidationError

from hcapadmin.accounts.principal import PERMISSIONS
from hcapadmin.core.api import json_error, ops_error_response
from ops.errors import Invalid, OpsError

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
MAX_JSON_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 32


class BodyTooLarge(Invalid):
    """The request body is longer than the endpoint accepts (-> 413)."""


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


def _check_permission(permission: str) -> None:
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")


def permission_required(permission: str):
    _check_permission(permission)

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            principal = getattr(request, "principal", None)
            if principal is None:
                return HttpResponseRedirect(reverse("login") + "?" + urlencode({"next": request.get_full_path()}))
            if not principal.has_perm(permission):
                record_denied(request, permission)
                return render(
                    request,
                    "403.html",
                    {"reason": f"Your roles ({', '.join(principal.role_list) or 'none'}) do not allow this."},
                    status=403,
                )
            try:
                return view(request, *args, **kwargs)
            except OpsError as exc:
                return ops_error_response(request, exc, api=False)

        wrapper.permission = permission
        return wrapper

    return decorator


def _depth(value) -> int:
    """How deeply ``value`` nests lists and objects (a scalar is 0)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            deepest = max(deepest, level)
            continue
        deepest = max(deepest, level + 1)
        stack.extend((child, level + 1) for child in children)
    return deepest


def read_json_object(request, max_bytes: int = MAX_JSON_BYTES) -> dict:
    """The request body as a JSON object; ``Invalid`` (or ``BodyTooLarge``)
    with a message fit for the client otherwise."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > max_bytes:
        raise BodyTooLarge(f"the body is larger than {max_bytes} bytes")
    raw = request.body
    if len(raw) > max_bytes:
        raise BodyTooLarge(f"the body is larger than {max_bytes} bytes")
    if not raw:
        return {}
    if not request.content_type.startswith("application/json"):
        if request.content_type in ("multipart/form-data", "application/x-www-form-urlencoded") and not request.POST:
            return {}  # an empty form post
        raise Invalid("send a JSON body (Content-Type: application/json)")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise Invalid("the body is not valid JSON") from None
    except RecursionError:  # nested deeper than the parser's recursion limit
        raise Invalid("the body is nested too deeply") from None
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object")
    if _depth(body) > MAX_JSON_DEPTH:
        raise Invalid("the body is nested too deeply")
    return body


def validation_message(exc: ValidationError, model: type[BaseModel]) -> str:
    """A pydantic error as one line naming each field, plus the model's
    ``usage`` hint when it has one."""
    unknown = sorted(str(e["loc"][-1]) for e in exc.errors() if e["type"] == "extra_forbidden")
    parts = [f"unknown field(s): {', '.join(unknown)}"[:200]] if unknown else []
    for error in exc.errors():
        if error["type"] == "extra_forbidden":
            continue
        where = ".".join(str(part) for part in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    usage = getattr(model, "usage", "")
    return "; ".join(parts) + (f"; {usage}" if usage else "")


def api_endpoint(permission: str | dict[str, str], methods: tuple[str, ...] = ("GET",), *,
                 body: type[BaseModel] | None = None, max_body: int = MAX_JSON_BYTES):
    per_method = permission if isinstance(permission, dict) else {m: permission for m in methods}
    for name in per_method.values():
        _check_permission(name)
    if set(per_method) != set(methods):
        raise ValueError("name a permission for every method")

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
            needed = per_method[request.method]
            if not principal.has_perm(needed):
                record_denied(request, needed)
                return json_error("permission denied", 403)
            try:
                if request.method not in SAFE_METHODS:
                    request.json = read_json_object(request, max_body)
                    if body is not None:
                        try:
                            kwargs["body"] = body.model_validate(request.json)
                        except ValidationError as exc:
                            raise Invalid(validation_message(exc, body)) from None
                return view(request, *args, **kwargs)
            except BodyTooLarge as exc:
                return json_error(str(exc), 413)
            except OpsError as exc:
                return ops_error_response(request, exc, api=True)

        wrapper.permission = per_method[methods[0]]
        wrapper.permissions = per_method
        wrapper.api = True
        return wrapper

    return decorator
