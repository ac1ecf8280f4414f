"""Runbook jobs: a job kind made of named steps, each with ``run`` and
``undo``, declared before it starts (the plan people see), with its state
persisted on the Job row so that another worker can resume it or roll it back
after the first one died.  Restores (and later deploys) are runbooks.

    runbook_kind("restore.database", title="Restore", steps=[
        Step("suspend_cronjobs", "Suspend the CronJobs", run=suspend, undo=resume_cronjobs, timeout=120,
             manual="Set spec.suspend to false on each CronJob listed in this step's data"),
        Step("load", "Load the backup into the staging database", run=load, undo=drop_staging,
             timeout=7200, cancellable=True, manual="DROP DATABASE <staging> (its name is in this step's data)"),
        Step("swap", "Rename staging to the live name", run=swap, undo=swap_back, timeout=300),
    ])

The contract a step's code keeps (docs/jobs.md, "Runbooks"):

* ``run(sctx, params) -> dict | None`` and ``undo(sctx, params)``.  What
  ``run`` returns (and whatever it stored earlier with ``sctx.record``) is the
  step's data: JSON, persisted, readable by later steps and by its undo
  (``sctx.data``, ``sctx.data_of(name)``).  Record a name *before* creating
  the thing it names, so an undo after a crash knows what to look for.
* Idempotent, by checking the world before acting: a step that was running
  when its worker died is run again on resume (``sctx.runs`` > 1), and an undo
  may run after a crash at any point of ``run`` or of an earlier undo.
* Call ``sctx.check_cancelled()`` (or hand it to ops code as ``check``)
  between pieces of work.  In a ``cancellable`` step it raises on cancel, on
  the step's own timeout, and on a lost lock; in a step that is not
  cancellable it does nothing, so nothing interrupts it: it runs to its end
  and the engine acts on the cancel, the timeout or the lost lock right after.
  A step that is not cancellable must bound its own work (statement timeouts).

On failure, cancel or timeout the engine undoes, in reverse order, the steps
that completed and the one that failed (when they have an undo).  An undo
that fails stops the compensation and ends the job ``needs_attention`` with
the state of every step and each remaining step's ``manual`` text.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass
from typing import Callable

from django.utils import timezone

from hcapadmin.jobs.models import (ABANDONED, CANCELLED, FAILED, NEEDS_ATTENTION, ROLLBACK, RUN, RUNNING, SUCCEEDED,
                                   Job)
from hcapadmin.jobs.registry import job_kind
from ops.errors import OpsError

logger = logging.getLogger("hcapadmin.jobs")

# Step statuses.
PENDING, STEP_RUNNING, DONE, STEP_FAILED, UNDONE, UNDO_FAILED, SKIPPED = (
    "pending", "running", "done", "failed", "undone", "undo_failed", "skipped")
STEP_STATUSES = (PENDING, STEP_RUNNING, DONE, STEP_FAILED, UNDONE, UNDO_FAILED, SKIPPED)
UNDO_STATUSES = (UNDONE, UNDO_FAILED, SKIPPED)  # only compensation sets these: no way forward after them
# Phases of the whole runbook: running steps forward, undoing them, finished.
PHASE_RUN, PHASE_UNDO, PHASE_DONE = "run", "undo", "done"


@dataclass(frozen=True)
class Step:
    name: str  # identifier, unique in its runbook (keys the persisted state)
    title: str  # what people read in the plan
    run: Callable
    undo: Callable | None = None
    timeout: int = 600  # seconds; acted on at safe points (see the module docstring)
    cancellable: bool = False  # may a cancel or the timeout interrupt it inside?
    manual: str = ""  # how to undo it by hand, shown when the job needs attention


class StepTimedOut(OpsError):
    """A step ran longer than its own timeout."""


class JobTakenOver(Exception):
    """The job row is no longer this worker's to change (the sweeper marked
    it abandoned, perhaps resumed elsewhere): stop without touching anything."""


def runbook_kind(name: str, *, title: str, steps, mutating: bool = True, advice: str = ""):
    """Register a runbook job kind.  Its job timeout (shown, and the limit on
    waiting for the target lock) is the sum of its steps' timeouts; RQ's own
    time limit is off for it, the engine enforces each step's."""
    steps = tuple(steps)
    if not steps:
        raise ValueError("a runbook needs at least one step")
    names = [s.name for s in steps]
    if len(set(names)) != len(names):
        raise ValueError(f"runbook {name!r}: step names must be unique")
    for step in steps:
        if step.timeout <= 0:
            raise ValueError(f"runbook {name!r}: step {step.name!r} needs a positive timeout")

    def run_runbook(ctx, params):  # never called directly: the runner hands runbooks to execute()
        raise RuntimeError("runbook kinds are run by hcapadmin.jobs.runbook.execute")

    run_runbook.__qualname__ = f"runbook:{name}"
    job_kind(name, title=title, mutating=mutating, timeout=sum(s.timeout for s in steps), cancellable=True,
             advice=advice, steps=steps)(run_runbook)
    return steps


