"""The "Apply pending migrations" job: a backup, then the real node-pg-migrate
up, run by a real RQ worker (tests/conftest.py run_jobs) on real services."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from ops.migrations import applied, runner, sources
from ops.migrations import report as reports
from tests.test_migrations import NODE_PG_MIGRATE, SAMPLE_ORDER, fresh_db, run_tool, sample  # noqa: F401  (fixtures)


@pytest.fixture
def configured(settings, sample, fresh_db, tmp_path):  # noqa: F811
    name, url, conninfo = fresh_db
    settings.MIGRATIONS_DIR = str(sample)
    settings.MANAGED_DATABASE_URL = url
    settings.BACKUP_DIR = str(tmp_path / "backups")
    Path(settings.BACKUP_DIR).mkdir()
    return sample, url, conninfo, name


def _submit(client, expected):
    return client.post("/migrations/apply/", {"confirm": "apply", "expected": expected})


def _backups(settings):
    return [p.name for p in Path(settings.BACKUP_DIR).rglob("*.sql.gz")]


@pytest.mark.django_db
def test_apply_job_backs_up_then_applies_exactly_the_pending(client_as, configured, run_jobs, settings, pg):
    from hcapadmin.audit.models import AuditEvent
    from hcapadmin.jobs.models import Job

    folder, url, conninfo, dbname = configured
    (folder / "1630000000000_broken-backfill.js").unlink()
    assert run_tool(folder, url, "up", "2")[0] == 0
    before = {r.name: (r.id, r.run_on) for r in applied.read_applied(conninfo).rows}
    client = client_as("admin")
    response = _submit(client, SAMPLE_ORDER[2:5])
    job = Job.objects.get(kind="migrations.apply")
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}/"
    assert job.target == dbname and job.mutating
    assert AuditEvent.objects.filter(action="migrations.apply", outcome="success").count() == 1
    run_jobs()
    job.refresh_from_db()
    assert job.status == "succeeded", (job.error, job.log)
    steps = [s["name"] for s in job.steps]
    assert steps.index("Back up database") < steps.index("Run node-pg-migrate up")
    assert "Migrations complete!" in job.log
    assert "> - 1610000000000_load-sites" in job.log  # the tool's own output, streamed
    assert url not in job.log and pg.password not in job.log
    assert job.result["applied"] == SAMPLE_ORDER[2:5]
    assert len(_backups(settings)) == 1
    rows = applied.read_applied(conninfo).rows
    assert [r.name for r in rows] == SAMPLE_ORDER[:5]
    assert {r.name: (r.id, r.run_on) for r in rows if r.name in before} == before
    html = client.get("/migrations/").content.decode()
    assert "Up to date: the next deploy will apply nothing." in html


@pytest.mark.django_db
def test_failing_migration_fails_the_job_with_the_tools_error(client_as, configured, run_jobs, settings):
    from hcapadmin.jobs.models import Job

    folder, url, conninfo, _ = configured
    assert run_tool(folder, url, "up", "3")[0] == 0
    client = client_as("admin")
    assert _submit(client, SAMPLE_ORDER[3:]).status_code == 302
    run_jobs()
    job = Job.objects.get(kind="migrations.apply")
    assert job.status == "failed"
    assert 'relation "applicant_status_history" does not exist' in job.error
    assert "node-pg-migrate up failed" in job.error
    assert "Error executing:" in job.log
    assert len(_backups(settings)) == 1  # the backup was taken before
    # single transaction: the run rolled back; the list says so
    report = reports.build_report(sources.LocalFolder(str(folder)), conninfo, "pgmigrations", "public")
    assert [i.name for i in report.by_status(reports.APPLIED)] == SAMPLE_ORDER[:3]
    assert [i.name for i in report.by_status(reports.PENDING)] == SAMPLE_ORDER[3:]
    body = client.get("/api/v1/migrations").json()
    assert [i["name"] for i in body["pending"]] == SAMPLE_ORDER[3:]


@pytest.mark.django_db
def test_job_rechecks_order_before_backing_up(client_as, configured, run_jobs, settings):
    """Queued while fine; by the time it runs an older file appeared: the job
    refuses with node-pg-migrate's reason and takes no backup."""
    from hcapadmin.jobs.models import Job

    folder, url, conninfo, _ = configured
    (folder / "1630000000000_broken-backfill.js").unlink()
    assert run_tool(folder, url, "up", "3")[0] == 0
    assert _submit(client_as("admin"), SAMPLE_ORDER[3:5]).status_code == 302
    (folder / "1595000000000_late-merge.sql").write_text("-- Up Migration\nSELECT 1;\n")
    run_jobs()
    job = Job.objects.get(kind="migrations.apply")
    assert job.status == "failed"
    assert "Not run migration 1595000000000_late-merge is preceding already run migration" in job.error
    assert _backups(settings) == []
    assert [r.name for r in applied.read_applied(conninfo).rows] == SAMPLE_ORDER[:3]


