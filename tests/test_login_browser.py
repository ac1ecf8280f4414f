"""Browser: log in with an OpenShift token (stand-in API), see the role, log out."""

import pytest

from hcapadmin.audit.models import AuditEvent


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_token_login_see_role_logout(page, openshift_identities, live_server):
    page.goto("/login/")
    assert "Two kinds of login are active" in page.get_by_test_id("login-kind").inner_text()
    page.get_by_label("OpenShift token or login command").fill(
        f"oc login --token={openshift_identities.AUDITOR} --server={openshift_identities.standin.url}")
    page.get_by_role("button", name="Sign in with OpenShift").click()
    page.wait_for_url(live_server.url + "/")
    assert page.get_by_test_id("user-name").inner_text() == "olga"
    assert page.get_by_test_id("user-roles").inner_text() == "auditor"
    assert openshift_identities.AUDITOR not in page.content()
    page.goto("/audit/")
    assert page.get_by_role("heading", name="Audit trail").is_visible()
    assert "Chain verifies" in page.get_by_test_id("chain-badge").inner_text()
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/login/")
    assert "You are logged out" in page.content()
    page.goto("/")
    page.wait_for_url("**/login/**")
    actions = list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
    assert actions[0] == "login.success" and "logout" in actions


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_bad_token_message_in_browser(page, openshift_identities):
    page.goto("/login/")
    page.get_by_label("OpenShift token or login command").fill("sha256~no-such-token")
    page.get_by_role("button", name="Sign in with OpenShift").click()
    alert = page.get_by_test_id("token-error")
    assert "wrong, expired or revoked" in alert.inner_text()
    assert page.get_by_label("OpenShift token or login command").input_value() == ""