def initial_state(steps) -> dict:
    """The plan, persisted on the Job row at submit: every step pending."""
    return {
        "mode": RUN, "attempt": 1, "phase": PHASE_RUN, "current": None, "reason": "",
        "steps": [{"name": s.name, "title": s.title, "status": PENDING, "data": {}, "runs": 0, "undo_runs": 0,
                   "timeout": s.timeout, "cancellable": s.cancellable, "has_undo": s.undo is not None,
                   "manual": s.manual, "started_at": None, "finished_at": None, "error": ""} for s in steps],
    }


def _now_iso() -> str:
    return timezone.now().isoformat()


class StepContext:
    """What a step's ``run`` and ``undo`` get."""

    def __init__(self, engine: "Engine", spec: Step, entry: dict, undoing: bool):
        self._engine = engine
        self._ctx = engine.ctx
        self.spec = spec
        self.entry = entry
        self.undoing = undoing
        self.target = engine.job.target
        self.deadline = time.monotonic() + spec.timeout
        self.timed_out = False

    @property
    def job_id(self) -> int:
        return self._engine.job.pk

    @property
    def data(self) -> dict:
        """This step's recorded data (what ``run`` recorded or returned)."""
        return self.entry["data"]

    @property
    def runs(self) -> int:
        """1 on a step's first run, more when it is re-run after a crash."""
        return int(self.entry.get("runs", 0))

    def data_of(self, step_name: str) -> dict:
        for entry in self._engine.state["steps"]:
            if entry["name"] == step_name:
                return entry["data"]
        raise KeyError(f"no step {step_name!r} in this runbook")

    def record(self, **values) -> None:
        """Add to this step's data and persist it now (before acting on it)."""
        self.entry["data"].update(values)
        self._engine.save()

    def log(self, line: str) -> None:
        self._ctx.log(line)

    def progress(self, fraction: float) -> None:
        self._ctx.progress(fraction)

    def cancel_requested(self) -> bool:
        """Whether someone asked the job to stop (never raises)."""
        return self._ctx.is_cancelled()

    def check_cancelled(self) -> None:
        """The step's safe point.  Interrupts only a cancellable step: lost
        lock, its timeout, a cancel (a cancel never interrupts an undo)."""
        if time.monotonic() > self.deadline:
            self.timed_out = True
        if not self.spec.cancellable:
            self._ctx.flush()
            return
        self._ctx.check_lock()
        if self._ctx.last_status == ABANDONED:  # the sweeper gave the job up: someone may resume it elsewhere
            raise JobTakenOver(f"job {self._engine.job.pk} was marked abandoned while this worker still ran it")
        if self.timed_out:
            raise StepTimedOut(f"Step “{self.spec.title}” ran longer than its limit of "
                               f"{self.spec.timeout} seconds.")
        if not self.undoing:
            self._ctx.check_cancelled()

    check = check_cancelled


