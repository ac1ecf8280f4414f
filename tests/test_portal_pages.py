"""The base template, login page and navigation."""

import pytest


def test_login_page_says_which_login_is_active(client):
    response = client.get("/login/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<title>Log in · HCAP Ops Portal</title>" in html
    assert "Local accounts are enabled" in html
    assert 'name="csrfmiddlewaretoken"' in html


@pytest.mark.django_db
def test_dashboard_requires_login(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=%2F"


@pytest.mark.django_db
def test_base_template_shows_navigation_user_and_role(client_as):
    html = client_as("admin").get("/").content.decode()
    for item in ("Dashboard", "Backups", "Restores", "Deploys", "Logs", "Migrations", "Jobs", "Audit"):
        assert f">{item}</a>" in html
    assert 'data-testid="user-name">admin<' in html
    assert 'data-testid="user-roles">admin<' in html
    assert "Local platform" in html
    assert 'aria-current="page">Dashboard' in html


@pytest.mark.django_db
def test_local_login_and_logout_are_audited(client, demo_users):
    from hcapadmin.audit.models import AuditEvent

    bad = client.post("/login/", {"username": "viewer", "password": "wrong"})
    assert bad.status_code == 401
    assert "Wrong username or password." in bad.content.decode()
    ok = client.post("/login/", {"username": "viewer", "password": "pw-demo"})
    assert ok.status_code == 302
    client.post("/logout/")
    actions = list(AuditEvent.objects.order_by("id").values_list("action", "outcome", "actor"))
    assert actions == [("login.failure", "failure", "viewer"), ("login.success", "success", "viewer"),
                       ("logout", "success", "viewer")]


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_browser_login_page(page):
    page.goto("/login/")
    assert page.title() == "Log in · HCAP Ops Portal"
    assert page.get_by_role("heading", name="Log in").is_visible()
    assert page.get_by_test_id("login-kind").inner_text().startswith("Local accounts are enabled")
    assert page.get_by_label("Username").is_visible()
    assert page.get_by_label("Password").get_attribute("type") == "password"


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_browser_login_shows_role(login_page_as):
    page = login_page_as("auditor")
    assert page.get_by_test_id("user-roles").inner_text() == "auditor"
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/login/")
    assert "You are logged out." in page.content()


@pytest.mark.django_db
def test_demo_accounts_command_is_sandbox_only_and_audited(settings):
    from django.core.management import CommandError, call_command

    from hcapadmin.audit.models import AuditEvent

    settings.SANDBOX = False
    with pytest.raises(CommandError, match="only in the sandbox"):
        call_command("demo_accounts")
    assert not AuditEvent.objects.filter(action="sandbox.demo_accounts").exists()
    settings.SANDBOX = True
    call_command("demo_accounts", stdout=__import__("io").StringIO())
    event = AuditEvent.objects.get(action="sandbox.demo_accounts")
    assert event.target == "admin,approver,auditor,viewer" and event.actor.startswith("manage.py (")


@pytest.mark.django_db
@pytest.mark.parametrize("error, status, heading", [
    ("Invalid", 400, "Bad request"), ("Forbidden", 403, "Not allowed"), ("NotFound", 404, "Not found"),
    ("Conflict", 409, "Conflict"), ("Unavailable", 503, "Unavailable"), ("Timeout", 504, "Timed out"),
])
def test_page_decorator_renders_ops_errors_as_their_error_page(error, status, heading):
    from django.test import RequestFactory

    from hcapadmin.accounts.decorators import permission_required
    from hcapadmin.accounts.principal import Principal
    from ops import errors

    @permission_required("view")
    def view(request):
        raise getattr(errors, error)("the <b>reason</b>")

    request = RequestFactory().get("/somewhere/")
    request.principal = Principal("viewer", roles=frozenset({"viewer"}))
    response = view(request)
    html = response.content.decode()
    assert response.status_code == status
    assert f"<h1>{heading}</h1>" in html and "the &lt;b&gt;reason&lt;/b&gt;" in html
    assert '<a href="/">Back to the dashboard</a>' in html


@pytest.mark.django_db
def test_navigation_marks_the_section_of_a_deeper_page(client_as):
    html = client_as("admin").get("/jobs/?status=queued").content.decode()
    assert '<a href="/jobs/" aria-current="page">Jobs</a>' in html
    assert '<a href="/">Dashboard</a>' in html and html.count('aria-current="page"') == 1
