"""Lockouts that one person cannot turn against everyone.

Behind OpenShift's router many users share one client address, so failures
are counted per account and per (address, account), never per address
alone; bad OpenShift tokens (login form or Bearer) count per address, each
kind on its own counter, and never lock a local account."""

from __future__ import annotations

import base64

import pytest
from django.test import RequestFactory

from hcapadmin.accounts import auth as authn
from hcapadmin.audit.models import AuditEvent

pytestmark = pytest.mark.django_db

ROUTER = "10.128.0.1"  # every client seen through the same router address


def basic(user, password):
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bearer(token):
    return {"HTTP_AUTHORIZATION": "Bearer " + token}


def lockouts(**filters):
    return list(AuditEvent.objects.filter(action="login.lockout", **filters).order_by("id"))


def test_lockout_parameters_never_key_on_the_address_alone():
    request = RequestFactory().post("/login/", {"username": "admin"})
    assert authn.axes_lockout_parameters(request, {"username": "admin"}) == [["ip_address", "username"], ["username"]]
    assert authn.axes_lockout_parameters(request) == [["ip_address", "username"], ["username"]]
    for account in authn.TOKEN_ACCOUNTS:
        assert authn.axes_lockout_parameters(request, {"username": account}) == [["ip_address", "username"]]
    assert authn.axes_lockout_parameters(RequestFactory().get("/"), {"username": None}) == [["ip_address", "username"]]


def test_made_up_names_on_the_form_do_not_lock_out_admin(client, settings, demo_users):
    settings.AXES_FAILURE_LIMIT = 3
    for i in range(5):
        response = client.post("/login/", {"username": f"ghost{i}", "password": "nope"}, REMOTE_ADDR=ROUTER)
        assert response.status_code == 401, i
    response = client.post("/login/", {"username": "admin", "password": "pw-demo"}, REMOTE_ADDR=ROUTER)
    assert response.status_code == 302
    assert lockouts() == []


def test_one_locked_account_leaves_the_others_working(client, settings, demo_users):
    settings.AXES_FAILURE_LIMIT = 3
    for _ in range(3):
        response = client.post("/login/", {"username": "viewer", "password": "nope"}, REMOTE_ADDR=ROUTER)
    assert response.status_code == 429 and b"for this account" in response.content
    # the locked account stays locked, even with its right password
    assert client.post("/login/", {"username": "viewer", "password": "pw-demo"},
                       REMOTE_ADDR=ROUTER).status_code == 429
    # everybody else behind the same address logs in
    assert client.post("/login/", {"username": "admin", "password": "pw-demo"}, REMOTE_ADDR=ROUTER).status_code == 302
    assert client.get("/api/v1/audit", REMOTE_ADDR=ROUTER, **basic("auditor", "pw-demo")).status_code == 200
    assert [(e.actor, e.details["method"]) for e in lockouts()] == [("viewer", "local"), ("viewer", "local")]


def test_made_up_names_over_basic_do_not_lock_out_others(client, settings, demo_users):
    settings.AXES_FAILURE_LIMIT = 3
    for i in range(5):
        r = client.get("/api/v1/audit", REMOTE_ADDR=ROUTER, **basic(f"ghost{i}", "nope"))
        assert r.status_code == 401, i
    assert client.get("/api/v1/audit", REMOTE_ADDR=ROUTER, **basic("auditor", "pw-demo")).status_code == 200
    assert client.post("/login/", {"username": "admin", "password": "pw-demo"}, REMOTE_ADDR=ROUTER).status_code == 302
    # one account guessed over Basic locks that account only, and is audited
    for _ in range(3):
        r = client.get("/api/v1/audit", REMOTE_ADDR=ROUTER, **basic("approver", "nope"))
    assert r.status_code == 429
    assert client.get("/api/v1/audit", REMOTE_ADDR=ROUTER, **basic("auditor", "pw-demo")).status_code == 200
    assert {(e.actor, e.details["method"]) for e in lockouts()} == {("approver", "basic")}


def test_bad_token_logins_lock_token_login_from_that_address_only(client, settings, openshift_identities, demo_users):
    settings.AXES_FAILURE_LIMIT = 3
    for i in range(3):
        response = client.post("/login/", {"token": f"sha256~wrong-{i}"}, REMOTE_ADDR=ROUTER)
    assert response.status_code == 429 and b"token login from this address" in response.content
    assert client.post("/login/", {"token": openshift_identities.ADMIN}, REMOTE_ADDR=ROUTER).status_code == 429
    # local accounts from the same address are not affected
    assert client.post("/login/", {"username": "admin", "password": "pw-demo"}, REMOTE_ADDR=ROUTER).status_code == 302
    client.post("/logout/")
    assert client.get("/api/v1/audit", REMOTE_ADDR=ROUTER, **basic("auditor", "pw-demo")).status_code == 200
    # nor are Bearer tokens from that address, nor token logins from elsewhere
    assert client.get("/api/v1/audit", REMOTE_ADDR=ROUTER, **bearer(openshift_identities.AUDITOR)).status_code == 200
    assert client.post("/login/", {"token": openshift_identities.ADMIN}, REMOTE_ADDR="10.128.0.2").status_code == 302
    assert [e.details["method"] for e in lockouts()] == ["token", "token"]
    assert all(e.source_ip == ROUTER for e in lockouts())


def test_bad_bearer_tokens_slow_down_only_their_sender(client, settings, openshift_identities, demo_users, standin):
    settings.AXES_FAILURE_LIMIT = 3
    for i in range(3):
        r = client.get("/api/v1/audit", REMOTE_ADDR=ROUTER, **bearer(f"sha256~guess-{i}"))
    assert r.status_code == 429
    sent = len(standin.requests)
    assert client.get("/api/v1/audit", REMOTE_ADDR=ROUTER, **bearer(openshift_identities.AUDITOR)).status_code == 429
    assert len(standin.requests) == sent  # a throttled client's token is not sent to the API
    # session logins (token form and local accounts) and Basic from the same address still work
    assert client.post("/login/", {"token": openshift_identities.ADMIN}, REMOTE_ADDR=ROUTER).status_code == 302
    client.post("/logout/")
    assert client.post("/login/", {"username": "admin", "password": "pw-demo"}, REMOTE_ADDR=ROUTER).status_code == 302
    client.post("/logout/")
    assert client.get("/api/v1/audit", REMOTE_ADDR=ROUTER, **basic("auditor", "pw-demo")).status_code == 200
    # and so do Bearer tokens from another address
    assert client.get("/api/v1/audit", REMOTE_ADDR="10.128.0.2",
                      **bearer(openshift_identities.AUDITOR)).status_code == 200
    assert [e.details["method"] for e in lockouts()] == ["bearer", "bearer"]


def test_a_local_name_shaped_like_a_token_counter_only_hurts_its_sender(client, settings, openshift_identities,
                                                                        demo_users):
    """The token counters' names cannot be local accounts; typing one into the
    local form counts against the sender's own address."""
    settings.AXES_FAILURE_LIMIT = 3
    for _ in range(3):
        client.post("/login/", {"username": authn.TOKEN_FORM_ACCOUNT, "password": "x"}, REMOTE_ADDR="10.128.0.9")
    assert client.post("/login/", {"token": openshift_identities.ADMIN}, REMOTE_ADDR=ROUTER).status_code == 302
