"""OpenShift token sessions, Bearer and Basic authentication, lockout.

The user's token is kept only in the server-side session, encrypted with
Fernet under a key derived (HKDF-SHA256) from HCAPADMIN_TOKEN_KEY or, when
unset, SECRET_KEY.  It is used only against HCAPADMIN_OPENSHIFT_API_URL with
HCAPADMIN_OPENSHIFT_CA_FILE.  Bearer review results are cached under an HMAC
of the token (never the token itself).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.cache import cache

from hcapadmin.accounts.openshift import (
    ApiRefused,
    ApiUnavailable,
    Identity,
    OpenShiftAuth,
    ReviewError,
    TokenRejected,
)
from hcapadmin.accounts.principal import Principal, roles_for_groups


SESSION_PRINCIPAL = "hcap_principal"
SESSION_TOKEN = "hcap_token"
SESSION_CHECKED = "hcap_checked_at"
SESSION_LAST_SEEN = "hcap_last_seen"
SESSION_NOTICE = "hcap_notice"


# --- configuration -----------------------------------------------------------------
def token_login_enabled() -> bool:
    return bool(getattr(settings, "OPENSHIFT_API_URL", None))


def client() -> OpenShiftAuth:
    return OpenShiftAuth(settings.OPENSHIFT_API_URL, settings.OPENSHIFT_CA_FILE,
                         timeout=float(getattr(settings, "OPENSHIFT_AUTH_TIMEOUT", 10)))


# --- token encryption ----------------------------------------------------------------
@lru_cache(maxsize=4)
def _fernet(secret: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"hcapadmin-token-v1",
               info=b"openshift token in session").derive(secret.encode("utf-8"))
    return Fernet(base64.urlsafe_b64encode(key))


def _secret() -> str:
    return getattr(settings, "TOKEN_KEY", None) or settings.SECRET_KEY


def encrypt_token(token: str) -> str:
    return _fernet(_secret()).encrypt(token.encode("ascii")).decode("ascii")


def decrypt_token(blob: str) -> str | None:
    try:
        return _fernet(_secret()).decrypt(blob.encode("ascii")).decode("ascii")
    except (InvalidToken, ValueError, AttributeError):
        return None


def token_fingerprint(token: str) -> str:
    """HMAC of the token: a cache key that does not reveal it."""
    return hmac.new(_secret().encode("utf-8"), token.encode("ascii", "replace"), hashlib.sha256).hexdigest()


# --- roles -----------------------------------------------------------------------------
class NoRole(Exception):
    def __init__(self, identity: Identity):
        super().__init__(identity.name)
        self.identity = identity


def roles_for_token(api: OpenShiftAuth, token: str, identity: Identity) -> frozenset[str]:
    """Roles from groups; with HCAPADMIN_ROLE_ACCESS_REVIEW each candidate role
    must also pass its SelfSubjectAccessReviews in the namespace."""
    roles = set(roles_for_groups(identity.groups))
    if roles and getattr(settings, "ROLE_ACCESS_REVIEW", False):
        namespace = settings.OPENSHIFT_NAMESPACE
        checks = getattr(settings, "ROLE_ACCESS_CHECKS", {})
        answers: dict[tuple, bool] = {}
        for role in sorted(roles):
            for check in checks.get(role, ()):
                key = tuple(sorted(check.items()))
                if key not in answers:
                    answers[key] = api.can(token, namespace=namespace, **check)
                if not answers[key]:
                    roles.discard(role)
                    break
    return frozenset(roles)


def review_principal(token: str) -> Principal:
    """Identity and roles for a token.  Raises ReviewError subclasses, or
    NoRole when the user holds no portal role."""
    api = client()
    identity = api.review(token)
    roles = roles_for_token(api, token, identity)
    if not roles:
        raise NoRole(identity)
    return Principal(name=identity.name, groups=identity.groups, roles=roles, source="openshift")


def principal_to_dict(p: Principal) -> dict:
    return {"name": p.name, "groups": list(p.groups), "roles": sorted(p.roles), "source": p.source}


def principal_from_dict(d: dict) -> Principal:
    return Principal(name=d["name"], groups=tuple(d.get("groups") or ()), roles=frozenset(d.get("roles") or ()),
                     source=d.get("source", "openshift"))


# --- sessions ----------------------------------------------------------------------------
def start_token_session(request, principal: Principal, token: str) -> None:
    from django.contrib import auth

    if getattr(request, "user", None) is not None and request.user.is_authenticated:
        auth.logout(request)
    request.session.cycle_key()  # no session fixation
    request.session[SESSION_PRINCIPAL] = principal_to_dict(principal)
    request.session[SESSION_TOKEN] = encrypt_token(token)
    request.session[SESSION_CHECKED] = time.time()
    request.session[SESSION_LAST_SEEN] = time.time()


# --- Bearer ------------------------------------------------------------------------------
def bearer_principal(token: str) -> tuple[Principal | None, str | None, int]:
    """(principal, error message, status) for an API request's Bearer token,
    with a short cache of the review keyed by the token's HMAC."""
    if not token_login_enabled():
        return None, "token authentication is not configured", 401
    from hcapadmin.accounts.openshift import MAX_TOKEN, TOKEN_RE

    if len(token) > MAX_TOKEN or not token.isascii() or not TOKEN_RE.match(token):
        return None, "malformed bearer token", 401
    key = "hcapadmin:bearer:" + token_fingerprint(token)
    cached = cache.get(key)
    if cached is None:
        try:
            principal = review_principal(token)
            cached = {"principal": principal_to_dict(principal)}
        except TokenRejected:
            cached = {"error": "token rejected by OpenShift (wrong, expired or revoked)", "status": 401}
        except NoRole as exc:
            cached = {"principal": {"name": exc.identity.name, "groups": list(exc.identity.groups), "roles": [],
                                    "source": "openshift"}}
        except ApiRefused:
            return None, "OpenShift refused to review the token", 503
        except ApiUnavailable:
            return None, "OpenShift API unavailable; cannot check the token", 503
        except ReviewError:
            return None, "OpenShift could not review the token", 503
        cache.set(key, cached, getattr(settings, "BEARER_CACHE_SECONDS", 30))
    if "error" in cached:
        return None, cached["error"], cached["status"]
    return principal_from_dict(cached["principal"]), None, 200