class Engine:
    """Runs one attempt of a runbook job on a worker (``mode`` run or
    rollback), persisting the state after every change."""

    def __init__(self, ctx, job: Job, steps):
        self.ctx = ctx
        self.job = job
        self.steps = tuple(steps)
        self.state = job.runbook or initial_state(self.steps)
        self.attempt = int(self.state.get("attempt", 1))
        planned = [e["name"] for e in self.state["steps"]]
        if planned != [s.name for s in self.steps]:
            raise OpsError(f"This job's plan ({', '.join(planned)}) is not the one this worker knows for "
                           f"{job.kind} ({', '.join(s.name for s in self.steps)}); it cannot be continued here.")

    # -- persistence -------------------------------------------------------
    def save(self) -> None:
        """Persist the state, only while the job is still this attempt's and
        running; otherwise it was taken from this worker."""
        self.ctx.flush()
        if not Job.objects.filter(pk=self.job.pk, status=RUNNING, runbook__attempt=self.attempt).update(
                runbook=self.state, heartbeat_at=timezone.now()):
            raise JobTakenOver(f"job {self.job.pk} is no longer running attempt {self.attempt} here")

    # -- the run -------------------------------------------------------------
    def execute(self) -> str:
        from hcapadmin.jobs.runner import JobCancelled, JobLockLost

        if self.state["mode"] == ROLLBACK:
            who = self.state.get("requested_by") or "system"
            return self.compensate(f"rolled back on request by {who} after the job was abandoned", CANCELLED,
                                   actor=who)
        try:
            self.forward()
        except JobTakenOver:
            raise
        except JobLockLost as exc:
            # Another job may be changing the target now: undoing beside it is
            # not safe either, so a person decides.
            logger.error("job %s (%s): lost its lock on %s; stopped", self.job.pk, self.job.kind, self.job.target)
            return self.needs_attention(str(exc), reason="lock lost")
        except JobCancelled:
            self.ctx.log("Cancelled on request: undoing what was done.")
            row = Job.objects.filter(pk=self.job.pk).values("cancelled_by").first() or {}
            return self.compensate("cancelled on request", CANCELLED, actor=row.get("cancelled_by") or "system")
        except OpsError as exc:
            return self.compensate(str(exc) or type(exc).__name__, FAILED)
        except Exception as exc:
            logger.error("job %s (%s) step crashed:\n%s", self.job.pk, self.job.kind, traceback.format_exc())
            return self.compensate(f"Unexpected error: {type(exc).__name__}: {exc}", FAILED)
        result = {"steps": {e["name"]: e["data"] for e in self.state["steps"]}}
        self.state.update(phase=PHASE_DONE, current=None)
        self.save()
        self.ctx.progress(1.0)
        self.ctx.log("Finished.")
        self.ctx.flush()
        self.job.terminate(SUCCEEDED, from_statuses=(RUNNING,), result=result)
        return self.job.status

    def _boundary(self) -> None:
        """Between steps: the lost lock and a cancel are acted on here."""
        self.ctx.check_lock()
        self.ctx._last_cancel_check = 0.0  # ask the database now, not within the second
        self.ctx.check_cancelled()

    def forward(self) -> None:
        from hcapadmin.jobs.runner import JobCancelled, JobLockLost

        total = len(self.steps)
        for index, (spec, entry) in enumerate(zip(self.steps, self.state["steps"])):
            if entry["status"] == DONE:
                continue
            self._boundary()
            rerun = entry["status"] in (STEP_RUNNING, STEP_FAILED)
            entry.update(status=STEP_RUNNING, runs=int(entry.get("runs", 0)) + 1, started_at=_now_iso(),
                         finished_at=None, error="")
            self.state["current"] = spec.name
            self.save()
            sctx = StepContext(self, spec, entry, undoing=False)
            label = spec.title + (" (run again: its worker died during it)" if rerun else "")
            try:
                with self.ctx.step(label):
                    out = spec.run(sctx, dict(self.job.params))
            except JobTakenOver:
                raise
            except BaseException as exc:
                message = "Cancelled on request." if isinstance(exc, JobCancelled) else (
                    str(exc) or type(exc).__name__)
                entry.update(status=STEP_FAILED, finished_at=_now_iso(), error=message[:2000])
                self.state["phase"] = PHASE_UNDO  # with the failure, so a crash now means "roll back"
                self.save()
                raise
            if out is not None:
                if not isinstance(out, dict):
                    out = {"value": out}
                entry["data"].update(out)
            entry.update(status=DONE, finished_at=_now_iso())
            self.state["current"] = None
            self.save()
            self.ctx.progress((index + 1) / total)
            # A step that could not be interrupted: what arrived meanwhile is acted on now.
            if not spec.cancellable:
                if time.monotonic() > sctx.deadline:
                    self.state["phase"] = PHASE_UNDO
                    self.save()
                    raise StepTimedOut(f"Step “{spec.title}” ran longer than its limit of {spec.timeout} seconds "
                                       "(it cannot be interrupted, so it was let finish).")
                try:
                    self._boundary()
                except (JobCancelled, JobLockLost):
                    self.state["phase"] = PHASE_UNDO
                    self.save()
                    raise

    # -- compensation ----------------------------------------------------------
    def compensate(self, why: str, final: str, *, actor: str = "system") -> str:
        """Undo, in reverse order, every step that ran (done, failed, or cut
        off by a crash) and has an undo; stop at the first undo that fails."""
        self.state.update(phase=PHASE_UNDO, reason=why[:2000])
        self.save()
        self.ctx.log(f"Rolling back: {why}")
        broken = None
        for spec, entry in reversed(list(zip(self.steps, self.state["steps"]))):
            if entry["status"] in (PENDING, SKIPPED, UNDONE):
                continue
            if spec.undo is None:
                if entry["status"] == DONE:
                    self.ctx.log(f"Step “{spec.title}” has no undo; what it did stays.")
                continue
            self.state["current"] = spec.name
            entry["undo_runs"] = int(entry.get("undo_runs", 0)) + 1
            self.save()
            sctx = StepContext(self, spec, entry, undoing=True)
            try:
                with self.ctx.step(f"Undo: {spec.title}"):
                    spec.undo(sctx, dict(self.job.params))
            except JobTakenOver:
                raise
            except Exception as exc:
                text = str(exc) or type(exc).__name__
                if not isinstance(exc, OpsError):
                    logger.error("job %s undo of %s crashed:\n%s", self.job.pk, spec.name, traceback.format_exc())
                    text = f"Unexpected error: {type(exc).__name__}: {exc}"
                entry.update(status=UNDO_FAILED, error=text[:2000], finished_at=_now_iso())
                self.save()
                broken = (spec, text)
                break
            entry.update(status=UNDONE, finished_at=_now_iso())
            self.save()
        if broken is not None:
            spec, text = broken
            return self.needs_attention(f"{why}; then undoing step “{spec.title}” failed: {text}",
                                        reason="undo failed", cause=why)
        for entry in self.state["steps"]:
            if entry["status"] == PENDING:
                entry["status"] = SKIPPED
        self.state.update(phase=PHASE_DONE, current=None)
        self.save()
        undone = [e["title"] for e in reversed(self.state["steps"]) if e["status"] == UNDONE]
        kept = [e["title"] for e in self.state["steps"] if e["status"] == DONE]
        message = why[0].upper() + why[1:] + "."
        if undone:
            message += " Undone: " + ", ".join(f"“{t}”" for t in undone) + "."
        if kept:
            message += " Left as they are (no undo): " + ", ".join(f"“{t}”" for t in kept) + "."
        self.ctx.log(("CANCELLED: " if final == CANCELLED else "FAILED: ") + message)
        self.ctx.flush()
        details = {"undone": [e["name"] for e in reversed(self.state["steps"]) if e["status"] == UNDONE]}
        if final == CANCELLED:
            self.job.terminate(CANCELLED, from_statuses=(RUNNING,), actor=actor, error=message,
                               reason="rolled back" if self.state["mode"] == ROLLBACK else "cancelled",
                               details=details)
        else:
            self.job.terminate(FAILED, from_statuses=(RUNNING,), error=message, reason="step failed",
                               details={**details, "error": why[:500]})
        return self.job.status

    def needs_attention(self, why: str, *, reason: str, cause: str | None = None) -> str:
        """End the job for a person to finish: the exact state of every step
        and, for each one not cleanly undone, how to undo it by hand."""
        self.state.update(phase=PHASE_DONE, current=None, reason=(cause or why)[:2000])
        self.save()
        lines = [f"Needs attention: {why}", "", "State of the steps:"]
        for entry in self.state["steps"]:
            data = f" — recorded: {entry['data']}" if entry["data"] else ""
            lines.append(f"  {entry['title']}: {entry['status']}{data}")
        todo = [(s, e) for s, e in reversed(list(zip(self.steps, self.state["steps"])))
                if e["status"] in (DONE, STEP_FAILED, STEP_RUNNING, UNDO_FAILED)]
        if todo:
            lines += ["", "To do by hand, in this order:"]
            for spec, entry in todo:
                lines.append(f"  {spec.title} ({entry['status']}): {spec.manual or 'no manual steps documented'}")
        message = "\n".join(lines)
        self.ctx.log(message)
        self.ctx.flush()
        self.job.terminate(NEEDS_ATTENTION, from_statuses=(RUNNING,), error=message, reason=reason,
                           details={"state": {e["name"]: e["status"] for e in self.state["steps"]}})
        return self.job.status


def execute(ctx, job: Job, kind) -> str:
    """Run one attempt of runbook job ``job`` (already ``running``)."""
    return Engine(ctx, job, kind.steps).execute()
