"""Job kinds used only by the job tests (imported by them and, with
``jobs_worker --import tests.test_jobs_kinds``, by worker processes)."""

import time

from hcapadmin.jobs.registry import job_kind
from ops.errors import OpsError


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
        time.sleep(5)
    return {}


@job_kind("test.mutating_quick", title="Test quick change", mutating=True, timeout=2, cancellable=True)
def quick_mutating_job(ctx, params):
    with ctx.step("Change"):
        ctx.log("changed")
    return {"changed": True}
