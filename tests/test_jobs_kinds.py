"""Job kinds used only by the job tests (imported by them and, with
``jobs_worker --import tests.test_jobs_kinds``, by worker processes)."""

import time

from hcapadmin.jobs import locks
from hcapadmin.jobs.queue import redis_connection
from hcapadmin.jobs.registry import job_kind
from ops.errors import OpsError


def release_key(tag) -> str:
    return f"hcapadmin:test:release:{tag}"


def release(tag) -> None:
    """Let the ``test.hold`` job tagged ``tag`` finish."""
    redis_connection().set(release_key(tag), "1", ex=600)


@job_kind("test.sleep", title="Test sleep", mutating=True, timeout=120, cancellable=True)
def sleep_job(ctx, params):
    seconds = float(params.get("seconds", 0))
    with ctx.step("Sleep"):
        ctx.log(f"sleeping {seconds}s tag={params.get('tag')}")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            ctx.check_cancelled()
            ctx.progress(1 - (deadline - time.monotonic()) / max(seconds, 0.001))
            time.sleep(0.05)
    return {"slept": seconds, "tag": params.get("tag")}


@job_kind("test.readonly", title="Test read-only", mutating=False, timeout=60)
def readonly_job(ctx, params):
    with ctx.step("Look"):
        ctx.log("looking")
    return {"ok": True}


@job_kind("test.fail", title="Test failure", timeout=60)
def failing_job(ctx, params):
    with ctx.step("Prepare"):
        ctx.log("preparing")
    with ctx.step("Break"):
        raise OpsError("the managed database refused: disk full")


@job_kind("test.crash", title="Test crash", timeout=60)
def crashing_job(ctx, params):
    with ctx.step("Divide"):
        return {"x": 1 / 0}


@job_kind("test.timeout", title="Test timeout", timeout=1)
def timeout_job(ctx, params):
    with ctx.step("Too slow"):
        time.sleep(600)  # the 1 s job timeout always comes first
    return {}


@job_kind("test.mutating_quick", title="Test quick change", mutating=True, timeout=120, cancellable=True)
def quick_mutating_job(ctx, params):
    with ctx.step("Change"):
        ctx.log("changed")
    return {"changed": True}


@job_kind("test.mutating_impatient", title="Test impatient change", mutating=True, timeout=2, cancellable=True)
def impatient_mutating_job(ctx, params):
    with ctx.step("Change"):
        ctx.log("changed")
    return {"changed": True}


@job_kind("test.hold", title="Test hold", mutating=True, timeout=600, cancellable=True)
def hold_job(ctx, params):
    """Runs until the test calls ``release(tag)``, calling the job's safe
    point (check_cancelled) all along.  ``drop_lock``: first delete its own
    target lock, as a Redis restart would; ``lock_taken_by``: hand it to
    that job id, as an expiry followed by another job's SET NX would.  ``guard``: seconds after which it
    gives up (a failure guard only)."""
    conn = redis_connection()
    tag = params.get("tag")
    with ctx.step("Hold"):
        ctx.log(f"holding tag={tag}")
        ctx.flush()
        if params.get("drop_lock"):
            conn.delete(locks.lock_key(ctx.target))
        if params.get("lock_taken_by"):  # the lock expired and another job took it
            conn.set(locks.lock_key(ctx.target), locks.owner_value(int(params["lock_taken_by"])))
        deadline = time.monotonic() + float(params.get("guard", 300))
        while not conn.exists(release_key(tag)):
            ctx.check_cancelled()
            if time.monotonic() > deadline:
                raise OpsError(f"test.hold {tag}: not released within its guard")
            time.sleep(0.05)
    return {"tag": tag}


@job_kind("test.migrate_past_limit", title="Test migration past the job's limit", mutating=True, timeout=10)
def migrate_past_limit_job(ctx, params):
    """The real node-pg-migrate up on settings.MIGRATIONS_DIR; once its
    migration runs in PostgreSQL, this job just waits, so the job's own limit
    (RQ's timeout, raised into run_local_up) is what stops it."""
    import psycopg
    from django.conf import settings

    from ops.migrations import runner

    url = settings.MANAGED_DATABASE_URL

    def check():
        with psycopg.connect(url, autocommit=True) as conn:
            running = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s "
                                   "AND query LIKE '%%pg_sleep%%'", [runner.UP_APPLICATION_NAME + "-%"]).fetchone()[0]
        if running:
            ctx.log("the migration is running in PostgreSQL")
            ctx.flush()
            time.sleep(600)  # the job's 10 s limit ends this

    with ctx.step("Run node-pg-migrate up"):
        runner.run_local_up(settings.NODE_PG_MIGRATE, settings.MIGRATIONS_DIR, url, "pgmigrations", "public",
                         on_line=ctx.log, check=check)
    return {}
