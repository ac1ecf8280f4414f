"""Migrations: real node-pg-migrate 8.0.4 against real PostgreSQL.

Each test gets a fresh database and its own copy of a migrations folder, runs
the real tool to apply some of them, and checks what ops/migrations.py reads
and predicts against what the tool itself does."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from hcapadmin.lib import dburl
from migrations_ui import rendering
from ops import errors
from ops.migrations import applied, ordering, runner, sources
from ops.migrations import report as reports

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "migrations_sample"
NODE_PG_MIGRATE = str(Path(settings.BASE_DIR) / "node_modules" / ".bin" / "node-pg-migrate")
SAMPLE_ORDER = [
    "1590000000000_applicants",
    "1600000000000_employer-expressions",
    "20201001120000000_sites",
    "1610000000000_load-sites",
    "1620000000000_applicant-status",
    "1630000000000_broken-backfill",
]


def run_tool(folder, url, *args, table="pgmigrations", schema="public"):
    """The real node-pg-migrate CLI; DATABASE_URL in the environment."""
    env = dict(os.environ, DATABASE_URL=url, NO_COLOR="1")
    result = subprocess.run(
        [NODE_PG_MIGRATE, *args, "--migrations-dir", str(folder), "--migrations-table", table,
         "--migrations-schema", schema],
        env=env, capture_output=True, text=True, timeout=120, cwd=str(folder.parent),
    )
    return result.returncode, result.stdout + result.stderr


@pytest.fixture
def fresh_db(pg):
    """A new empty database: (name, url, conninfo)."""
    name = "mig_" + uuid.uuid4().hex[:10]
    pg.create_database(name)
    url = pg.url(name)
    yield name, url, dburl.to_conninfo(url)
    pg.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sample(tmp_path):
    folder = tmp_path / "migrations"
    shutil.copytree(FIXTURE, folder)
    return folder


def names(report, status):
    return [i.name for i in report.by_status(status)]


def state(folder, conninfo, table="pgmigrations", schema="public"):
    return reports.build_report(sources.LocalFolder(str(folder)), conninfo, table, schema)


# --- ordering ---------------------------------------------------------------------------
def test_order_matches_node_pg_migrate_sort(sample, fresh_db, tmp_path):
    """Apply every file with the real tool (trivial bodies) and compare the
    order it recorded with ours: 13/17-digit prefixes, ties, numeric names."""
    _, url, conninfo = fresh_db
    folder = tmp_path / "order"
    folder.mkdir()
    files = ["1600000000000_b.js", "1600000000000_a10.js", "1600000000000_a9.js", "1600000000000_A.js",
             "20200913122640000_utc-same-ms.js", "20200913122639999_utc-earlier.js", "1500000000000_first.sql",
             "1600000000001_after.js", "1600000000000_a-2.js", "1600000000000_a_1.js"]
    for f in files:
        (folder / f).write_text("exports.up = () => {};\n" if f.endswith(".js") else "-- Up Migration\nSELECT 1;\n")
    (folder / "assets").mkdir()
    (folder / ".hidden.js").write_text("syntax error (ignored: dotfile)")
    code, out = run_tool(folder, url, "up")
    assert code == 0, out
    recorded = [r.name for r in applied.read_applied(conninfo).rows]
    ours = [ordering.migration_name(f) for f in ordering.sort_filenames(sources.LocalFolder(str(folder)).migration_files().names)]
    assert ours == recorded
    assert recorded[0] == "1500000000000_first"
    assert ".hidden" not in recorded and "assets" not in recorded


def test_prefix_values_and_dates():
    assert ordering.numeric_prefix("1600000000000_x.js") == (1600000000000, True)
    # 2020-09-13T12:26:40.000Z == 1600000000000 ms
    assert ordering.numeric_prefix("20200913122640000_x.js") == (1600000000000, True)
    assert ordering.numeric_prefix("123_x.js") == (123, False)
    assert ordering.numeric_prefix("abc_x.js") == (0, False)
    assert ordering.numeric_prefix("20201340000000000_x.js")[0] is None  # month 13: JS NaN
    assert ordering.encoded_date("20201001120000000_sites.js").isoformat() == "2020-10-01T12:00:00+00:00"
    assert ordering.encoded_date("notes.md") is None
    assert ordering.name_warning("1590000000000_applicants.js") is None
    assert "does not follow" in ordering.name_warning("README.md")
    assert "cannot load it" in ordering.name_warning("1590000000000_notes.md")
    assert "not a valid UTC date" in ordering.name_warning("20201340000000000_x.js")


# --- statuses -----------------------------------------------------------------------------
def test_partial_apply_statuses(sample, fresh_db):
    _, url, conninfo = fresh_db
    code, out = run_tool(sample, url, "up", "3")
    assert code == 0, out
    report = state(sample, conninfo)
    assert report.complete and report.table_exists
    assert [i.name for i in report.items] == SAMPLE_ORDER
    assert names(report, reports.APPLIED) == SAMPLE_ORDER[:3]
    assert names(report, reports.PENDING) == SAMPLE_ORDER[3:]
    assert all(i.run_on is not None for i in report.by_status(reports.APPLIED))
    assert report.refusal is None
    assert report.summary == "3 pending; the next deploy will apply them."
    assert report.warnings == []
    assert report.counts["files"] == 6
    item = reports.find_item(report, "20201001120000000_sites")
    assert item.file == "20201001120000000_sites.js" and item.date.year == 2020


def test_table_missing_vs_database_unreachable(sample, fresh_db, pg):
    _, url, conninfo = fresh_db
    report = state(sample, conninfo)
    assert report.complete and report.table_exists is False
    assert names(report, reports.PENDING) == SAMPLE_ORDER
    assert "does not exist yet" in report.summary
    from devtools.services import free_port

    dead = dburl.to_conninfo(f"postgres://postgres:x@127.0.0.1:{free_port()}/nothing")
    report = state(sample, dead)
    assert not report.complete
    assert report.database_error.startswith("managed database unreachable")
    assert report.source_error is None
    assert {i.status for i in report.items} == {reports.UNKNOWN}
    assert "database could not be read" in report.summary
    with pytest.raises(applied.DatabaseUnavailable):
        applied.read_applied(dead)


def test_folder_missing_is_told_apart(tmp_path, fresh_db):
    _, url, conninfo = fresh_db
    report = state(tmp_path / "nope", conninfo)
    assert report.source_error and "does not exist" in report.source_error
    assert report.database_error is None
    assert "files could not be read" in report.summary


def test_bad_file_names_are_warnings_not_crashes(sample, fresh_db):
    _, url, conninfo = fresh_db
    (sample / "README.md").write_text("# notes\n")
    report = state(sample, conninfo)
    assert report.complete
    assert any("README.md" in w and "does not follow" in w for w in report.warnings)
    assert report.items[0].file == "README.md"  # node-pg-migrate sorts it as 0: first
    assert report.items[0].warning
    # and the real tool cannot load it: `up` fails before the order check
    assert report.load_error == "README.md"
    assert report.summary.startswith("`up` will fail before applying anything: node-pg-migrate cannot load README.md")
    code, out = run_tool(sample, url, "up")
    assert code != 0 and "Can't get migration files" in out and 'Unknown file extension ".md"' in out
    # an extension-less file is loaded as CommonJS, so it is not a load error (just a name warning)
    (sample / "README.md").unlink()
    (sample / "1590000000001_noext").write_text("exports.up = () => {};\n")
    report = state(sample, conninfo)
    assert report.load_error is None and any("1590000000001_noext" in w for w in report.warnings)


# --- predicted refusal == the tool's refusal -------------------------------------------------
def _tool_refusal(folder, url):
    code, out = run_tool(folder, url, "up")
    assert code != 0
    line = next(line for line in out.splitlines() if "Not run migration" in line)
    return line[line.index("Not run migration"):].strip()


def test_out_of_order_prediction_matches_tool(sample, fresh_db):
    _, url, conninfo = fresh_db
    (sample / "1630000000000_broken-backfill.js").unlink()
    hidden = sample / "1605000000000_merged-late.sql"
    code, out = run_tool(sample, url, "up")
    assert code == 0, out
    # a branch merged later adds a migration older than applied ones
    hidden.write_text("-- Up Migration\nCREATE TABLE merged_late (id int);\n-- Down Migration\nDROP TABLE merged_late;\n")
    report = state(sample, conninfo)
    assert names(report, reports.OUT_OF_ORDER) == ["1605000000000_merged-late"]
    assert report.will_refuse
    expected = _tool_refusal(sample, url)
    assert report.refusal == expected
    assert report.refusal == ("Not run migration 1605000000000_merged-late is preceding already run migration "
                              "1610000000000_load-sites")
    assert report.summary == ("`up` will refuse: not-run migration 1605000000000_merged-late precedes "
                              "already-run migration 1610000000000_load-sites.")


def test_deleted_file_prediction_matches_tool(sample, fresh_db):
    _, url, conninfo = fresh_db
    code, out = run_tool(sample, url, "up", "4")
    assert code == 0, out
    (sample / "1600000000000_employer-expressions.sql").unlink()
    report = state(sample, conninfo)
    assert names(report, reports.MISSING) == ["1600000000000_employer-expressions"]
    # the missing row sits where its name sorts
    assert [i.name for i in report.items][:2] == ["1590000000000_applicants", "1600000000000_employer-expressions"]
    assert report.will_refuse
    assert report.refusal == _tool_refusal(sample, url)


def test_deleted_last_file_does_not_refuse(sample, fresh_db):
    """Only mismatches up to the shorter list count: a deleted newest file
    leaves `up` working (nothing to do) and the row shown as missing."""
    _, url, conninfo = fresh_db
    (sample / "1630000000000_broken-backfill.js").unlink()
    assert run_tool(sample, url, "up")[0] == 0
    (sample / "1620000000000_applicant-status.js").unlink()
    report = state(sample, conninfo)
    assert names(report, reports.MISSING) == ["1620000000000_applicant-status"]
    assert not report.will_refuse
    assert "no file" in report.summary and "apply nothing" in report.summary
    code, out = run_tool(sample, url, "up")
    assert code == 0 and "No migrations to run!" in out


def test_non_default_schema_table(sample, fresh_db, pg):
    name, url, conninfo = fresh_db
    pg.psql("CREATE SCHEMA ops", name)
    code, out = run_tool(sample, url, "up", "2", table="schema_history", schema="ops")
    assert code == 0, out
    assert pg.psql("SELECT count(*) FROM ops.schema_history", name).strip() == "2"
    report = state(sample, conninfo, table="schema_history", schema="ops")
    assert names(report, reports.APPLIED) == SAMPLE_ORDER[:2]
    # the default table does not exist in that database
    assert state(sample, conninfo).table_exists is False


# --- local apply with the real tool ------------------------------------------------------------
def test_run_local_up_applies_exactly_pending(sample, fresh_db, pg):
    name, url, conninfo = fresh_db
    (sample / "1630000000000_broken-backfill.js").unlink()
    assert run_tool(sample, url, "up", "2")[0] == 0
    before = {r.name: r.id for r in applied.read_applied(conninfo).rows}
    lines = []
    code, out = runner.run_local_up(NODE_PG_MIGRATE, str(sample), url, "pgmigrations", "public", on_line=lines.append)
    assert code == 0, out
    assert "Migrations complete!" in lines
    after = applied.read_applied(conninfo).rows
    assert [r.name for r in after] == SAMPLE_ORDER[:5]
    assert {r.name: r.id for r in after if r.name in before} == before  # applied rows untouched
    assert pg.psql("SELECT count(*) FROM sites", name).strip() == "3"  # the assets/ data file was read
    assert url not in " ".join(runner.local_up_argv(NODE_PG_MIGRATE, str(sample), "pgmigrations", "public"))


def test_run_local_up_failure_reports_tool_error(sample, fresh_db):
    _, url, conninfo = fresh_db
    assert run_tool(sample, url, "up", "3")[0] == 0
    code, out = runner.run_local_up(NODE_PG_MIGRATE, str(sample), url, "pgmigrations", "public")
    assert code != 0
    assert 'relation "applicant_status_history" does not exist' in out
    assert "applicant_status_history" in runner.error_excerpt(out)
    # single transaction: nothing of the failed run stays applied
    report = state(sample, conninfo)
    assert names(report, reports.APPLIED) == SAMPLE_ORDER[:3]
    assert names(report, reports.PENDING) == SAMPLE_ORDER[3:]


# --- source display -----------------------------------------------------------------------
def test_up_down_lines_and_highlight():
    js = (FIXTURE / "1590000000000_applicants.js").read_text()
    marks = sources.up_down_lines(js)
    assert marks == {"up": 2, "down": 22}
    sql_marks = sources.up_down_lines((FIXTURE / "1600000000000_employer-expressions.sql").read_text())
    assert sql_marks == {"up": 1, "down": 8}
    html, css = rendering.highlight("x.js", js, [2, 22])
    assert 'class="hll"' in html and "createTable" in html and ".source" in css


def test_local_folder_read_validates_name(sample):
    folder = sources.LocalFolder(str(sample))
    listing = folder.migration_files()
    assert "assets" not in listing.names and ".gitkeep" not in listing.names
    assert "exports.up" in folder.read_migration("1590000000000_applicants.js", listing)
    with pytest.raises(errors.NotFound):
        folder.read_migration("../../etc/passwd", listing)
    with pytest.raises(errors.NotFound):
        folder.read_migration("assets", listing)


def test_demo_migrations_as_the_sandbox_runs_them(tmp_path, fresh_db, pg):
    """demo/migrations: all apply with the real tool; with all but the last two
    applied (as the sandbox seeds them), two are pending and `up` may proceed."""
    name, url, conninfo = fresh_db
    folder = tmp_path / "demo"
    shutil.copytree(Path(settings.BASE_DIR) / "demo" / "migrations", folder)
    files = sources.LocalFolder(str(folder)).migration_files().names
    assert len(files) == 7 and "assets" not in files
    assert any(len(f.split("_")[0]) == 17 for f in files) and any(f.endswith(".sql") for f in files)
    code, out = run_tool(folder, url, "up", str(len(files) - 2))
    assert code == 0, out
    report = state(folder, conninfo)
    assert report.complete and not report.warnings
    assert [i.name for i in report.by_status(reports.PENDING)] == ["20201020160000000_cohorts",
                                                               "1603900000000_applicant-status"]
    assert report.summary == "2 pending; the next deploy will apply them."
    assert pg.psql("SELECT count(*) FROM employer_sites", name).strip() == "5"
    pg.psql("INSERT INTO applicants (body) VALUES ('{}'::jsonb)", name)  # what the sandbox seed inserts into
    code, out = run_tool(folder, url, "up")
    assert code == 0, out
    assert state(folder, conninfo).counts[reports.APPLIED] == 7


def test_run_local_up_never_logs_the_password(tmp_path, fresh_db, pg):
    _, url, conninfo = fresh_db
    folder = tmp_path / "leaky"
    folder.mkdir()
    (folder / "1700000000000_leaky.js").write_text(
        "exports.up = () => { console.log('url is ' + process.env.DATABASE_URL); };\n")
    lines = []
    code, out = runner.run_local_up(NODE_PG_MIGRATE, str(folder), url, "pgmigrations", "public", on_line=lines.append)
    assert code == 0, out
    assert any(line.startswith("url is postgres://postgres:***@") for line in lines)
    assert pg.password not in out and all(pg.password not in line for line in lines)


def test_rendered_fragments_are_shared_by_copies_of_one_report_only():
    """The page caches its rendered rows per memoised Report; copies made
    with dataclasses.replace() share them, a report of other inputs does not."""
    from dataclasses import replace

    first = reports.merge(["1000000000000_a.js", "1000000000001_b.js"], applied.AppliedState([], True))
    calls = []
    built = rendering.fragment(first, ("rows", "all", 1), lambda: calls.append(1) or "rows-1")
    copy = replace(first, source_error="x")
    assert rendering.fragment(copy, ("rows", "all", 1), lambda: calls.append(1) or "other") == built == "rows-1"
    assert calls == [1]
    second = reports.merge(["1000000000000_a.js"], applied.AppliedState([], True))
    assert rendering.fragment(second, ("rows", "all", 1), lambda: "rows-2") == "rows-2"
