"""Browser: an admin requests a restore from the Backups page with the
keyboard, an approver signs it off by typing the target's name, and the
request page follows the job (a real jobs_worker process), which fails with
"restore runbook not wired yet" until the runbook is wired."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_request_and_sign_off_a_restore_in_the_browser(page, login_page_as, jobs_worker_process, settings):
    from playwright.sync_api import expect

    from hcapadmin.restores.models import RestoreRequest
    from tests.test_restores import put

    name, path = put(Path(settings.BACKUP_DIR))
    try:
        worker = jobs_worker_process()
        login_page_as("admin")
        page.goto("/backups/")
        page.get_by_role("link", name=f"Request a restore of {name}").click()
        page.wait_for_url(re.compile(r".*/restores/new/\?backup="))
        expect(page.get_by_label("Target database")).to_have_value("hcap")
        page.get_by_label("Reason (required)").focus()
        page.keyboard.type("restore after the bad import")
        page.keyboard.press("Tab")
        page.keyboard.type("HCAP-42")
        page.get_by_role("button", name="Request restore").press("Enter")
        page.wait_for_url(re.compile(r".*/restores/\d+/$"))
        expect(page.get_by_test_id("restore-status")).to_contain_text("pending")
        expect(page.get_by_test_id("restore-plan")).to_contain_text("Cut over")
        pk = int(page.url.rstrip("/").rsplit("/", 1)[1])
        page.get_by_role("button", name="Log out").click()

        login_page_as("approver")
        page.goto(f"/restores/{pk}/")
        page.get_by_label(re.compile("Type the target database name")).fill("hcap")
        page.get_by_role("button", name="Approve restore").click()
        page.wait_for_url(re.compile(rf".*/restores/{pk}/$"))
        live = page.get_by_test_id("job-live")
        expect(live).to_have_attribute("data-status", "failed", timeout=60_000)
        expect(page.get_by_test_id("job-error")).to_contain_text("restore runbook not wired yet")
        assert RestoreRequest.objects.get(pk=pk).status == "failed", open(worker.log_path).read()[-2000:]
        page.reload()
        expect(page.get_by_test_id("restore-status")).to_contain_text("failed")
    finally:
        path.unlink(missing_ok=True)
