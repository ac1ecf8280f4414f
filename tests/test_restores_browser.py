"""Browser: an admin requests a restore from the Backups page with the
keyboard, an approver signs it off in a second browser by typing the
target's name, the admin watches the runbook's steps go from pending to done
(a real jobs_worker process restores a real pg_dump backup of a managed
database of the test's own), then discards the pre-restore database by
typing its name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

STEPS = ["preflight", "block", "safety_backup", "load", "check", "cutover", "report"]


@pytest.fixture(scope="module", autouse=True)
def _drop_test_databases(pg):
    yield
    out = pg.psql("SELECT datname FROM pg_database WHERE datname LIKE 'rqb\\_%'")
    for name in filter(None, out.splitlines()):
        pg.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_request_sign_off_watch_and_discard_a_restore_in_two_browsers(page, login_page_as, browser, live_server,
                                                                      jobs_worker_process, pg, settings, tmp_path):
    from playwright.sync_api import expect

    from hcapadmin.backups.models import BackupVerification
    from hcapadmin.jobs.models import Job
    from hcapadmin.restores.models import RestoreRequest
    from tests.test_jobs_workers import wait_for, worker_log
    from tests.test_restore_ops import exists
    from tests.test_restore_runbook import Scene

    s = Scene(pg, settings, tmp_path, jobs_worker_process, "rqb_browser")
    name = Path(s.path).name
    BackupVerification.objects.create(backup_name=name, database=s.db, ok=True, message="test")

    # the admin requests it, with the keyboard
    login_page_as("admin")
    page.goto("/backups/")
    page.get_by_role("link", name=f"Request a restore of {name}").click()
    page.wait_for_url(re.compile(r".*/restores/new/\?backup="))
    expect(page.get_by_label("Target database")).to_have_value(s.db)
    page.get_by_label("Reason (required)").focus()
    page.keyboard.type("restore after the bad import")
    page.keyboard.press("Tab")
    page.keyboard.type("HCAP-42")
    page.get_by_role("button", name="Request restore").press("Enter")
    page.wait_for_url(re.compile(r".*/restores/\d+/$"))
    expect(page.get_by_test_id("restore-status")).to_contain_text("pending")
    expect(page.get_by_test_id("restore-plan")).to_contain_text("Swap the staging database in")
    pk = int(page.url.rstrip("/").rsplit("/", 1)[1])
    expect(page.get_by_test_id("restore-approve-form")).to_have_count(0)  # never one's own

    # an approver signs it off in a second browser
    other = browser.new_context(base_url=live_server.url)
    try:
        approver = other.new_page()
        approver.set_default_timeout(15_000)
        approver.goto("/login/")
        approver.get_by_label("Username").fill("approver")
        approver.get_by_label("Password").fill("pw-demo")
        approver.get_by_role("button", name="Log in").click()
        approver.wait_for_url("**/")
        approver.goto(f"/restores/{pk}/")
        approver.get_by_label(re.compile("Type the target database name")).fill(s.db)
        approver.get_by_role("button", name="Approve restore").click()
        approver.wait_for_url(re.compile(rf".*/restores/{pk}/$"))
        expect(approver.get_by_test_id("restore-status")).to_contain_text("approved")
    finally:
        other.close()

    # the admin watches the steps: all pending while no worker runs, then each done
    page.reload()
    plan = page.get_by_test_id("job-plan")
    expect(plan.locator("li")).to_have_count(len(STEPS))
    expect(plan).not_to_contain_text("done")
    worker = s.worker()
    live = page.get_by_test_id("job-live")
    try:
        expect(live).to_have_attribute("data-status", "succeeded", timeout=240_000)
    except AssertionError:
        raise AssertionError(worker_log(worker)[-3000:]) from None
    for item in plan.locator("li").all():
        expect(item.locator(".badge")).to_have_text("done")
    page.reload()
    expect(page.get_by_test_id("restore-status")).to_contain_text("succeeded")
    for step in STEPS:
        expect(page.locator(f'[data-testid="restore-plan"] li[data-step="{step}"] .badge')).to_have_text("done")
    req = RestoreRequest.objects.get(pk=pk)
    assert req.status == "succeeded" and exists(pg, req.previous_database)
    expect(page.get_by_test_id("restore-report")).to_contain_text(req.previous_database)

    # then discards the pre-restore database, typing its name to confirm
    page.get_by_label(re.compile("to confirm")).fill(req.previous_database)
    page.get_by_role("button", name=f"Drop {req.previous_database}").click()
    page.wait_for_url(re.compile(r".*/jobs/\d+/$"))
    expect(page.get_by_test_id("job-live")).to_have_attribute("data-status", "succeeded", timeout=120_000)
    wait_for(lambda: RestoreRequest.objects.get(pk=pk).previous_discarded, 60, "the discard to be recorded")
    assert not exists(pg, req.previous_database) and exists(pg, s.db)
    assert Job.objects.filter(kind="restore.discard_previous", params__request=pk).count() == 1
    page.goto(f"/restores/{pk}/")
    expect(page.get_by_text("(discarded)")).to_be_visible()
