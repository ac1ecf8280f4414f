"""Runbook kinds used only by the runbook tests (imported by them and, with
``jobs_worker --import tests.test_runbook_kinds``, by worker processes).

Every step appends ``run:<name>`` / ``undo:<name>`` to a Redis list per test
tag, so a test sees exactly which steps ran, how often and in which order.
Parameters steer them: ``hold`` (a step that waits until the test calls
``release(tag, step)``, calling its safe point all along), ``fail_at``,
``undo_fail``.  Nothing here waits on a clock except the guards."""

import time

from hcapadmin.jobs.queue import redis_connection
from hcapadmin.jobs.runbook import Step, runbook_kind
from ops.errors import OpsError

GUARD_SECONDS = 120  # a failure guard only


def key(tag, what) -> str:
    return f"hcapadmin:test:rb:{tag}:{what}"


def events(tag) -> list[str]:
    return [v.decode() for v in redis_connection().lrange(key(tag, "events"), 0, -1)]


def release(tag, step) -> None:
    redis_connection().set(key(tag, f"release:{step}"), "1", ex=600)


def entered(tag, step) -> int:
    return int(redis_connection().get(key(tag, f"entered:{step}")) or 0)


def saw_cancel(tag) -> str | None:
    value = redis_connection().get(key(tag, "saw_cancel"))
    return value.decode() if value else None


def _hold(sctx, conn, tag, name):
    conn.incr(key(tag, f"entered:{name}"))
    sctx.log(f"holding {name}")
    deadline = time.monotonic() + GUARD_SECONDS
    while not conn.exists(key(tag, f"release:{name}")):
        if sctx.cancel_requested():
            conn.set(key(tag, "saw_cancel"), name)
        sctx.check_cancelled()
        if time.monotonic() > deadline:
            raise OpsError(f"{name}: not released within its guard")
        time.sleep(0.05)


def _run(name):
    def run(sctx, params):
        conn = redis_connection()
        tag = params["tag"]
        conn.rpush(key(tag, "events"), f"run:{name}")
        sctx.record(before=name)  # persisted before the step acts
        if params.get("drop_lock") == name:  # Redis forgot the target lock (restart, flush)
            from hcapadmin.jobs import locks

            conn.delete(locks.lock_key(sctx.target))
        if params.get("hold") == name:
            _hold(sctx, conn, tag, name)
        if params.get("fail_at") == name:
            raise OpsError(f"step {name} broke")
        if params.get("abandon_at") == name:  # the sweeper gives the job up while this worker still runs it
            from hcapadmin.jobs.models import Job

            Job.objects.filter(pk=sctx.job_id).update(status="abandoned")
            sctx.record(after="abandoned")  # the next write of the state finds the job no longer its own
        return {"value": f"{name}-{sctx.runs}"}

    return run


def _undo(name):
    def undo(sctx, params):
        redis_connection().rpush(key(params["tag"], "events"), f"undo:{name}")
        if params.get("undo_fail") == name:
            raise OpsError(f"undo of {name} broke")

    return undo


def step(name, *, cancellable, timeout=GUARD_SECONDS, run=None, undo=True):
    return Step(name, f"Step {name}", run=run or _run(name), undo=_undo(name) if undo else None, timeout=timeout,
                cancellable=cancellable, manual=f"put {name} back by hand")


runbook_kind("test.rb", title="Test runbook", steps=[
    step("alpha", cancellable=True),
    step("bravo", cancellable=False),  # like a rename: never interrupted inside
    step("charlie", cancellable=True),  # like a long load: cancel may interrupt it
])


def _wait_forever(sctx, params):
    """Waits on its safe point until released (never, in the tests): only
    its own 1 s limit ends it."""
    redis_connection().rpush(key(params["tag"], "events"), "run:wait")
    _hold(sctx, redis_connection(), params["tag"], "wait")
    return {}


runbook_kind("test.rb_timeout", title="Test runbook step timeout", steps=[
    step("alpha", cancellable=True),
    step("wait", cancellable=True, timeout=1, run=_wait_forever),
])


def _overrun(sctx, params):
    """A step that cannot be interrupted and takes longer than its limit (by
    its own measure, whatever the machine's speed), calling its safe point
    all along."""
    redis_connection().rpush(key(params["tag"], "events"), "run:rename")
    began = time.monotonic()
    while time.monotonic() - began <= sctx.spec.timeout + 0.2:
        sctx.check_cancelled()  # does nothing in a step that is not cancellable
        time.sleep(0.05)
    return {"renamed": True}


runbook_kind("test.rb_overrun", title="Test runbook step overrun", steps=[
    step("alpha", cancellable=True),
    step("rename", cancellable=False, timeout=1, run=_overrun),
    step("charlie", cancellable=True),
])
