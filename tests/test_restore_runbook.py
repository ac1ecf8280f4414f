"""The local restore runbook (hcapadmin.restores.runbook) run by real
``jobs_worker`` processes on the real PostgreSQL the harness starts: end to
end, failures injected at each step, workers SIGKILLed between steps and in
the middle of the load and of the cut-over then resumed or rolled back, and a
lost lock.  Whatever happens, the target exists under its own name with
either its old or the restored data, and the job's final state says which.

Each test points the portal's managed database (HCAPADMIN_MANAGED_DATABASE_URL)
at a database of its own, so the session's ``hcap`` is never restored over.
Moments are reached with the runbook's test hold (a Redis key the step waits
on), never by sleeping."""

from __future__ import annotations

import os
import signal
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from hcapadmin.jobs import locks
from hcapadmin.jobs.models import Job
from hcapadmin.jobs.queue import redis_connection
from hcapadmin.jobs.lifecycle import cancel, default_target, resume, roll_back, submit, sweep
from hcapadmin.restores import runbook
from ops import backups
from tests.test_jobs import admin_request
from tests.test_jobs_workers import wait_for, worker_log
from tests.test_restore_ops import (OWNER, OWNER_PASSWORD, approve, change_data, ci, db_props, exists, make_db,
                                    roles, snapshot, take_backup)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

KINDS = ["hcapadmin.restores.runbook"]
STEP_NAMES = ["preflight", "block", "safety_backup", "load", "check", "cutover", "report"]


@pytest.fixture(scope="module", autouse=True)
def _drop_test_databases(pg):
    yield
    out = pg.psql("SELECT datname FROM pg_database WHERE datname LIKE 'rbk\\_%'")
    for name in filter(None, out.splitlines()):
        pg.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Scene:
    """One test's managed database, its backup (taken before the data was
    changed) and the worker environment pointing at them."""

    def __init__(self, pg, settings, tmp_path, jobs_worker_process, db, *, url=None):
        self.pg, self.db, self.start_worker = pg, db, jobs_worker_process
        make_db(pg, db)
        self.backed_up = snapshot(pg, db)
        self.folder = tmp_path / "backups"
        self.path = take_backup(pg, self.folder, db)
        change_data(pg, db)
        self.live = snapshot(pg, db)
        self.oid = db_props(pg, db)["oid"]
        self.url = url or pg.url(db)
        settings.MANAGED_DATABASE_URL = self.url
        settings.BACKUP_DIR = str(self.folder)
        self.env = {"HCAPADMIN_MANAGED_DATABASE_URL": self.url, "HCAPADMIN_BACKUP_DIR": str(self.folder)}
        self.workers = []

    def params(self, *, mode="online", stamp="20261125010203", path=None, hold=None, **over):
        path = path or self.path
        size, sha = approve(path)
        params = {"target": self.db, "backup": Path(path).name, "path": str(path), "size": size, "sha256": sha,
                  "mode": mode, "stamp": stamp}
        if hold:
            params["_hold"] = {"at": hold, "key": self.key}
        params.update(over)
        return params

    @property
    def key(self):
        return f"hcapadmin:test:rbk:{self.db}"

    def entered(self) -> int:
        return int(redis_connection().get(f"{self.key}:entered") or 0)

    def release(self):
        redis_connection().set(f"{self.key}:release", "1", ex=600)

    def submit(self, params):
        assert default_target() == self.db
        job, created = submit("restore.local", params, request=admin_request(), target=default_target())
        assert created
        return job

    def worker(self):
        proc = self.start_worker(imports=KINDS, env=self.env)
        self.workers.append(proc)
        return proc

    def finished(self, job):
        try:
            wait_for(lambda: Job.objects.get(pk=job.pk).is_finished, 240, "the restore job to finish")
        except AssertionError:
            raise AssertionError("\n".join(worker_log(w)[-3000:] for w in self.workers)) from None
        return Job.objects.get(pk=job.pk)

    def kill_and_sweep(self, job, worker, settings):
        """SIGKILL the worker, let the sweeper mark the job abandoned, and free
        the dead worker's lock (it would expire by its TTL)."""
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=60)
        job.refresh_from_db()
        assert sweep(now=job.heartbeat_at + timedelta(seconds=settings.JOB_STALE_SECONDS + 1)) == [job.pk]
        job.refresh_from_db()
        assert job.status == "abandoned"
        redis_connection().delete(locks.lock_key(self.db))
        redis_connection().delete(f"{self.key}:entered")

    # -- what the database looks like -------------------------------------------------
    def assert_old(self, stamp):
        """The target is the original database with the changed (live) data;
        no staging or pre-restore database is left."""
        props = db_props(self.pg, self.db)
        assert props["oid"] == self.oid and props["allow"] is True and props["limit"] == 7
        assert snapshot(self.pg, self.db) == self.live
        assert not exists(self.pg, f"{self.db}_restore_{stamp}")
        assert not exists(self.pg, f"{self.db}_pre_restore_{stamp}")

    def assert_restored(self, stamp):
        props = db_props(self.pg, self.db)
        assert props["oid"] != self.oid and props["allow"] is True and props["limit"] == 7
        assert snapshot(self.pg, self.db) == self.backed_up
        pre = f"{self.db}_pre_restore_{stamp}"
        assert db_props(self.pg, pre)["oid"] == self.oid
        self.pg.psql(f"ALTER DATABASE {pre} ALLOW_CONNECTIONS true")
        assert snapshot(self.pg, pre) == self.live
        assert not exists(self.pg, f"{self.db}_restore_{stamp}")


