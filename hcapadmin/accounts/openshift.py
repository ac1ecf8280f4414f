"""Who a user's OpenShift token belongs to, asked of the configured API.

Plain Python (no Django): the caller passes the API URL, the CA bundle and
the token.  The token is sent only to ``api_url`` (redirects are not
followed, proxies/.netrc from the environment are ignored) and never appears
in an exception message.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

MAX_INPUT = 8192
MAX_TOKEN = 4096
# sha256~ user tokens are base64url; service-account tokens are JWTs.
TOKEN_RE = re.compile(r"^[A-Za-z0-9._~+/=-]+$")


class LoginInputError(ValueError):
    """The pasted text is not a token or an ``oc login`` command."""


class ReviewError(Exception):
    """Base: the API could not tell who the token belongs to."""

    kind = "error"


class TokenRejected(ReviewError):
    kind = "unauthorized"  # 401: bad, expired or revoked token


class ApiRefused(ReviewError):
    kind = "forbidden"  # 403


class ApiUnavailable(ReviewError):
    kind = "unavailable"  # connection refused, DNS, timeout, TLS failure


@dataclass(frozen=True)
class Identity:
    name: str
    groups: tuple[str, ...]


@dataclass(frozen=True)
class ParsedLogin:
    token: str
    server: str | None


def parse_login_input(text: str | None) -> ParsedLogin:
    """A bare token, or the web console's "Copy login command" text
    (``oc login --token=sha256~... --server=https://...``)."""
    text = (text or "").strip()
    if not text:
        raise LoginInputError("Paste your OpenShift token or the whole 'oc login' command.")
    if len(text) > MAX_INPUT:
        raise LoginInputError(f"That is too long for a token or login command ({len(text)} characters).")
    if not text.isascii():
        raise LoginInputError("That contains characters that never appear in an OpenShift token or login command.")
    server = None
    if text.startswith("oc ") or "--token" in text:
        try:
            words = shlex.split(text)
        except ValueError:
            raise LoginInputError("Could not read that login command (unbalanced quotes).") from None
        if words and words[0] == "oc":
            words = words[1:]
            if not words or words[0] != "login":
                raise LoginInputError("Only an 'oc login' command is accepted.")
            words = words[1:]
        token = None
        i = 0
        while i < len(words):
            word = words[i]
            for flag in ("--token", "--server", "-s"):
                if word == flag or word.startswith(flag + "="):
                    if word == flag:
                        if i + 1 >= len(words):
                            raise LoginInputError(f"{flag} has no value.")
                        value = words[i + 1]
                        i += 1
                    else:
                        value = word[len(flag) + 1:]
                    if flag == "--token":
                        token = value
                    else:
                        server = value
                    break
            else:
                if not word.startswith("-") and server is None and "://" in word:
                    server = word  # oc login https://api...:6443 --token=...
            i += 1
        if token is None:
            raise LoginInputError("The login command has no --token=...; copy it again from the web console.")
    else:
        token = text
        if token.lower().startswith("bearer "):
            token = token[7:].strip()
    if not token:
        raise LoginInputError("The token is empty.")
    if len(token) > MAX_TOKEN:
        raise LoginInputError("That token is too long to be an OpenShift token.")
    if not TOKEN_RE.match(token):
        raise LoginInputError("That does not look like an OpenShift token (unexpected characters).")
    if server is not None and not server:
        raise LoginInputError("--server is empty.")
    return ParsedLogin(token=token, server=server)


def normalise_server(url: str) -> str:
    """scheme://host:port, lower-cased, default port filled in."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise LoginInputError("The --server value is not a URL.") from None
    scheme = (parts.scheme or "").lower()
    host = (parts.hostname or "").lower()
    if scheme not in ("https", "http") or not host:
        raise LoginInputError("The --server value is not an https:// URL.")
    if port is None:
        port = 443 if scheme == "https" else 80
    return f"{scheme}://{host}:{port}"


def same_server(given: str, configured: str) -> bool:
    return normalise_server(given) == normalise_server(configured)


def server_label(url: str) -> str:
    """Scheme, host and port only, for messages and audit details."""
    try:
        return normalise_server(url)[:200]
    except LoginInputError:
        return "(not a URL)"


class OpenShiftAuth:
    """The review endpoints of one API server, for one token."""

    def __init__(self, api_url: str, ca_file: str | None = None, timeout: float = 10.0):
        if not api_url:
            raise ValueError("api_url is required")
        if not api_url.lower().startswith("https://"):
            raise ValueError("api_url must be an https:// URL (tokens never cross in clear text)")
        self.api_url = api_url.rstrip("/")
        self.verify = ca_file or True  # never False: TLS is always checked
        self.timeout = (min(5.0, timeout), timeout)

    def _call(self, method: str, path: str, token: str, body: dict | None = None):
        with requests.Session() as session:
            session.trust_env = False  # no .netrc auth, no proxy from the environment
            try:
                response = session.request(
                    method,
                    self.api_url + path,
                    json=body,
                    headers={"Authorization": "Bearer " + token, "Accept": "application/json"},
                    verify=self.verify,
                    timeout=self.timeout,
                    allow_redirects=False,
                )
            except requests.exceptions.SSLError:
                raise ApiUnavailable("The OpenShift API's TLS certificate could not be verified.") from None
            except requests.exceptions.Timeout:
                raise ApiUnavailable("The OpenShift API did not answer in time.") from None
            except requests.exceptions.RequestException:
                raise ApiUnavailable("The OpenShift API cannot be reached.") from None
        if response.status_code == 401:
            raise TokenRejected("OpenShift did not accept the token: it is wrong, expired or revoked.")
        if response.status_code == 403:
            raise ApiRefused("OpenShift refused the request (403 Forbidden).")
        return response

    @staticmethod
    def _json(response) -> dict:
        try:
            data = response.json()
        except ValueError:
            raise ReviewError(f"OpenShift answered {response.status_code} with something that is not JSON.") from None
        if not isinstance(data, dict):
            raise ReviewError("OpenShift answered with unexpected JSON.")
        return data

    def review(self, token: str) -> Identity:
        """SelfSubjectReview, or users/~ on clusters that do not serve it."""
        response = self._call("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", token,
                              {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
        if response.status_code in (404, 405):
            response = self._call("GET", "/apis/user.openshift.io/v1/users/~", token)
            if response.status_code != 200:
                raise ReviewError(f"OpenShift answered {response.status_code} to the user lookup.")
            data = self._json(response)
            name = (data.get("metadata") or {}).get("name")
            groups = data.get("groups") or []
        elif response.status_code in (200, 201):
            data = self._json(response)
            info = (data.get("status") or {}).get("userInfo") or {}
            name = info.get("username")
            groups = info.get("groups") or []
        else:
            raise ReviewError(f"OpenShift answered {response.status_code} to the identity review.")
        if not isinstance(name, str) or not name:
            raise ReviewError("OpenShift's answer names no user.")
        if not isinstance(groups, list):
            groups = []
        clean = tuple(sorted({g for g in groups if isinstance(g, str) and g}))
        return Identity(name=name[:255], groups=clean)

    def can(self, token: str, *, namespace: str, verb: str, resource: str, group: str = "",
            subresource: str = "", name: str = "") -> bool:
        """SelfSubjectAccessReview: may this token's user do verb on resource?"""
        attrs = {"namespace": namespace, "verb": verb, "resource": resource, "group": group}
        if subresource:
            attrs["subresource"] = subresource
        if name:
            attrs["name"] = name
        response = self._call("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", token,
                              {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                               "spec": {"resourceAttributes": attrs}})
        if response.status_code not in (200, 201):
            raise ReviewError(f"OpenShift answered {response.status_code} to the access review.")
        return bool((self._json(response).get("status") or {}).get("allowed"))
