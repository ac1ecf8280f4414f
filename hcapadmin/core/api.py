"""How every page and API endpoint reports an error, in one place.

The operations layer raises the ``ops.errors`` classes; ``status_for`` maps
each to one HTTP status (Invalid 400, Forbidden 403, NotFound 404, Conflict
409, Unavailable 503, Timeout 504; any other ``OpsError`` is 503).  API
endpoints answer ``{"error": "..."}`` (``json_error``), pages render the
matching ``<status>.html`` template with the reason (``error_page``).  The
decorators in ``hcapadmin.accounts.decorators`` catch ``OpsError`` around
every view and call these, so views raise instead of writing ``except``
ladders.  ``form_error`` turns an invalid Django form into the one message
both kinds of answer show.
"""

from __future__ import annotations

from contextlib import contextmanager

from django.http import JsonResponse
from django.shortcuts import render
from django.urls import get_script_prefix

from ops.errors import Conflict, Forbidden, Invalid, NotFound, OpsError, Timeout, Unavailable

# Most specific first: subclasses of these map to their parent's status.
STATUSES: tuple[tuple[type[OpsError], int], ...] = (
    (Invalid, 400),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (Unavailable, 503),
    (Timeout, 504),
)
TITLES = {400: "Bad request", 403: "Not allowed", 404: "Not found", 409: "Conflict", 413: "Bad request",
          503: "Unavailable", 504: "Timed out"}
ERROR_TEMPLATES = {400: "400.html", 403: "403.html", 404: "404.html", 409: "409.html", 413: "400.html",
                   503: "503.html", 504: "504.html"}


def is_api_path(path: str) -> bool:
    """Whether ``path`` is under the JSON API (``/api/`` below the script
    prefix), whose errors are JSON rather than pages."""
    return path.startswith(get_script_prefix() + "api/")


def status_for(exc: OpsError) -> int:
    for cls, status in STATUSES:
        if isinstance(exc, cls):
            return status
    return 503


def json_error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def error_page(request, status: int, reason: str = ""):
    """The error page for ``status`` with ``reason`` shown to the person."""
    template = ERROR_TEMPLATES.get(status, "400.html")
    return render(request, template, {"reason": reason, "title": TITLES.get(status, "Error")}, status=status)


def ops_error_response(request, exc: OpsError, *, api: bool):
    status = status_for(exc)
    return json_error(str(exc), status) if api else error_page(request, status, str(exc))


def form_errors(form) -> list[str]:
    """Every error of a bound, invalid form as "<label>: <message>"."""
    messages = []
    for name, errors in form.errors.items():
        label = form.fields[name].label if name in form.fields and form.fields[name].label else name
        for error in errors:
            messages.append(error if name == "__all__" else f"{label}: {error}")
    return messages


def form_error(form) -> str:
    """The errors of an invalid form as one line, for a 400."""
    return " ".join(form_errors(form))


@contextmanager
def explained(prefix: str):
    """Re-raise an ``OpsError`` of the 5xx kind (a dependency down or slow)
    from the block as the same class with ``prefix`` in front of its message
    ("the backup catalog cannot be read: ..."), so the status stays the one
    its class maps to.  Errors about the input pass through unchanged."""
    try:
        yield
    except OpsError as exc:
        if status_for(exc) < 500:
            raise
        raise type(exc)(f"{prefix}: {exc}") from exc


def partial(fn, *args, **kwargs):
    """``(fn(...), None)``, or ``(None, message)`` when it raises an
    ``OpsError``: for a part of a page that fails on its own (the page shows
    the message there and renders the rest)."""
    try:
        return fn(*args, **kwargs), None
    except OpsError as exc:
        return None, str(exc)