# --- a node-pg-migrate that is stopped leaves nothing behind ------------------------------------------------
SLOW = "1700000000000_slow"


@pytest.fixture
def slow_pending(sample, fresh_db):  # noqa: F811
    """Every sample migration applied, then one that sleeps for ten minutes."""
    name, url, conninfo = fresh_db
    (sample / "1630000000000_broken-backfill.js").unlink()
    assert run_tool(sample, url, "up")[0] == 0
    (sample / f"{SLOW}.sql").write_text("-- Up Migration\nSELECT pg_sleep(600);\n")
    return sample, url, conninfo


def _sleeping_sessions(conninfo) -> list[tuple[int, str]]:
    """(pid, application_name) of the sessions running the slow migration."""
    import psycopg

    with psycopg.connect(conninfo, autocommit=True) as conn:
        return conn.execute("SELECT pid, application_name FROM pg_stat_activity WHERE datname = current_database() "
                            "AND query LIKE '%pg_sleep(600)%' AND pid <> pg_backend_pid()").fetchall()


def _advisory_locks(conninfo) -> int:
    import psycopg

    with psycopg.connect(conninfo, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
                            "(SELECT oid FROM pg_database WHERE datname = current_database())").fetchone()[0]


def _processes_with(marker: str) -> list[int]:
    """Pids of live processes whose argv contains ``marker``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
            with open(f"/proc/{entry}/stat", "rb") as fh:
                state = fh.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in argv and state != b"Z":
            pids.append(int(entry))
    return pids


def _wait_for(predicate, what, guard=120.0):
    deadline = time.monotonic() + guard  # a failure guard only
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class _Stop(Exception):
    pass


def test_stopping_node_pg_migrate_kills_it_and_ends_its_database_session(slow_pending):
    folder, url, conninfo = slow_pending
    seen = {}
    lines = []

    def check():
        sessions = _sleeping_sessions(conninfo)
        if sessions:  # the migration is running in PostgreSQL now
            seen["sessions"] = sessions
            seen["node"] = _processes_with(str(folder))
            raise _Stop()

    with pytest.raises(_Stop):
        runner.run_local_up(NODE_PG_MIGRATE, str(folder), url, "pgmigrations", "public", on_line=lines.append,
                         check=check)
    [(pid, app)] = seen["sessions"]
    assert app.startswith(runner.UP_APPLICATION_NAME + "-")
    assert seen["node"], "node-pg-migrate was not found running"
    assert _processes_with(str(folder)) == []  # gone when run_local_up returned, not later
    assert _sleeping_sessions(conninfo) == []
    assert _advisory_locks(conninfo) == 0  # node-pg-migrate's run lock went with its session
    assert "Stopped node-pg-migrate and ended its 1 database session(s)." in lines
    assert SLOW not in [r.name for r in applied.read_applied(conninfo).rows]  # its transaction rolled back


def test_node_pg_migrate_past_its_timeout_is_killed_with_its_session(slow_pending):
    folder, url, conninfo = slow_pending

    def check():
        # The limit counts from before the first check; once the migration
        # runs in PostgreSQL, waiting a little over the limit here is sure to
        # pass it.
        if _sleeping_sessions(conninfo):
            time.sleep(1.05)

    from ops.errors import Timeout

    with pytest.raises(Timeout, match="ran longer than 1 seconds and was stopped"):
        runner.run_local_up(NODE_PG_MIGRATE, str(folder), url, "pgmigrations", "public", timeout=1, check=check)
    assert _processes_with(str(folder)) == []
    assert _sleeping_sessions(conninfo) == []
    assert _advisory_locks(conninfo) == 0


@pytest.mark.django_db
def test_apply_job_that_loses_its_lock_stops_node_pg_migrate_before_releasing(client_as, configured, run_jobs,
                                                                              settings):
    """Mid-migration the target lock vanishes: the job's check stops the run,
    node-pg-migrate and its PostgreSQL session are gone, the job fails saying
    why, and nothing was applied."""
    from hcapadmin.jobs import locks
    from hcapadmin.jobs.models import Job
    from hcapadmin.jobs.queue import redis_connection

    folder, url, conninfo, dbname = configured
    (folder / "1630000000000_broken-backfill.js").unlink()
    assert run_tool(folder, url, "up")[0] == 0
    (folder / f"{SLOW}.sql").write_text("-- Up Migration\nSELECT pg_sleep(600);\n")
    assert _submit(client_as("admin"), [SLOW]).status_code == 302
    seen = {}

    def drop_lock_once_the_migration_runs():
        try:
            seen["sessions"] = _wait_for(lambda: _sleeping_sessions(conninfo), "the slow migration to run")
            seen["node"] = _processes_with(str(folder))
            redis_connection().delete(locks.lock_key(dbname))
        except BaseException as exc:  # reported by the test below
            seen["error"] = exc

    watcher = threading.Thread(target=drop_lock_once_the_migration_runs, daemon=True)
    watcher.start()
    run_jobs()
    watcher.join(timeout=120)
    assert "error" not in seen, seen.get("error")
    job = Job.objects.get(kind="migrations.apply")
    assert job.status == "failed", (job.error, job.log)
    assert f"lost its lock on {dbname}" in job.error
    assert job.steps[-1]["name"] == "Run node-pg-migrate up" and job.steps[-1]["outcome"] == "failed"
    assert "Stopped node-pg-migrate and ended its 1 database session(s)." in job.log
    assert seen["node"] and _processes_with(str(folder)) == []
    assert _sleeping_sessions(conninfo) == []
    assert SLOW not in [r.name for r in applied.read_applied(conninfo).rows]


@pytest.mark.django_db
def test_job_past_its_limit_leaves_no_node_pg_migrate_or_session_behind(configured, run_jobs, slow_pending):
    """The bug this guards against: the job was marked failed and its lock
    released while node-pg-migrate (and its statement) ran on."""
    import tests.test_jobs_kinds  # noqa: F401
    from hcapadmin.jobs import locks
    from hcapadmin.jobs.queue import redis_connection
    from hcapadmin.jobs.lifecycle import submit
    from tests.test_jobs import admin_request

    folder, url, conninfo = slow_pending  # configured points the settings at the same folder and database
    job, _ = submit("test.migrate_past_limit", {}, request=admin_request(), target="slow-db")
    run_jobs()
    job.refresh_from_db()
    assert job.status == "failed" and "ran longer than its limit of 10 seconds" in job.error, (job.error, job.log)
    assert "Stopped node-pg-migrate" in job.log
    assert _processes_with(str(folder)) == []
    assert _sleeping_sessions(conninfo) == []
    assert locks.holder(redis_connection(), "slow-db") is None
    assert SLOW not in [r.name for r in applied.read_applied(conninfo).rows]
