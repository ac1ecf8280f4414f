"""Every named URL x every role: allowed or refused as tests/access_table.py
says, and no named URL without an entry."""

from __future__ import annotations

import json

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from tests.access_table import ACCESS, ROLES


def _named_patterns(resolver=None, prefix=""):
    resolver = resolver or get_resolver()
    for item in resolver.url_patterns:
        if isinstance(item, URLResolver):
            yield from _named_patterns(item, prefix)
        elif isinstance(item, URLPattern) and item.name:
            yield item.name


def test_every_named_url_has_an_access_entry():
    names = set(_named_patterns())
    missing = sorted(names - set(ACCESS))
    assert not missing, f"add these URL names to tests/access_table.py: {missing}"
    stale = sorted(set(ACCESS) - names)
    assert not stale, f"tests/access_table.py names URLs that no longer exist: {stale}"


CASES = [(name, role) for name in sorted(ACCESS) for role in ROLES]


@pytest.mark.django_db
@pytest.mark.parametrize("name,role", CASES, ids=[f"{n}-{r}" for n, r in CASES])
def test_access(name, role, client, demo_users):
    from django.contrib.auth import get_user_model

    entry = ACCESS[name]
    if role != "anonymous":
        client.force_login(get_user_model().objects.get(username=role))
    values = entry.setup() if entry.setup else {}
    path = entry.path.format(**values)
    kwargs = {}
    if entry.data is not None:
        if entry.json:
            kwargs = {"data": json.dumps(entry.data), "content_type": "application/json"}
        else:
            kwargs = {"data": entry.data}
    response = getattr(client, entry.method.lower())(path, **kwargs)
    expected = entry.expect[role]
    assert response.status_code == expected, (
        f"{entry.method} {path} as {role}: got {response.status_code}, expected {expected}"
    )
    if path.startswith("/api/") and response.status_code >= 400:
        assert "error" in response.json()
    if role == "anonymous" and expected == 302 and name not in ("logout",):
        assert response["Location"].startswith("/login/")


API_CASES = [(name, role) for name in sorted(ACCESS) if ACCESS[name].path.startswith("/api/") for role in ROLES]


@pytest.mark.django_db
@pytest.mark.parametrize("name,role", API_CASES, ids=[f"{n}-{r}" for n, r in API_CASES])
def test_api_access_with_openshift_bearer_token(name, role, client, standin, settings):
    """The same table for API endpoints, with OpenShift principals: a Bearer
    token reviewed by the stand-in API, its user in the group of the role."""
    from django.core.cache import cache

    from tests.harness.openshift import status_body

    settings.OPENSHIFT_API_URL = standin.url
    settings.OPENSHIFT_CA_FILE = str(standin.ca_file)
    cache.clear()

    def review(req):
        if not (req.bearer or "").startswith("sha256~role-"):
            return 401, status_body(401, "Unauthorized", "Unauthorized")
        who = req.bearer[len("sha256~role-"):]
        return 201, {"kind": "SelfSubjectReview", "status": {"userInfo": {
            "username": "os-" + who, "groups": [settings.ROLE_GROUPS[who][0]]}}}

    standin.route("POST", r"/apis/authentication.k8s.io/v1/selfsubjectreviews", review)
    entry = ACCESS[name]
    headers = {} if role == "anonymous" else {"HTTP_AUTHORIZATION": f"Bearer sha256~role-{role}"}
    values = entry.setup() if entry.setup else {}
    path = entry.path.format(**values)
    kwargs = {}
    if entry.data is not None:
        kwargs = ({"data": json.dumps(entry.data), "content_type": "application/json"} if entry.json
                  else {"data": entry.data})
    response = getattr(client, entry.method.lower())(path, **kwargs, **headers)
    assert response.status_code == entry.expect[role], (
        f"{entry.method} {path} as OpenShift {role}: got {response.status_code}, expected {entry.expect[role]}")
    if response.status_code >= 400:
        assert "error" in response.json()
