"""Browser: an admin starts a manual backup from the Backups page and watches
the job page update in place until it finishes (a real jobs_worker process
runs the job against the test database)."""

from __future__ import annotations

import re

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_start_manual_backup_and_watch_it_finish(page, login_page_as, jobs_worker_process, pg):
    from playwright.sync_api import expect

    pg.psql("DROP TABLE IF EXISTS browser_demo; CREATE TABLE browser_demo AS SELECT g AS id FROM generate_series(1, 1000) g",
            "hcap")
    worker = jobs_worker_process()
    login_page_as("admin")
    page.goto("/backups/")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Take manual backup").click()
    page.wait_for_url(re.compile(r".*/jobs/\d+/$"))
    page.evaluate("window.__noReload = true")  # survives only if the page is never reloaded
    live = page.get_by_test_id("job-live")
    expect(live).to_have_attribute("data-status", "succeeded", timeout=60_000)
    assert page.evaluate("window.__noReload") is True, open(worker.log_path).read()[-2000:]
    expect(page.get_by_test_id("job-status")).to_contain_text("finished after")
    expect(page.get_by_test_id("job-progress")).to_have_attribute("value", "100")
    expect(page.get_by_test_id("job-steps")).to_contain_text("Back up database")
    expect(page.get_by_test_id("job-log")).to_contain_text("Backup complete")
    expect(page.get_by_test_id("job-result")).to_contain_text(".sql.gz")
    name = page.get_by_test_id("job-result").locator("[data-key=backup] code").inner_text()
    page.goto("/backups/")
    expect(page.locator(f'tr[data-name="{name}"]')).to_be_visible()
