"""Browser: an admin sees pending migrations, applies them, and sees them
applied (a real jobs_worker process runs the real node-pg-migrate up)."""

from __future__ import annotations

import re
import shutil
import uuid

import pytest

from tests.test_migrations import FIXTURE, SAMPLE_ORDER, run_tool

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_see_pending_apply_and_see_them_applied(page, login_page_as, jobs_worker_process, pg, settings, tmp_path):
    from playwright.sync_api import expect

    dbname = "mig_browser_" + uuid.uuid4().hex[:8]
    pg.create_database(dbname)
    url = pg.url(dbname)
    folder = tmp_path / "migrations"
    shutil.copytree(FIXTURE, folder)
    (folder / "1630000000000_broken-backfill.js").unlink()
    backups = tmp_path / "backups"
    backups.mkdir()
    try:
        assert run_tool(folder, url, "up", "2")[0] == 0
        settings.MIGRATIONS_DIR = str(folder)
        settings.MANAGED_DATABASE_URL = url
        settings.BACKUP_DIR = str(backups)
        worker = jobs_worker_process(env={"HCAPADMIN_MIGRATIONS_DIR": str(folder),
                                          "HCAPADMIN_MANAGED_DATABASE_URL": url,
                                          "HCAPADMIN_BACKUP_DIR": str(backups)})
        login_page_as("admin")
        page.goto("/migrations/")
        expect(page.get_by_test_id("summary")).to_have_text("3 pending; the next deploy will apply them.")
        expect(page.get_by_test_id("count-pending")).to_have_text("3")
        for name in SAMPLE_ORDER[2:5]:
            expect(page.get_by_test_id("attention").locator(f'tr[data-name="{name}"]')).to_contain_text("pending")
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Apply 3 pending migrations").click()
        page.wait_for_url(re.compile(r".*/jobs/\d+/$"))
        live = page.get_by_test_id("job-live")
        expect(live).to_have_attribute("data-status", "succeeded", timeout=90_000)
        expect(page.get_by_test_id("job-steps")).to_contain_text("Back up database")
        expect(page.get_by_test_id("job-log")).to_contain_text("Migrations complete!")
        page.goto("/migrations/")
        expect(page.get_by_test_id("summary")).to_have_text("Up to date: the next deploy will apply nothing.")
        expect(page.get_by_test_id("count-applied")).to_have_text("5")
        table = page.get_by_test_id("migrations")
        for name in SAMPLE_ORDER[:5]:
            expect(table.locator(f'tr[data-name="{name}"]')).to_contain_text("applied")
        assert list(backups.rglob("*.sql.gz")), open(worker.log_path).read()[-2000:]
    finally:
        pg.psql(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