def statuses(job) -> dict:
    return {s["name"]: s["status"] for s in Job.objects.get(pk=job.pk).runbook["steps"]}


def data(job, step) -> dict:
    return {s["name"]: s["data"] for s in Job.objects.get(pk=job.pk).runbook["steps"]}[step]


@pytest.fixture
def scene(pg, settings, tmp_path, jobs_worker_process, request):
    def make(db, **kw):
        return Scene(pg, settings, tmp_path, jobs_worker_process, db, **kw)

    return make


# --- end to end -------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["online", "offline"])
def test_a_restore_runs_end_to_end_and_reports(scene, mode):
    s = scene(f"rbk_e2e_{mode}")
    job = s.submit(s.params(mode=mode))
    assert [e["name"] for e in job.runbook["steps"]] == STEP_NAMES
    s.worker()
    job = s.finished(job)
    assert job.status == "succeeded", job.error
    assert statuses(job) == dict.fromkeys(STEP_NAMES, "done")
    s.assert_restored("20261125010203")
    report = job.result["steps"]["report"]
    assert report["mode"] == mode and report["target"] == s.db
    assert report["pre_restore"] == f"{s.db}_pre_restore_20261125010203"
    assert report["downtime_seconds"] is not None and report["downtime_seconds"] >= 0
    assert report["row_counts"] == {"public.applicants": 500, "public.sites": 20, 'public."Mixed Case"': 3,
                                    "public.empty_one": 0} and report["rows"] == 523
    assert {"preflight", "safety_backup", "load", "check", "cutover"} <= set(report["steps"])
    assert all(step.get("seconds") is not None for name, step in report["steps"].items() if name != "safety_backup")
    # the safety backup is in the catalog, labelled in the job's data, and holds the data from before
    safety = job.result["steps"]["safety_backup"]
    assert safety["label"] == "safety backup" and report["safety_backup"] == safety["backup"]
    catalog = {e.name: e for e in backups.scan_local(str(s.folder))}
    assert safety["backup"] in catalog and not catalog[safety["backup"]].in_progress
    if mode == "offline":
        assert job.result["steps"]["block"]["previous_connection_limit"] == 7
        assert report["application_downtime_seconds"] >= report["downtime_seconds"]
    else:
        assert job.result["steps"]["block"] == {"skipped": True, "mode": "online"}
    # the restored database serves the application's own role
    with psycopg.connect(ci(s.pg, s.db, OWNER, OWNER_PASSWORD)) as conn:
        assert conn.execute("SELECT count(*) FROM applicants").fetchone()[0] == 500


