"""What a worker does with one job: ``execute(job_pk)`` is the function RQ
calls.  It takes the target lock for mutating kinds, runs the kind's function
with a ``JobContext``, and records every lifecycle change (with an audit
event) on the Job row.  A heartbeat thread keeps ``heartbeat_at`` fresh and
refreshes the lock; the sweeper (hcapadmin.jobs.lifecycle.sweep) marks jobs
whose heartbeat went stale as ``abandoned``.

A mutating job that loses its lock (Redis restarted or flushed, or the lock
expired because nothing could refresh it) must not go on changing the
database beside whichever job takes the lock next: ``ctx.check_cancelled()``,
the safe point every kind already calls, raises ``JobLockLost`` and the job
fails with a message saying so.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from contextlib import contextmanager

from django.conf import settings
from django.db import close_old_connections, connection, connections
from django.db.models import F, Value
from django.db.models.functions import Concat
from django.utils import timezone

from hcapadmin.jobs import locks
from hcapadmin.jobs.models import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, Job
from hcapadmin.jobs.queue import redis_connection
from hcapadmin.jobs.registry import get_kind
from ops.errors import OpsError

logger = logging.getLogger("hcapadmin.jobs")

MAX_LOG_CHARS = 2_000_000
FLUSH_SECONDS = 0.5
CANCEL_CHECK_SECONDS = 1.0
# The in-process test worker turns this off (see tests/conftest.py run_jobs):
# a second connection cannot see rows of a test's open transaction.
HEARTBEAT_THREAD = True


class JobCancelled(Exception):
    """Raised by ``ctx.check_cancelled()`` when someone cancelled the job."""


class JobLockLost(Exception):
    """Raised by ``ctx.check_cancelled()`` when a mutating job no longer holds
    its target lock."""


def lock_lost_message(target: str) -> str:
    return (f"Stopped: this job lost its lock on {target} (the lock expired or Redis lost it), so another change "
            f"on {target} could start beside it. The job stopped at its next safe point; check the job list for "
            "overlapping changes and what the last step did before trying again.")


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _now():
    return timezone.now()


class JobContext:
    """Handed to a job kind's function.  Only the worker's main thread calls it."""

    def __init__(self, job: Job):
        self.job = job
        self.params = job.params
        self.target = job.target
        self.steps: list[dict] = list(job.steps or [])
        self._log_buffer: list[str] = []
        self._log_size = len(job.log or "")
        self._log_truncated = False
        self._progress = job.progress or 0.0
        self._progress_dirty = False
        self._last_flush = 0.0
        self._last_cancel_check = 0.0
        self._cancelled = False
        self.last_status = job.status  # as last read by is_cancelled()
        # Set by hold_lock() once a mutating job holds its target lock.
        self._lock_redis = None
        self._heartbeat: Heartbeat | None = None
        self._lock_confirmed = 0.0
        self._lock_lost = False

    # -- public API ------------------------------------------------------------
    @contextmanager
    def step(self, name: str):
        entry = {"name": str(name)[:200], "started_at": _now().isoformat(), "finished_at": None, "outcome": "running"}
        self.steps.append(entry)
        self.log(f"== {name}")
        self._save_steps()
        try:
            yield entry
        except JobCancelled:
            self._end_step(entry, "cancelled")
            raise
        except BaseException:
            self._end_step(entry, "failed")
            raise
        else:
            self._end_step(entry, "succeeded")

    def log(self, line: str) -> None:
        text = str(line)
        if not text.endswith("\n"):
            text += "\n"
        if self._log_truncated:
            return
        if self._log_size + len(text) > MAX_LOG_CHARS:
            text = "[log truncated: it reached its size limit; later output is not kept]\n"
            self._log_truncated = True
        self._log_buffer.append(text)
        self._log_size += len(text)
        self._maybe_flush()

    def progress(self, fraction: float) -> None:
        try:
            value = float(fraction)
        except (TypeError, ValueError):
            return
        self._progress = max(0.0, min(1.0, value))
        self._progress_dirty = True
        self._maybe_flush()

    def is_cancelled(self) -> bool:
        if self._cancelled:
            return True
        now = time.monotonic()
        if now - self._last_cancel_check >= CANCEL_CHECK_SECONDS:
            self._last_cancel_check = now
            row = Job.objects.filter(pk=self.job.pk).values("cancel_requested", "status").first()
            self.last_status = row["status"] if row else None
            if row and (row["cancel_requested"] or row["status"] == CANCELLED):
                self._cancelled = True
        return self._cancelled

    def check_cancelled(self) -> None:
        """The safe point kinds call between pieces of work: raises
        JobLockLost when the target lock is gone, JobCancelled on cancel."""
        self.check_lock()
        if self.is_cancelled():
            raise JobCancelled("cancelled on request")

    def hold_lock(self, redis_conn, heartbeat: Heartbeat | None) -> None:
        self._lock_redis = redis_conn
        self._heartbeat = heartbeat
        self._lock_confirmed = time.monotonic()

    def check_lock(self) -> None:
        """Raise JobLockLost when this job held the target lock and no longer
        does.  Asks Redis at most every CANCEL_CHECK_SECONDS; while Redis
        cannot be asked, the lock counts as held until its TTL has run out
        since it was last seen held."""
        if self._lock_redis is None:
            return
        if not self._lock_lost and self._heartbeat is not None and self._heartbeat.lock_lost:
            self._lock_lost = True
        now = time.monotonic()
        if not self._lock_lost and now - self._lock_confirmed >= CANCEL_CHECK_SECONDS:
            try:
                held = locks.holds(self._lock_redis, self.target, self.job.pk)
            except Exception as exc:  # Redis unreachable: cannot tell yet
                logger.warning("job %s: cannot check the lock on %s: %s", self.job.pk, self.target, exc)
                if now - self._lock_confirmed >= locks.ttl():
                    self._lock_lost = True
            else:
                if held:
                    self._lock_confirmed = now
                else:
                    self._lock_lost = True
        if self._lock_lost:
            raise JobLockLost(lock_lost_message(self.target))

    # -- internals ---------------------------------------------------------------
    def _end_step(self, entry: dict, outcome: str) -> None:
        entry["finished_at"] = _now().isoformat()
        entry["outcome"] = outcome
        self._save_steps()

    def _save_steps(self) -> None:
        self.flush()
        Job.objects.filter(pk=self.job.pk).update(steps=self.steps)

    def _maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        updates = {}
        if self._log_buffer:
            chunk = "".join(self._log_buffer)
            self._log_buffer.clear()
            updates["log"] = Concat(F("log"), Value(chunk))
        if self._progress_dirty:
            updates["progress"] = self._progress
            self._progress_dirty = False
        if updates:
            updates["heartbeat_at"] = _now()
            Job.objects.filter(pk=self.job.pk).update(**updates)


class Heartbeat(threading.Thread):
    """Refreshes ``heartbeat_at`` and the target lock every few seconds."""

    def __init__(self, job_pk: int, target: str, redis_conn, interval: float):
        super().__init__(name=f"job-{job_pk}-heartbeat", daemon=True)
        self.job_pk = job_pk
        self.target = target
        self.redis = redis_conn
        self.interval = interval
        self.holds_lock = False
        self.lock_lost = False
        self.db_failures = 0  # counters, for the log and the tests
        self.lock_refreshes = 0
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)

    def run(self) -> None:
        try:
            while not self._stop_event.wait(self.interval):
                self.beat()
        finally:
            connection.close()

    def beat(self) -> None:
        """One beat.  The job row and the lock are refreshed independently:
        the portal database being unreachable must not let the lock expire
        (another job would take it while this one still runs)."""
        try:
            Job.objects.filter(pk=self.job_pk).update(heartbeat_at=_now())
        except Exception as exc:  # keep beating; the sweeper tolerates gaps
            self.db_failures += 1
            logger.warning("job %s heartbeat: updating the job row failed: %s", self.job_pk, exc)
            connection.close()  # a broken connection is replaced at the next beat
        if self.holds_lock and not self.lock_lost:
            try:
                refreshed = locks.refresh(self.redis, self.target, self.job_pk)
            except Exception as exc:  # Redis unreachable: the job's check() decides once the TTL ran out
                logger.warning("job %s heartbeat: refreshing the lock on %s failed: %s", self.job_pk, self.target,
                               exc)
            else:
                if refreshed:
                    self.lock_refreshes += 1
                else:
                    self.lock_lost = True


def _wait_for_lock(ctx: JobContext, job: Job, redis_conn, heartbeat: Heartbeat | None) -> bool:
    """Block until this job holds the target lock.  False if it was cancelled
    meanwhile.  The job stays ``queued`` while it waits; past the job's
    timeout it raises RQ's JobTimeoutException (as RQ's own limit would, for
    the kinds RQ times; runbooks run without it)."""
    from rq.timeouts import JobTimeoutException

    announced = None
    began = time.monotonic()
    while True:
        if locks.try_acquire(redis_conn, job.target, job.pk):
            if heartbeat is not None:
                heartbeat.holds_lock = True
            ctx.hold_lock(redis_conn, heartbeat)
            if announced:
                ctx.log(f"Lock on {job.target} acquired.")
            return True
        holder = locks.holder(redis_conn, job.target)
        if holder != announced and holder is not None:
            ctx.log(f"Waiting: job #{holder} is changing {job.target}; one change per database at a time.")
            ctx.flush()
            announced = holder
        ctx._last_cancel_check = 0.0
        if ctx.is_cancelled():
            return False
        if time.monotonic() - began > job.timeout_seconds:
            raise JobTimeoutException(f"waited longer than {job.timeout_seconds} seconds for the lock")
        Job.objects.filter(pk=job.pk).update(heartbeat_at=_now())
        time.sleep(0.5)


def _usable_connections() -> None:
    """Before and after each job: drop database connections that are broken
    or too old, so that the next query opens a new one.  A connection whose
    server side went away while the worker was idle (the portal database
    restarted, or its backend was terminated) raised nothing yet, so
    ``close_old_connections`` alone keeps it; it is pinged here."""
    close_old_connections()
    for conn in connections.all(initialized_only=True):
        if conn.connection is not None and not conn.in_atomic_block and not conn.is_usable():
            conn.close()


def execute(job_pk: int) -> str:
    """RQ entry point.  Returns the final status (RQ keeps it as its result)."""
    in_test_transaction = connection.in_atomic_block
    if not in_test_transaction:
        _usable_connections()
    try:
        return _execute(job_pk)
    finally:
        if not in_test_transaction:
            _usable_connections()


def _execute(job_pk: int) -> str:
    from rq.timeouts import JobTimeoutException

    job = Job.objects.filter(pk=job_pk).first()
    if job is None:
        logger.warning("job %s: no such row (its transaction rolled back?); skipping", job_pk)
        return "missing"
    if job.status != QUEUED:
        logger.info("job %s is %s, not queued; skipping", job_pk, job.status)
        return job.status
    name = worker_name()
    Job.objects.filter(pk=job.pk).update(worker_name=name, heartbeat_at=_now())
    ctx = JobContext(job)
    try:
        kind = get_kind(job.kind)
    except KeyError:
        job.terminate(FAILED, from_statuses=(QUEUED,), error=f"This worker does not know job kind {job.kind!r}.",
                      reason="unknown kind")
        return FAILED
    redis_conn = redis_connection() if kind.mutating else None
    heartbeat = None
    if HEARTBEAT_THREAD:
        heartbeat = Heartbeat(job.pk, job.target, redis_conn or redis_connection(),
                              float(getattr(settings, "JOB_HEARTBEAT_SECONDS", 5)))
        heartbeat.start()
    holds_lock = False
    try:
        if kind.mutating:
            try:
                holds_lock = _wait_for_lock(ctx, job, redis_conn, heartbeat)
            except JobTimeoutException:
                message = (f"Stopped: waited longer than the job's limit of {kind.timeout} seconds for another "
                           f"change on {job.target} to finish.")
                ctx.log("FAILED: " + message)
                ctx.flush()
                job.terminate(FAILED, from_statuses=(QUEUED,), error=message, reason="timeout waiting for lock")
                return job.status
            if not holds_lock:
                ctx.flush()
                _finish_cancelled(job)
                return job.status
        if not job.start(worker=name):
            return Job.objects.get(pk=job.pk).status
        if job.attempt > 1:
            ctx.log(f"{'Rolling back' if job.runbook.get('mode') == 'rollback' else 'Resuming'} "
                    f"(attempt {job.attempt}) on {name}.")
        else:
            ctx.log(f"Started on {name}.")
        try:
            if kind.is_runbook:
                from hcapadmin.jobs import runbook

                try:
                    return runbook.execute(ctx, job, kind)
                except runbook.JobTakenOver as exc:
                    logger.warning("job %s: %s; this worker stops here", job.pk, exc)
                    return Job.objects.get(pk=job.pk).status
            result = kind.func(ctx, dict(job.params))
        except JobCancelled:
            ctx.log("Cancelled on request.")
            ctx.flush()
            _finish_cancelled(job)
            return job.status
        except JobTimeoutException:
            message = f"Stopped: the job ran longer than its limit of {kind.timeout} seconds."
            return _fail(ctx, job, message, "timeout")
        except JobLockLost as exc:
            logger.error("job %s (%s): lost its lock on %s; stopped", job.pk, job.kind, job.target)
            return _fail(ctx, job, str(exc), "lock lost")
        except OpsError as exc:
            return _fail(ctx, job, str(exc) or type(exc).__name__, "error")
        except Exception as exc:
            logger.error("job %s (%s) crashed:\n%s", job.pk, job.kind, traceback.format_exc())
            return _fail(ctx, job, f"Unexpected error: {type(exc).__name__}: {exc}", "crash")
        if result is not None and not isinstance(result, dict):
            result = {"value": result}
        ctx.progress(1.0)
        ctx.log("Finished.")
        ctx.flush()
        job.terminate(SUCCEEDED, from_statuses=(RUNNING,), result=result)
        return job.status
    finally:
        if heartbeat is not None:
            heartbeat.stop()
            if heartbeat.lock_lost and not ctx._lock_lost:  # lost after the job's last check
                logger.error("job %s: the lock on %s expired while the job ran (worker paused longer than the "
                             "lock TTL?); another mutating job may have started", job.pk, job.target)
                Job.objects.filter(pk=job.pk).update(log=Concat(F("log"), Value(
                    "WARNING: the lock on this database expired while the job ran; check the job list for "
                    "overlapping changes.\n")))
        if holds_lock:
            try:
                locks.release(redis_conn, job.target, job.pk)
            except Exception as exc:  # expires by itself
                logger.warning("job %s: releasing lock failed (%s); it expires by TTL", job.pk, exc)


def _fail(ctx: JobContext, job: Job, message: str, reason: str) -> str:
    ctx.log("FAILED: " + message)
    ctx.flush()
    job.terminate(FAILED, from_statuses=(RUNNING,), error=message, reason=reason, details={"error": message[:500]})
    return job.status


def _finish_cancelled(job: Job) -> None:
    row = Job.objects.filter(pk=job.pk).values("cancelled_by").first() or {}
    job.terminate(CANCELLED, actor=row.get("cancelled_by") or "system", error="Cancelled on request.")