# --- Basic (local accounts) ------------------------------------------------------------
def parse_basic(value: str) -> tuple[str, str] | None:
    try:
        raw = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    username, sep, password = raw.partition(":")
    if not sep or not username or len(username) > 150 or len(password) > 1024:
        return None
    return username, password


# --- axes glue ------------------------------------------------------------------------------
# Failed logins are counted by django-axes under an "account" name.  OpenShift
# tokens carry no name before they are reviewed, so a failed token login and a
# rejected Bearer token are counted under these two names instead.  Both hold
# a ":", which Django's username validator refuses and which HTTP Basic cannot
# carry in a user name, so no local account can share their counters.
TOKEN_FORM_ACCOUNT = ":openshift-token-login"
BEARER_ACCOUNT = ":openshift-bearer-token"
TOKEN_ACCOUNTS = (TOKEN_FORM_ACCOUNT, BEARER_ACCOUNT)


def axes_lockout_parameters(request_or_attempt, credentials=None):
    """What a failure counts against (AXES_LOCKOUT_PARAMETERS).

    A named account: per (client address, account) and per account, so
    guessing one account's password locks that account only; never per
    address alone, because behind OpenShift's router many users share one
    address and one person could otherwise lock everybody out.
    A token login or Bearer token: per (client address, that token counter)
    only: bad tokens slow down the address that sends them, for that kind of
    login only, and never lock a local account or another address.
    """
    if credentials:
        username = credentials.get("username")
    elif hasattr(request_or_attempt, "META"):
        username = request_or_attempt.POST.get("username") if request_or_attempt.method == "POST" else None
    else:
        username = getattr(request_or_attempt, "username", None)
    if not username or username in TOKEN_ACCOUNTS:
        return [["ip_address", "username"]]
    return [["ip_address", "username"], ["username"]]


def is_locked_out(request, username: str | None) -> bool:
    """Whether ``username`` (a local account name, or one of TOKEN_ACCOUNTS)
    is locked for this request's client."""
    from axes.handlers.proxy import AxesProxyHandler

    return not AxesProxyHandler.is_allowed(request, {"username": username})


def register_failure(request, username: str | None) -> bool:
    """Count a failed login with axes; True when the client/account is now locked."""
    from django.contrib.auth.signals import user_login_failed

    user_login_failed.send(sender=__name__, credentials={"username": username}, request=request)
    return bool(getattr(request, "axes_locked_out", False)) or is_locked_out(request, username)
