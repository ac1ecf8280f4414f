"""Login (OpenShift token or local account) and logout.  The rules live in
hcapadmin.accounts.openshift (parsing, review) and hcapadmin.accounts.auth
(sessions, roles, lockout); this module turns their outcomes into pages and
audit events."""

from __future__ import annotations

import time

from django.conf import settings
from django.contrib import auth, messages
from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST

from hcapadmin.accounts import auth as authn
from hcapadmin.accounts.forms import LocalLoginForm
from hcapadmin.accounts.openshift import (
    ApiRefused,
    ApiUnavailable,
    LoginInputError,
    ReviewError,
    TokenRejected,
    parse_login_input,
    same_server,
    server_label,
)
from hcapadmin.audit.models import record
from hcapadmin.core.api import is_api_path, json_error

LOCKED_MESSAGE = "Too many failed attempts. Login is locked for a while; try again later."
# What each lockout covers (see hcapadmin.accounts.auth.axes_lockout_parameters).
TOKEN_LOCKED_MESSAGE = ("Too many failed attempts: token login from this address is locked for a while; "
                        "try again later.")
ACCOUNT_LOCKED_MESSAGE = "Too many failed attempts for this account: it is locked for a while; try again later."


def _safe_next(request) -> str:
    home = reverse("dashboard")
    target = request.POST.get("next") or request.GET.get("next") or home
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return target
    return home


def _page(request, *, form=None, token_error=None, status=200, locked=False):
    notice = request.session.pop(authn.SESSION_NOTICE, None) if hasattr(request, "session") else None
    if settings.LOCAL_ACCOUNTS and form is None:
        form = LocalLoginForm()
    return render(request, "accounts/login.html", {
        "title": "Log in",
        "form": form if settings.LOCAL_ACCOUNTS else None,
        "token_login": authn.token_login_enabled(),
        "api_server": server_label(settings.OPENSHIFT_API_URL) if authn.token_login_enabled() else "",
        "token_error": token_error,
        "locked": locked,
        "notice": notice,
        "next": _safe_next(request),
    }, status=status)


def _fail(request, reason: str, message: str, status: int, *, actor="anonymous", groups=(), outcome="failure",
          count=True, extra=None):
    details = {"method": "token", "reason": reason, **(extra or {})}
    record("login.failure", request=request, actor=actor, actor_groups=list(groups), target=actor,
           outcome=outcome, details=details)
    if count and authn.register_failure(request, authn.TOKEN_FORM_ACCOUNT):
        record("login.lockout", request=request, actor=actor, target=actor, outcome="denied",
               details={"method": "token"})
        return _page(request, token_error=TOKEN_LOCKED_MESSAGE, status=429, locked=True)
    return _page(request, token_error=message, status=status)


def _token_login(request):
    if not authn.token_login_enabled():
        return _page(request, token_error="OpenShift login is not configured on this portal.", status=400)
    if authn.is_locked_out(request, authn.TOKEN_FORM_ACCOUNT):
        record("login.lockout", request=request, actor="anonymous", outcome="denied", details={"method": "token"})
        return _page(request, token_error=TOKEN_LOCKED_MESSAGE, status=429, locked=True)
    raw = request.POST.get("token", "")
    try:
        parsed = parse_login_input(raw)
    except LoginInputError as exc:
        return _fail(request, "bad_input", str(exc), 400, extra={"length": len(raw)})
    configured = settings.OPENSHIFT_API_URL
    if parsed.server is not None:
        try:
            other = not same_server(parsed.server, configured)
        except LoginInputError as exc:
            return _fail(request, "bad_input", str(exc), 400, extra={"length": len(raw)})
        if other:
            return _fail(
                request, "other_server",
                f"That login command is for {server_label(parsed.server)}, but this portal only accepts tokens "
                f"for {server_label(configured)}. Nothing was sent.",
                400, extra={"server": server_label(parsed.server)})
    token = parsed.token
    try:
        principal = authn.review_principal(token)
    except TokenRejected:
        return _fail(request, "token_rejected",
                     "OpenShift did not accept that token: it is wrong, expired or revoked. "
                     "Copy a fresh login command from the web console.", 401)
    except ApiRefused:
        return _fail(request, "api_forbidden",
                     "OpenShift refused to say who this token belongs to (403 Forbidden).", 403, count=False)
    except ApiUnavailable as exc:
        return _fail(request, "api_unavailable", f"{exc} Try again later.", 503, outcome="error", count=False)
    except ReviewError as exc:
        return _fail(request, "api_error", str(exc), 502, outcome="error", count=False)
    except authn.NoRole as exc:
        identity = exc.identity
        return _fail(request, "no_role",
                     f"OpenShift knows you as {identity.name}, but none of your groups grants a role on this portal. "
                     "Ask for membership of one of the portal's groups.",
                     403, actor=identity.name, groups=identity.groups, outcome="denied", count=False,
                     extra={"groups": list(identity.groups)})
    authn.start_token_session(request, principal, token)
    record("login.success", actor=principal.name, actor_groups=list(principal.groups), request=request,
           target=principal.name, details={"method": "token", "roles": sorted(principal.roles)})
    return HttpResponseRedirect(_safe_next(request))


