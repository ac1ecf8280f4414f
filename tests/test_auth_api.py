"""The JSON API's authentication: Bearer (reviewed, cached; the reviews come
from a real kube-apiserver behind the stand-in), Basic (local accounts,
through axes), session (CSRF still applies)."""

from __future__ import annotations

import base64

import pytest
from django.test import Client, RequestFactory

from hcapadmin.accounts.decorators import api_endpoint
from hcapadmin.accounts.principal import Principal
from hcapadmin.audit.models import AuditEvent
from tests.harness.kubeapi import kube_api, openshift_real, real_identities  # noqa: F401  (fixtures)
from tests.harness.openshift import status_body


def bearer(token):
    return {"HTTP_AUTHORIZATION": "Bearer " + token}


def basic(user, password):
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.django_db
def test_bearer_token_reviewed_once_then_cached(client, real_identities):
    token = real_identities.AUDITOR
    first = client.get("/api/v1/audit", **bearer(token))
    assert first.status_code == 200 and set(first.json()) == {"items", "next"}
    assert client.get("/api/v1/audit", **bearer(token)).status_code == 200
    assert len(real_identities.calls()) == 1  # second answer came from the cache
    from django.core.cache import cache

    keys = list(getattr(cache, "_cache", {}).keys())
    assert keys and all(token not in k for k in keys)  # keyed by an HMAC, never the token


@pytest.mark.django_db
def test_bearer_errors_are_json(client, real_identities, standin):
    r = client.get("/api/v1/audit", **bearer("sha256~revoked"))
    assert r.status_code == 401 and "rejected by OpenShift" in r.json()["error"]
    r = client.get("/api/v1/audit", **bearer(real_identities.VIEWER))
    assert r.status_code == 403 and r.json() == {"error": "permission denied"}
    r = client.get("/api/v1/audit", **bearer(real_identities.NOROLE))
    assert r.status_code == 403
    r = client.get("/api/v1/audit", **bearer("bad token with spaces"))
    assert r.status_code == 401 and r.json()["error"] == "malformed bearer token"
    standin.route("POST", r"/apis/authentication.k8s.io/v1/selfsubjectreviews",
                  lambda req: (403, status_body(403, "forbidden", "Forbidden")))
    r = client.get("/api/v1/audit", **bearer("sha256~fresh-token-not-cached"))
    assert r.status_code == 503 and "error" in r.json()


@pytest.mark.django_db
def test_bearer_is_csrf_exempt(real_identities):
    c = Client(enforce_csrf_checks=True)
    # 405 (not a CSRF 403): the request got through CSRF to the endpoint's method check
    r = c.post("/api/v1/audit", **bearer(real_identities.AUDITOR))
    assert r.status_code == 405 and r.json()["error"] == "method POST not allowed"


@pytest.mark.django_db
def test_bearer_without_openshift_configured(client):
    r = client.get("/api/v1/audit", **bearer("sha256~anything"))
    assert r.status_code == 401 and "not configured" in r.json()["error"]


@pytest.mark.django_db
def test_session_api_post_needs_csrf(demo_users):
    from django.contrib.auth import get_user_model

    c = Client(enforce_csrf_checks=True)
    c.force_login(get_user_model().objects.get(username="auditor"))
    r = c.post("/api/v1/audit")
    assert r.status_code == 403 and "CSRF" in r.json()["error"]
    c.get("/audit/")  # sets the CSRF cookie
    r = c.post("/api/v1/audit", HTTP_X_CSRFTOKEN=c.cookies["csrftoken"].value)
    assert r.status_code == 405


@pytest.mark.django_db
def test_api_endpoint_enforces_csrf_for_session_even_if_view_is_exempt():
    from django.views.decorators.csrf import csrf_exempt

    @csrf_exempt
    @api_endpoint("view", methods=("POST",))
    def view(request):
        from django.http import JsonResponse

        return JsonResponse({"ok": True})

    request = RequestFactory().post("/api/v1/x")
    request.principal = Principal("viewer", roles=frozenset({"viewer"}))
    request.auth_via = "session"
    response = view(request)
    assert response.status_code == 403 and b"CSRF" in response.content
    request = RequestFactory().post("/api/v1/x")
    request.principal = Principal("viewer", roles=frozenset({"viewer"}))
    request.auth_via = "bearer"
    assert view(request).status_code == 200
    anonymous = RequestFactory().post("/api/v1/x")
    anonymous.principal = None
    assert view(anonymous).status_code == 401


@pytest.mark.django_db
def test_basic_auth_with_local_accounts(client, demo_users):
    r = client.get("/api/v1/audit", **basic("auditor", "pw-demo"))
    assert r.status_code == 200
    r = client.get("/api/v1/audit", **basic("viewer", "pw-demo"))
    assert r.status_code == 403
    r = client.get("/api/v1/audit", **basic("auditor", "wrong"))
    assert r.status_code == 401 and r.json()["error"] == "wrong username or password"
    r = client.get("/api/v1/audit", HTTP_AUTHORIZATION="Basic !!notbase64")
    assert r.status_code == 401 and r.json()["error"] == "malformed Basic credentials"
    assert AuditEvent.objects.filter(action="login.failure", details__method="basic").count() == 1


@pytest.mark.django_db
def test_basic_auth_goes_through_lockout(client, settings, demo_users):
    settings.AXES_FAILURE_LIMIT = 3
    for _ in range(3):
        r = client.get("/api/v1/audit", REMOTE_ADDR="10.7.7.7", **basic("auditor", "wrong"))
    assert r.status_code == 429 and "error" in r.json()
    r = client.get("/api/v1/audit", REMOTE_ADDR="10.7.7.8", **basic("auditor", "pw-demo"))
    assert r.status_code == 429  # the account is locked, from any address
    assert AuditEvent.objects.filter(action="login.lockout", actor="auditor").exists()


