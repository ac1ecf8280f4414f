"""Hostile input on every restore form and endpoint (hypothesis): never a
500, and a refused request (4xx) writes nothing: no request, no sign-off, no
status change, no job, no restore audit event."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from hcapadmin.audit.models import AuditEvent
from hcapadmin.jobs.models import Job
from hcapadmin.restores.models import RestoreDecision, RestoreRequest
from tests.test_restores import as_user, backup_dir, put  # noqa: F401  (backup_dir is a fixture)
from tests.test_restores_pages import make

pytestmark = pytest.mark.django_db

_settings = hsettings(max_examples=40, deadline=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

_text = st.text(st.characters(codec="utf-8"), max_size=80)
_scalar = st.one_of(st.none(), st.booleans(), st.integers(min_value=-10**30, max_value=10**30),
                    st.floats(allow_nan=False), _text,
                    st.sampled_from(["", " ", "hcap", "online", "offline", "\x00", "\ud800", "x" * 3000,
                                     "../../etc/passwd", "hcap; DROP DATABASE hcap", "postgres", "yes"]))
_json = st.recursive(_scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(_text, inner, max_size=3)), max_leaves=6)
_fields = ["backup", "target", "mode", "reason", "ticket", "acknowledge_unverified", "comment", "confirm", "x"]
_body = st.dictionaries(st.sampled_from(_fields), _json, max_size=6)
_form = st.dictionaries(st.sampled_from(_fields), st.one_of(_text, st.sampled_from(["hcap", "yes", "on", "\x00"])),
                        max_size=6)


def _state():
    return (RestoreRequest.objects.count(), RestoreDecision.objects.count(), Job.objects.count(),
            AuditEvent.objects.filter(action__startswith="restore.").count(),
            sorted(RestoreRequest.objects.values_list("status", flat=True)))


def _dumps(body) -> str:
    return json.dumps(body, ensure_ascii=True)  # lone surrogates become \ud800 escapes, as a client may send


def _check(response, before):
    assert response.status_code < 500, response.content[:300]
    if 400 <= response.status_code < 500:
        assert _state() == before, response.content[:300]
        if response["Content-Type"].startswith("application/json"):
            assert "error" in response.json()


@_settings
@given(body=st.one_of(_body, _json))
def test_create_api_never_500(client, demo_users, backup_dir, body):  # noqa: F811
    name, _ = put(backup_dir)
    if isinstance(body, dict) and body.get("backup") == "hcap":
        body["backup"] = name
    c = as_user(client, "admin", "admin")
    before = _state()
    _check(c.post("/api/v1/restores", data=_dumps(body), content_type="application/json"), before)


@_settings
@given(raw=st.binary(max_size=200), content_type=st.sampled_from(["application/json", "text/plain",
                                                                  "application/x-www-form-urlencoded", ""]))
def test_raw_bodies_never_500(client, demo_users, raw, content_type):
    req = make()
    for role, url in (("admin", "/api/v1/restores"), ("approver", f"/api/v1/restores/{req.pk}/approve"),
                      ("approver", f"/api/v1/restores/{req.pk}/reject"), ("admin", f"/api/v1/restores/{req.pk}/cancel"),
                      ("admin", f"/api/v1/restores/{req.pk}/discard-previous")):
        c = as_user(client, role, role)
        before = _state()
        _check(c.generic("POST", url, raw, content_type=content_type), before)


@_settings
@given(body=st.one_of(_body, _json), status=st.sampled_from(["pending", "approved", "succeeded", "expired"]))
def test_decision_apis_never_500(client, demo_users, body, status):
    req = make(status=status, previous_database="hcap_pre_restore_20260101000000" if status == "succeeded" else "")
    for role, action in (("approver", "approve"), ("approver", "reject"), ("admin", "cancel"),
                         ("admin", "discard-previous")):
        c = as_user(client, role, role)
        before = _state()
        response = c.post(f"/api/v1/restores/{req.pk}/{action}", data=_dumps(body), content_type="application/json")
        if response.status_code < 400:  # an accepted action; start the next one from the new state
            continue
        _check(response, before)


@_settings
@given(data=_form, status=st.sampled_from(["pending", "succeeded"]))
def test_forms_never_500(client, demo_users, backup_dir, data, status):  # noqa: F811
    name, _ = put(backup_dir)
    if data.get("backup") == "hcap":
        data["backup"] = name
    req = make(status=status, previous_database="hcap_pre_restore_20260101000000" if status == "succeeded" else "")
    for role, url in (("admin", "/restores/new/"), ("approver", f"/restores/{req.pk}/approve/"),
                      ("approver", f"/restores/{req.pk}/reject/"), ("admin", f"/restores/{req.pk}/cancel/"),
                      ("admin", f"/restores/{req.pk}/discard-previous/")):
        c = as_user(client, role, role)
        before = _state()
        response = c.post(url, data)
        if response.status_code < 400:
            continue
        _check(response, before)


@_settings
@given(pk=st.integers(min_value=0, max_value=10**40), query=st.dictionaries(
    st.sampled_from(["status", "page", "backup"]), _text, max_size=3))
def test_reads_never_500(client, demo_users, pk, query):
    c = as_user(client, "viewer", "viewer")
    for url in (f"/restores/{pk}/", f"/api/v1/restores/{pk}", "/restores/", "/api/v1/restores"):
        response = c.get(url, query)
        assert response.status_code in (200, 400, 404), (url, response.status_code)
    admin = as_user(client, "admin", "admin")
    assert admin.get("/restores/new/", query).status_code in (200, 400, 404)