def _local_login(request):
    form = LocalLoginForm(request.POST)
    if not form.is_valid():
        return _page(request, form=form, status=400)
    username = form.cleaned_data["username"]
    if authn.is_locked_out(request, username):
        record("login.lockout", request=request, actor=username, target=username, outcome="denied",
               details={"method": "local"})
        form.add_error(None, ACCOUNT_LOCKED_MESSAGE)
        return _page(request, form=form, status=429, locked=True)
    user = auth.authenticate(request, username=username, password=form.cleaned_data["password"])
    if user is not None:
        if authn.SESSION_PRINCIPAL in request.session:
            request.session.flush()  # leave no OpenShift session (or its token) behind
        auth.login(request, user)
        request.session[authn.SESSION_LAST_SEEN] = time.time()
        record("login.success", request=request, actor=username, target=username, details={"method": "local"})
        return HttpResponseRedirect(_safe_next(request))
    record("login.failure", request=request, actor=username, target=username, outcome="failure",
           details={"method": "local"})
    if getattr(request, "axes_locked_out", False) or authn.is_locked_out(request, username):
        record("login.lockout", request=request, actor=username, target=username, outcome="denied",
               details={"method": "local"})
        form.add_error(None, ACCOUNT_LOCKED_MESSAGE)
        return _page(request, form=form, status=429, locked=True)
    form.add_error(None, "Wrong username or password.")
    return _page(request, form=form, status=401)


@sensitive_post_parameters("token", "password")  # hidden from error reports
@never_cache
@require_http_methods(["GET", "POST"])
def login(request):
    if request.method == "POST":
        if "token" in request.POST:
            return _token_login(request)
        if settings.LOCAL_ACCOUNTS and ("username" in request.POST or "password" in request.POST):
            return _local_login(request)
        return _page(request, token_error="Nothing to log in with: paste a token or use a local account.", status=400)
    return _page(request)


@require_POST
def logout(request):
    principal = getattr(request, "principal", None)
    if principal is not None:
        record("logout", request=request, target=principal.name, details={"method": principal.source})
    auth.logout(request)  # flushes the session, and the encrypted token with it
    messages.info(request, "You are logged out.")
    return HttpResponseRedirect(reverse("login"))


def lockout_response(request, original_response=None, credentials=None):
    """AXES_LOCKOUT_CALLABLE: our own pages already explain a lockout."""
    if original_response is not None and original_response.status_code == 429:
        return original_response
    if is_api_path(request.path):
        return json_error("too many failed attempts; try again later", 429)
    return _page(request, token_error=LOCKED_MESSAGE, status=429, locked=True)


def csrf_failure(request, reason=""):
    """CSRF_FAILURE_VIEW: JSON for the API, the 403 page otherwise."""
    if is_api_path(request.path):
        return json_error("CSRF check failed: send the X-CSRFToken header with a session, or use a Bearer token", 403)
    return render(request, "403.html", {"reason": "The form expired or came from elsewhere (CSRF check failed). "
                                                  "Reload the page and try again."}, status=403)