@pytest.mark.django_db
def test_basic_ignored_without_local_accounts(client, settings, demo_users):
    settings.LOCAL_ACCOUNTS = False
    r = client.get("/api/v1/audit", **basic("auditor", "pw-demo"))
    assert r.status_code == 401


@pytest.mark.django_db
def test_permission_denied_on_state_change_is_audited():
    from django.http import HttpResponse

    from hcapadmin.accounts.decorators import permission_required

    @permission_required("operate")
    def page(request):
        return HttpResponse("done")

    request = RequestFactory().post("/backups/take/", REMOTE_ADDR="10.1.2.3")
    request.principal = Principal("vic", groups=("hcap-viewers",), roles=frozenset({"viewer"}))
    assert page(request).status_code == 403
    (event,) = AuditEvent.objects.filter(action="permission.denied")
    assert (event.actor, event.outcome, event.target, event.source_ip) == ("vic", "denied", "/backups/take/", "10.1.2.3")
    assert event.details == {"permission": "operate", "method": "POST"}
    request = RequestFactory().get("/backups/take/")
    request.principal = Principal("vic", roles=frozenset({"viewer"}))
    assert page(request).status_code == 403
    assert AuditEvent.objects.filter(action="permission.denied").count() == 1  # reads are not audited


@pytest.mark.django_db
def test_rejected_bearer_tokens_are_audited_and_lock_out_the_client(client, settings, openshift_identities, standin):
    settings.AXES_FAILURE_LIMIT = 3
    for i in range(3):
        r = client.get("/api/v1/audit", REMOTE_ADDR="10.5.5.5", **bearer(f"sha256~guess-{i}"))
        assert r.status_code == (401 if i < 2 else 429)  # the failure that locks already answers 429
    failures = AuditEvent.objects.filter(action="login.failure", details__method="bearer")
    assert failures.count() == 3 and all("guess" not in str(e.details) for e in failures)
    sent = len(standin.requests)
    r = client.get("/api/v1/audit", REMOTE_ADDR="10.5.5.5", **bearer(openshift_identities.AUDITOR))
    assert r.status_code == 429 and "error" in r.json()
    assert len(standin.requests) == sent
    assert AuditEvent.objects.filter(action="login.lockout", details__method="bearer").count() == 2
    r = client.get("/api/v1/audit", REMOTE_ADDR="10.5.5.6", **bearer(openshift_identities.AUDITOR))
    assert r.status_code == 200


# --- one decorator: body parsing and error mapping -------------------------------------------------
def _api_request(method="GET", data=None, content_type="application/json", role="admin"):
    factory = RequestFactory()
    if method == "GET":
        request = factory.get("/api/v1/x")
    else:
        request = factory.generic(method, "/api/v1/x", data=data if data is not None else b"",
                                  content_type=content_type)
    request.principal = Principal(role, roles=frozenset({role}))
    request.auth_via = "bearer"
    return request


@pytest.mark.parametrize("error, status", [
    ("Invalid", 400), ("Forbidden", 403), ("NotFound", 404), ("Conflict", 409), ("Unavailable", 503),
    ("Timeout", 504), ("OpsError", 503),
])
def test_api_endpoint_maps_ops_errors_to_statuses(error, status):
    import json

    from ops import errors

    @api_endpoint("view", methods=("GET",))
    def view(request):
        raise getattr(errors, error)(f"the {error} reason")

    response = view(_api_request())
    assert response.status_code == status
    assert json.loads(response.content) == {"error": f"the {error} reason"}


def test_api_endpoint_gives_the_view_the_validated_body():
    import json

    from django.http import JsonResponse
    from pydantic import BaseModel, ConfigDict

    class Body(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        name: str

    @api_endpoint("view", methods=("POST",), body=Body)
    def view(request, body: Body):
        return JsonResponse({"name": body.name, "raw": request.json})

    ok = view(_api_request("POST", json.dumps({"name": "x"})))
    assert ok.status_code == 200 and json.loads(ok.content) == {"name": "x", "raw": {"name": "x"}}
    for data, content_type, message in [
        (json.dumps({"name": "x", "bogus": 1}), "application/json", "unknown field(s): bogus"),
        (json.dumps({"name": 1}), "application/json", "name: "),
        (json.dumps([1]), "application/json", "the body must be a JSON object"),
        ("{", "application/json", "the body is not valid JSON"),
        ("name=x", "text/plain", "send a JSON body"),
        ('{"a":' * 40 + "1" + "}" * 40, "application/json", "the body is nested too deeply"),
    ]:
        response = view(_api_request("POST", data, content_type))
        assert response.status_code == 400, data
        assert message in json.loads(response.content)["error"], data
    too_big = view(_api_request("POST", json.dumps({"name": "x" * (1024 * 1024)})))
    assert too_big.status_code == 413 and "larger than" in json.loads(too_big.content)["error"]


@pytest.mark.django_db
def test_api_endpoint_checks_a_permission_per_method():
    from django.http import JsonResponse

    @api_endpoint({"GET": "view", "POST": "operate"}, methods=("GET", "POST"))
    def view(request):
        return JsonResponse({"ok": True})

    assert view(_api_request("GET", role="viewer")).status_code == 200
    assert view(_api_request("POST", "{}", role="viewer")).status_code == 403
    assert view(_api_request("POST", "{}", role="admin")).status_code == 200
    assert AuditEvent.objects.filter(action="permission.denied", details__permission="operate").count() == 1