# --- failures injected at each step -------------------------------------------------------
def test_a_truncated_file_loads_nothing_and_the_old_data_stays(scene, tmp_path):
    s = scene("rbk_trunc")
    blob = Path(s.path).read_bytes()
    cut = tmp_path / "truncated.sql.gz"
    cut.write_bytes(blob[: len(blob) * 2 // 3])
    job = s.submit(s.params(path=str(cut), stamp="20261125030000"))
    s.worker()
    job = s.finished(job)
    assert job.status == "failed"
    assert "truncated or corrupt" in job.error and "Undone:" in job.error
    assert statuses(job)["load"] == "undone" and statuses(job)["cutover"] == "skipped"
    s.assert_old("20261125030000")


def test_a_file_changed_after_approval_is_refused_at_the_preflight(scene):
    s = scene("rbk_sum")
    params = s.params(stamp="20261125040000")
    blob = bytearray(Path(s.path).read_bytes())
    blob[-20] ^= 0xFF  # same size, other bytes
    Path(s.path).write_bytes(bytes(blob))
    job = s.submit(params)
    s.worker()
    job = s.finished(job)
    assert job.status == "failed" and "does not have the approved sha256" in job.error
    assert statuses(job)["preflight"] == "failed" and statuses(job)["load"] == "skipped"
    s.assert_old("20261125040000")


def test_a_file_changed_between_the_preflight_and_the_load_is_refused_by_the_load(scene):
    s = scene("rbk_swap")
    job = s.submit(s.params(stamp="20261125050000", hold="before:load"))
    s.worker()
    wait_for(s.entered, 120, "the job to reach the load")
    blob = bytearray(Path(s.path).read_bytes())
    blob[-20] ^= 0xFF
    Path(s.path).write_bytes(bytes(blob))
    s.release()
    job = s.finished(job)
    assert job.status == "failed", job.error
    assert statuses(job)["load"] == "undone"
    s.assert_old("20261125050000")


@pytest.mark.parametrize("mode", ["online", "offline"])
def test_a_staging_database_that_does_not_match_the_backup_fails_the_check(scene, mode):
    s = scene(f"rbk_check_{mode}")
    job = s.submit(s.params(stamp="20261125060000", hold="before:check", mode=mode))
    s.worker()
    wait_for(s.entered, 120, "the job to reach the check")
    if mode == "offline":  # the application is kept out meanwhile
        assert db_props(s.pg, s.db)["limit"] == 0
    s.pg.psql("DELETE FROM applicants WHERE id <= 3", f"{s.db}_restore_20261125060000")
    s.release()
    job = s.finished(job)
    assert job.status == "failed"
    assert "public.applicants has 497 rows, the backup 500" in job.error
    assert statuses(job) == {"preflight": "done", "block": "undone", "safety_backup": "done", "load": "undone",
                             "check": "failed", "cutover": "skipped", "report": "skipped"}
    s.assert_old("20261125060000")


def test_a_rename_that_fails_because_a_session_holds_the_database_leaves_the_old_data(scene, pg, settings):
    """A superuser session holds the target open and the cut-over runs as a
    role that may not end it (the job is taken to the cut-over as a
    superuser, its worker killed there, and resumed by a worker that connects
    as that role): the cut-over cannot rename the target, changes nothing,
    and the load is undone."""
    roles(pg)
    pg.psql("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rbk_operator') THEN "
            "CREATE ROLE rbk_operator LOGIN CREATEDB PASSWORD 'rbk-op-pw'; END IF; END $$")
    pg.psql(f"GRANT {OWNER} TO rbk_operator")
    s = scene("rbk_busy")
    job = s.submit(s.params(stamp="20261125070000", hold="before:cutover"))
    worker = s.worker()
    wait_for(s.entered, 120, "the job to reach the cut-over")
    s.kill_and_sweep(job, worker, settings)
    s.release()
    s.env["HCAPADMIN_MANAGED_DATABASE_URL"] = pg.url(s.db, user="rbk_operator", password="rbk-op-pw")
    holder = psycopg.connect(ci(pg, s.db), autocommit=True)
    try:
        assert resume(job, request=admin_request("carol")) == "queued"
        s.worker()
        job = s.finished(job)
        assert holder.execute("SELECT 1").fetchone() == (1,)
    finally:
        holder.close()
    assert job.status == "failed", job.error
    assert "being accessed by other users" in job.error and "keeps its data" in job.error
    assert statuses(job)["cutover"] == "undone" and statuses(job)["load"] == "undone"
    s.assert_old("20261125070000")


def test_cancel_during_the_load_drops_staging_and_keeps_the_old_data(scene):
    s = scene("rbk_cancel")
    job = s.submit(s.params(stamp="20261125065000", hold="before:load", mode="offline"))
    s.worker()
    wait_for(s.entered, 120, "the job to reach the load")
    assert cancel(job, request=admin_request("bob")) == "requested"
    job = s.finished(job)
    assert job.status == "cancelled", job.error
    assert statuses(job) == {"preflight": "done", "block": "undone", "safety_backup": "done", "load": "undone",
                             "check": "skipped", "cutover": "skipped", "report": "skipped"}
    s.assert_old("20261125065000")  # the connection limit is back to 7 too


# --- workers killed, then resumed or rolled back ------------------------------------------
HOLDS = ["before:check", "load", "cutover"]


@pytest.mark.parametrize("hold", HOLDS)
def test_a_worker_killed_twice_is_resumed_each_time_and_the_restore_completes(scene, settings, hold):
    stamp = "20261125080000"
    s = scene(f"rbk_res_{hold.replace(':', '_')}")
    job = s.submit(s.params(stamp=stamp, hold=hold))
    for attempt in (1, 2):
        worker = s.worker()
        wait_for(lambda: s.entered() >= 1, 120, f"attempt {attempt} to reach {hold}")
        s.kill_and_sweep(job, worker, settings)
        if hold == "cutover" and attempt == 1:  # killed between the renames: the target is missing for now
            assert not exists(s.pg, s.db) and exists(s.pg, f"{s.db}_pre_restore_{stamp}")
        elif hold == "cutover":  # the rerun renamed staging into place and was killed right after
            assert db_props(s.pg, s.db)["oid"] != s.oid and exists(s.pg, f"{s.db}_pre_restore_{stamp}")
        assert resume(job, request=admin_request("carol")) == "queued"
    s.release()
    s.worker()
    job = s.finished(job)
    assert job.status == "succeeded", job.error
    assert job.runbook["attempt"] == 3
    s.assert_restored(stamp)


@pytest.mark.parametrize("hold", HOLDS)
def test_a_killed_worker_whose_job_is_rolled_back_leaves_the_old_data(scene, settings, hold):
    stamp = "20261125090000"
    s = scene(f"rbk_rb_{hold.replace(':', '_')}")
    job = s.submit(s.params(stamp=stamp, hold=hold))
    worker = s.worker()
    wait_for(s.entered, 120, f"the job to reach {hold}")
    s.kill_and_sweep(job, worker, settings)
    assert roll_back(job, request=admin_request("carol")) == "queued"
    s.worker()
    job = s.finished(job)
    assert job.status == "cancelled", job.error
    assert "rolled back on request by carol" in job.error.lower()
    assert statuses(job)["load"] == "undone"
    s.assert_old(stamp)
    # rolling back is final: the same job can be neither resumed nor rolled back again
    with pytest.raises(Exception, match="only an abandoned runbook job"):
        roll_back(job, request=admin_request("carol"))


BACKUP_ONLY_ROLE = "rbk_backup_only_role"


def role_oid(pg, name):
    out = pg.psql(f"SELECT oid FROM pg_roles WHERE rolname = '{name}'").strip()
    return int(out) if out else None


@pytest.mark.parametrize("then", ["roll_back", "resume"])
def test_a_role_a_killed_load_created_is_dropped_by_roll_back_and_reused_by_resume(scene, settings, pg, then):
    """The backup has a role the server lacks: the load creates it (committed
    before the data) and records it before the commit, so after the worker is
    killed mid-load a roll back drops it and a resume keeps it as this
    restore's own; the roles that existed before stay."""
    stamp = "20261125083000"
    pg.psql(f"DROP ROLE IF EXISTS {BACKUP_ONLY_ROLE}")
    pg.psql(f"CREATE ROLE {BACKUP_ONLY_ROLE} NOLOGIN")
    try:
        s = scene(f"rbk_roles_{then}")
        pg.psql(f"DROP ROLE {BACKUP_ONLY_ROLE}")
        job = s.submit(s.params(stamp=stamp, hold="load"))
        worker = s.worker()
        wait_for(s.entered, 120, "the load to hold after COPY data reached psql")
        oid = role_oid(pg, BACKUP_ONLY_ROLE)
        assert oid and data(job, "load")["role_oids"] == {BACKUP_ONLY_ROLE: oid}
        s.kill_and_sweep(job, worker, settings)
        if then == "roll_back":
            assert roll_back(job, request=admin_request("carol")) == "queued"
            s.worker()
            job = s.finished(job)
            assert job.status == "cancelled", job.error
            s.assert_old(stamp)
            assert role_oid(pg, BACKUP_ONLY_ROLE) is None
            assert data(job, "load")["roles_dropped"] == [BACKUP_ONLY_ROLE]
        else:
            assert resume(job, request=admin_request("carol")) == "queued"
            s.release()
            s.worker()
            job = s.finished(job)
            assert job.status == "succeeded", job.error
            s.assert_restored(stamp)
            load = data(job, "load")
            assert load["roles_created"] == [BACKUP_ONLY_ROLE] and load["role_oids"] == {BACKUP_ONLY_ROLE: oid}
            assert role_oid(pg, BACKUP_ONLY_ROLE) == oid
        assert role_oid(pg, OWNER) and role_oid(pg, "rs_reader")
    finally:
        pg.psql(f"DROP ROLE IF EXISTS {BACKUP_ONLY_ROLE}")


# --- the lock and Redis ------------------------------------------------------------------
def test_a_lost_lock_stops_the_job_at_a_safe_point_with_the_target_intact(scene):
    stamp = "20261125100000"
    s = scene("rbk_lock")
    job = s.submit(s.params(stamp=stamp, hold="before:load"))
    s.worker()
    wait_for(s.entered, 120, "the load to start")
    # Redis restarted empty, or the key was flushed: the held step's safe point
    # notices (it is never released)
    redis_connection().delete(locks.lock_key(s.db))
    job = s.finished(job)
    assert job.status == "needs_attention"
    assert "lost its lock" in job.error
    assert statuses(job)["cutover"] == "pending"
    # the load was interrupted at its safe point: staging was dropped, the target untouched
    s.assert_old(stamp)



def test_redis_restarted_empty_in_the_middle_of_a_restore_leaves_the_target_whole(scene, pg):
    """The queue's Redis server really stops while the job waits before the
    check, and comes back empty (no persistence, as in the deploy): the job
    ends with a status that matches what the target holds, never a missing
    or half-loaded database."""
    from tests.harness.plugin import stack

    stamp = "20261125130000"
    s = scene("rbk_redis")
    job = s.submit(s.params(stamp=stamp, hold="before:check"))
    worker = s.worker()
    wait_for(s.entered, 120, "the job to reach the check")
    redis_server = stack()["redis"]
    redis_server.stop()
    try:
        # the held step polls Redis: the worker notices at once
        wait_for(lambda: "redis" in worker_log(worker).lower() or Job.objects.get(pk=job.pk).is_finished, 120,
                 "the worker to notice Redis gone")
    finally:
        redis_server.start()
    job = s.finished(job)
    if job.status == "abandoned":
        assert snapshot(pg, s.db) == s.live and db_props(pg, s.db)["oid"] == s.oid
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
        assert resume(job, request=admin_request("carol")) == "queued"
        s.worker()
        job = s.finished(job)
    if job.status == "succeeded":
        s.assert_restored(stamp)
    else:
        assert job.status in ("failed", "cancelled", "needs_attention"), job.error
        s.assert_old(stamp)

# --- parameters ----------------------------------------------------------------------------
@pytest.mark.parametrize("change,message", [
    ({"mode": "sideways"}, "mode must be online or offline"),
    ({"target": "postgres"}, "cannot be restored over"),
    ({"target": "other_db"}, "is not the managed database"),
    ({"stamp": "2026"}, "is not a UTC timestamp"),
    ({"size": "12"}, "size must be a positive number"),
    ({"sha256": "ABC"}, "sha256 must be 64 lowercase hex digits"),
    ({"extra": 1}, "unknown restore parameters: extra"),
])
def test_bad_parameters_fail_the_preflight_with_a_clear_message_and_change_nothing(scene, change, message):
    s = scene("rbk_params")
    params = s.params(stamp="20261125110000")
    params.update(change)
    job = s.submit(params)
    s.worker()
    job = s.finished(job)
    assert job.status == "failed" and message.lower() in job.error.lower()
    assert statuses(job)["preflight"] == "failed" and statuses(job)["block"] == "skipped"
    s.assert_old("20261125110000")


def test_the_test_hold_is_refused_outside_tests(settings):
    settings.TESTING = False
    with pytest.raises(runbook.Invalid, match="_hold"):
        runbook.validate_params({"target": "hcap", "backup": "b", "path": "/p", "size": 1, "sha256": "0" * 64,
                                 "mode": "online", "stamp": "20261125000000", "_hold": {"at": "load", "key": "k"}})


# --- the portal's own database -------------------------------------------------------------
def test_the_portal_database_briefly_unreachable_still_ends_the_job_consistently(scene, pg):
    """The portal database refuses connections and the worker's sessions are
    ended while the job waits before the check; once it is back, the job ends
    with a status that matches what the target holds."""
    from django.db import connection

    stamp = "20261125120000"
    s = scene("rbk_portal")
    job = s.submit(s.params(stamp=stamp, hold="before:check"))
    worker = s.worker()
    wait_for(s.entered, 120, "the job to reach the check")
    portal = connection.settings_dict["NAME"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        mine = cursor.fetchone()[0]
    connection.close()
    with psycopg.connect(ci(pg), autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{portal}" ALLOW_CONNECTIONS false')
        try:
            ended = admin.execute("SELECT count(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity "
                                  "WHERE datname = %s AND pid <> %s", (portal, mine)).fetchone()[0]
            assert ended >= 1
            # the worker finds its database gone (its next cancel check or heartbeat says so in its log)
            wait_for(lambda: "hcapadmin" in worker_log(worker) and (
                "connection" in worker_log(worker).lower() or "terminat" in worker_log(worker).lower()),
                120, "the worker to notice")
        finally:
            admin.execute(f'ALTER DATABASE "{portal}" ALLOW_CONNECTIONS true')
    s.release()
    job = s.finished(job)
    if job.status == "abandoned":
        # the worker lost its own database in the middle of the job and the
        # sweeper gave the job up: the target is untouched, and the job resumes
        assert snapshot(pg, s.db) == s.live and db_props(pg, s.db)["oid"] == s.oid
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
        redis_connection().delete(locks.lock_key(s.db))
        assert resume(job, request=admin_request("carol")) == "queued"
        s.worker()
        job = s.finished(job)
    if job.status == "succeeded":
        s.assert_restored(stamp)
    else:
        assert job.status in ("failed", "cancelled"), job.error
        s.assert_old(stamp)


# --- the sandbox's managed database ---------------------------------------------------------
def test_the_sandbox_seed_gives_the_managed_database_tens_of_mb_of_realistic_rows(pg, settings, tmp_path):
    """The demo migrations applied by the real node-pg-migrate, then the seed:
    HCAP-shaped rows in every table they create, 30-50 MB in all."""
    from hcapadmin.core.management.commands.sandbox_seed import Command

    pg.psql('DROP DATABASE IF EXISTS "rbk_seed" WITH (FORCE)')
    pg.psql("CREATE DATABASE rbk_seed")
    settings.MANAGED_DATABASE_URL = pg.url("rbk_seed")
    settings.MIGRATIONS_DIR = str(tmp_path / "migrations")
    command = Command()
    command.migrate_hcap()
    command.insert_rows()
    command.insert_realistic_rows()
    with psycopg.connect(ci(pg, "rbk_seed")) as conn:
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        assert 30e6 <= size <= 50e6, size
        counts = dict(conn.execute(
            "SELECT 'applicants', count(*) FROM applicants UNION ALL SELECT 'employer_sites', count(*) FROM "
            "employer_sites UNION ALL SELECT 'employer_expressions', count(*) FROM employer_expressions").fetchall())
        assert counts == {"applicants": 36_500, "employer_sites": 605, "employer_expressions": 8_000}
        body = conn.execute("SELECT body FROM applicants WHERE body ? 'maximusId' ORDER BY id LIMIT 1").fetchone()[0]
        assert {"firstName", "lastName", "emailAddress", "postalCode", "preferredLocation", "crcClear"} <= set(body)
        # distinct, searchable people rather than one repeated filler row
        assert conn.execute("SELECT count(DISTINCT body->>'emailAddress') FROM applicants").fetchone()[0] == 36_000
        assert conn.execute("SELECT count(*) FROM applicants WHERE search @@ to_tsquery('simple', 'sandhu')"
                            ).fetchone()[0] > 500
