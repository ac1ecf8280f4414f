"""Job kinds.  A kind is a plain function ``fn(ctx, params) -> dict`` registered
with ``@job_kind``; apps register theirs by importing ``<app>/jobs.py`` from
their ``AppConfig.ready()``.

    @job_kind("backup.manual", title="Manual backup", mutating=True, timeout=3600, cancellable=True)
    def run_manual_backup(ctx, params) -> dict:
        with ctx.step("Dump database"):
            ctx.log("a line"); ctx.progress(0.5); ctx.check_cancelled()
        return {"backup": name}

``mutating=True``: at most one mutating job runs per target database at a time
(see hcapadmin.jobs.locks).  ``timeout``: seconds before the worker stops the
job (it is then marked failed).  ``cancellable``: the job page offers Cancel.

A kind made of named steps with undos (a restore, a deploy) is declared with
``hcapadmin.jobs.runbook.runbook_kind`` instead; its ``steps`` are set here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class JobKind:
    name: str
    func: Callable
    title: str
    mutating: bool = False
    timeout: int = 3600
    cancellable: bool = False
    advice: str = ""  # extra advice shown when a job of this kind is abandoned
    steps: tuple = ()  # runbook kinds: their hcapadmin.jobs.runbook.Step list, in order

    @property
    def is_runbook(self) -> bool:
        return bool(self.steps)


_KINDS: dict[str, JobKind] = {}


def job_kind(name: str, *, title: str = "", mutating: bool = False, timeout: int = 3600, cancellable: bool = False,
             advice: str = "", steps: tuple = ()):
    if not name or len(name) > 100:
        raise ValueError("job kind name must be 1..100 characters")
    if timeout <= 0:
        raise ValueError("timeout must be positive seconds")

    def decorator(func):
        existing = _KINDS.get(name)
        if existing is not None and (existing.func.__module__, existing.func.__qualname__) != (
                func.__module__, func.__qualname__):
            raise ValueError(f"job kind {name!r} is already registered by {existing.func.__module__}")
        _KINDS[name] = JobKind(name, func, title or name, mutating, int(timeout), cancellable, advice, tuple(steps))
        return func

    return decorator


def get_kind(name: str) -> JobKind:
    try:
        return _KINDS[name]
    except KeyError:
        raise KeyError(f"unknown job kind {name!r}") from None


def all_kinds() -> dict[str, JobKind]:
    return dict(sorted(_KINDS.items()))
