"""Sets ``request.principal`` (a Principal or None) and ``request.auth_via``.

Sources, in order:
- ``Authorization: Bearer <OpenShift token>``: reviewed against the API (short
  cache keyed by the token's HMAC); CSRF does not apply (no ambient cookie).
- ``Authorization: Basic`` (only with HCAPADMIN_LOCAL_ACCOUNTS): a local
  account, through django-axes lockout; CSRF does not apply (the portal never
  sends a Basic challenge, so browsers hold no such credentials).
- The session: an OpenShift token login, or a local account.

Session rules: idle longer than HCAPADMIN_SESSION_IDLE_SECONDS ends the
session; token sessions are re-reviewed before state-changing requests and
exports (EXPORT_VIEWS; at most every HCAPADMIN_ROLE_RECHECK_SECONDS) and every
few minutes otherwise, and those requests are refused (503) while OpenShift
cannot confirm the roles.  Idleness and a 401 from the API end the session;
both are audited as session.expired.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.shortcuts import render
from django.urls import reverse

from hcapadmin.accounts import auth as authn
from hcapadmin.accounts.openshift import ReviewError, TokenRejected
from hcapadmin.accounts.principal import Principal, roles_for_groups
from hcapadmin.core.api import is_api_path, json_error

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
SAFE_RECHECK_SECONDS = 300
# Reads that export data in bulk (view names, as in the apps' urls.py): a
# token session's roles are re-checked before them like before a
# state-changing request.  tests/test_login.py checks every URL named
# "*export*" is listed here.
EXPORT_VIEWS = frozenset({"audit_export_csv", "audit_export_json", "logs-export"})
UNCONFIRMED_CHANGE = "Your roles could not be confirmed with OpenShift just now; nothing was changed. Try again."
UNCONFIRMED_EXPORT = ("Exports need your roles confirmed with OpenShift, which cannot be reached just now; "
                      "nothing was exported. Try again later.")
LAST_SEEN_RESOLUTION = 10  # seconds: avoid a session write on every request


def principal_from_local_user(user) -> Principal | None:
    if not settings.LOCAL_ACCOUNTS or not user.is_authenticated or not user.is_active:
        return None
    groups = tuple(sorted(user.groups.values_list("name", flat=True)))
    return Principal(name=user.get_username(), groups=groups, roles=roles_for_groups(groups), source="local")


def _is_api(request) -> bool:
    return is_api_path(request.path)


class PrincipalMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.principal = None
        request.auth_via = None
        request.auth_error = None
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, credentials = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            request._dont_enforce_csrf_checks = True
            if authn.token_login_enabled() and authn.is_locked_out(request, authn.BEARER_ACCOUNT):
                from hcapadmin.audit.models import record

                record("login.lockout", request=request, actor="anonymous", outcome="denied",
                       details={"method": "bearer"})
                return json_error("too many failed attempts; try again later", 429)
            principal, error, status = authn.bearer_principal(credentials.strip())
            if principal is None and status == 503:
                return json_error(error, 503) if _is_api(request) else _unavailable(request, error)
            if principal is None and authn.token_login_enabled():
                self._bearer_failed(request, error)
            request.principal, request.auth_via = principal, "bearer"
            request.auth_error = error
        elif scheme == "basic" and settings.LOCAL_ACCOUNTS:
            request._dont_enforce_csrf_checks = True
            request.principal = self._basic(request, credentials)
            request.auth_via = "basic"
        else:
            response = self._session(request)
            if response is not None:
                return response
        return self.get_response(request)

    def _bearer_failed(self, request, error: str) -> None:
        from hcapadmin.audit.models import record

        record("login.failure", request=request, actor="anonymous", outcome="failure",
               details={"method": "bearer", "reason": error})
        if authn.register_failure(request, authn.BEARER_ACCOUNT):
            record("login.lockout", request=request, actor="anonymous", outcome="denied",
                   details={"method": "bearer"})

    # -- Basic -------------------------------------------------------------------------------
    def _basic(self, request, credentials: str):
        from django.contrib import auth

        from hcapadmin.audit.models import record

        parsed = authn.parse_basic(credentials)
        if parsed is None:
            request.auth_error = "malformed Basic credentials"
            return None
        username, password = parsed
        user = auth.authenticate(request, username=username, password=password)
        if user is not None:
            return principal_from_local_user(user)
        locked = bool(getattr(request, "axes_locked_out", False))
        record("login.lockout" if locked else "login.failure", request=request, actor=username, target=username,
               outcome="denied" if locked else "failure", details={"method": "basic"})
        request.auth_error = "too many failed attempts; try later" if locked else "wrong username or password"
        return None

    # -- session --------------------------------------------------------------------------------
    def _session(self, request):
        session = request.session
        data = session.get(authn.SESSION_PRINCIPAL)
        local = None if data else principal_from_local_user(request.user)
        if data is None and local is None:
            return None
        now = time.time()
        last_seen = session.get(authn.SESSION_LAST_SEEN)
        name = data["name"] if data else local.name
        groups = data.get("groups", []) if data else list(local.groups)
        if last_seen is not None and now - float(last_seen) > settings.SESSION_IDLE_SECONDS:
            self._expire(request, name, groups, "idle")
            return None
        if last_seen is None or now - float(last_seen) >= LAST_SEEN_RESOLUTION:
            session[authn.SESSION_LAST_SEEN] = now
        if data is None:
            request.principal, request.auth_via = local, "session"
            return None
        principal = authn.principal_from_dict(data)
        unsafe = request.method not in SAFE_METHODS and request.path not in (reverse("logout"), reverse("login"))
        return self._review_if_due(request, principal, strict=unsafe, refused=UNCONFIRMED_CHANGE)

    def process_view(self, request, view_func, view_args, view_kwargs):
        """Exports are reads that hand out data in bulk: a token session's
        roles are re-checked before them as before a state-changing request,
        and while OpenShift cannot confirm them the export is refused."""
        match = getattr(request, "resolver_match", None)
        principal = request.principal
        if (match is None or match.view_name not in EXPORT_VIEWS or request.auth_via != "session"
                or principal is None or principal.source != "openshift"):
            return None
        return self._review_if_due(request, principal, strict=True, refused=UNCONFIRMED_EXPORT)

    def _review_if_due(self, request, principal: Principal, *, strict: bool, refused: str):
        """Review a token session's roles with OpenShift when the last review
        is too old (HCAPADMIN_ROLE_RECHECK_SECONDS when ``strict``, else
        SAFE_RECHECK_SECONDS), then set request.principal.  Returns a 503
        response with ``refused`` when a strict review cannot be made, or None
        (request.principal is None when the session ended)."""
        session = request.session
        request.principal, request.auth_via = None, None
        name, groups = principal.name, list(principal.groups)
        now = time.time()
        age = now - float(session.get(authn.SESSION_CHECKED) or 0)
        recheck = settings.ROLE_RECHECK_SECONDS
        if (strict and age >= recheck) or age >= max(SAFE_RECHECK_SECONDS, recheck):
            token = authn.decrypt_token(session.get(authn.SESSION_TOKEN) or "")
            if token is None or not authn.token_login_enabled():
                self._expire(request, name, groups, "token_unreadable")
                return None
            try:
                fresh = authn.review_principal(token)
            except TokenRejected:
                self._expire(request, name, groups, "token_rejected")
                return None
            except authn.NoRole as exc:
                fresh = Principal(name=exc.identity.name, groups=exc.identity.groups, roles=frozenset(),
                                  source="openshift")
            except ReviewError:
                if strict:  # fail closed: roles cannot be confirmed
                    return json_error(refused, 503) if _is_api(request) else _unavailable(request, refused)
                fresh = principal  # a plain read may use the roles from the last review
            if fresh.name != principal.name:
                self._expire(request, name, groups, "identity_changed")
                return None
            if fresh is not principal:
                session[authn.SESSION_PRINCIPAL] = authn.principal_to_dict(fresh)
                session[authn.SESSION_CHECKED] = now
                principal = fresh
        request.principal, request.auth_via = principal, "session"
        return None

    def _expire(self, request, name: str, groups, reason: str) -> None:
        from django.contrib import auth

        from hcapadmin.audit.models import record

        record("session.expired", request=request, actor=name, actor_groups=list(groups), target=name,
               outcome="success", details={"reason": reason})
        auth.logout(request)  # flushes the session (and the encrypted token with it)
        request.session[authn.SESSION_NOTICE] = {
            "idle": "Your session ended after a period of inactivity. Please log in again.",
            "token_rejected": "OpenShift no longer accepts your token (expired or revoked). Please log in again.",
        }.get(reason, "Your session ended. Please log in again.")


def _unavailable(request, message: str):
    return render(request, "accounts/unavailable.html", {"title": "OpenShift unavailable", "message": message},
                  status=503)
