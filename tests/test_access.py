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
