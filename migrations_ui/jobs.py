"""The "Apply pending migrations" job: back up, then the real `node-pg-migrate up`
where the platform driver runs it."""

from __future__ import annotations

from contextlib import contextmanager

from hcapadmin.backups.jobs import take_backup
from hcapadmin.core.platform import get_driver
from hcapadmin.jobs.registry import job_kind
from migrations_ui import state
from ops.errors import Invalid, OpsError, Timeout
from ops.migrations.report import APPLIED, Report, find_item
from ops.migrations.runner import error_excerpt

KIND = "migrations.apply"


class MigrationFailed(OpsError):
    """node-pg-migrate exited non-zero."""


def check_ready(report: Report, expected: list[str] | None = None) -> list[str]:
    """Names `up` will apply, or Invalid with the reason it must not run."""
    if report.source_error:
        raise Invalid(f"The migration files cannot be read: {report.source_error}")
    if report.database_error:
        raise Invalid(f"The database cannot be read: {report.database_error}")
    if report.load_error:
        raise Invalid(f"`up` would fail: node-pg-migrate cannot load {report.load_error} (unknown file extension).")
    if report.will_refuse:
        raise Invalid(f"`up` would refuse: {report.refusal}. Fix the order in the code first.")
    names = [i.name for i in report.to_apply]
    if not names:
        raise Invalid("Nothing to apply: every migration file is already applied.")
    if expected is not None and list(expected) != names:
        raise Invalid("The pending migrations changed since the page was shown "
                      f"(now: {', '.join(names[:10])}{' …' if len(names) > 10 else ''}). Review them again.")
    return names


@job_kind(KIND, title="Apply pending migrations", mutating=True, timeout=1800, cancellable=False,
          advice="(see the migrations page: a migration may have been partly applied outside a transaction; the "
                 "backup taken at the start of the job can be restored)")
def apply(ctx, params) -> dict:
    expected = params.get("expected")
    with ctx.step("Check what `up` will do"):
        report = state.report()
        names = check_ready(report, expected)
        ctx.log(f"{len(names)} migration(s) to apply: " + ", ".join(names))
    ctx.progress(0.05)
    backup = take_backup(ctx)  # its own step, "Back up database"; a failed backup fails the job here
    ctx.log(f"Backup taken: {_backup_name(backup) or '(name not reported)'}")
    ctx.progress(0.5)
    with ctx.step("Run node-pg-migrate up"), _backup_hint_on_timeout():
        # where the files were listed: on OpenShift, the same server pod
        result = get_driver().migrate_up(report.files, on_line=ctx.log, timeout=1500, check=ctx.check_cancelled)
    ctx.progress(0.9)
    with ctx.step("Refresh the migrations list"):
        after = state.report()
        applied_now = [n for n in names if (item := find_item(after, n)) is not None and item.status == APPLIED]
        ctx.log(f"Now: {after.summary}")
    if result.returncode != 0:
        raise MigrationFailed(f"node-pg-migrate up failed (exit {result.returncode}): {error_excerpt(result.output)}. "
                              f"Applied by this run: {len(applied_now)} of {len(names)}. "
                              "The backup taken before it can be restored if needed.")
    return {"applied": applied_now, "backup": _backup_name(backup), "summary": after.summary}


@contextmanager
def _backup_hint_on_timeout():
    """A run stopped at its limit fails the job with the same advice as a failed run."""
    try:
        yield
    except Timeout as exc:
        raise MigrationFailed(f"{exc}. The backup taken before it can be restored if needed.") from None


def _backup_name(backup):
    if backup is None:
        return None
    if isinstance(backup, (str, int, float)):
        return backup
    if isinstance(backup, dict):
        return backup.get("backup") or backup.get("name") or str(backup)[:200]
    return str(getattr(backup, "name", backup))[:200]
