"""Backup job kinds: manual backup and verification.

``take_backup(ctx)`` runs a backup inside any job (the migrations feature
calls it for its pre-migration backup).  Both kinds are mutating: they hold
the managed database's lock (``hcapadmin.jobs.lifecycle.default_target()``),
so a verification's restore load never overlaps a backup, a migration apply
or a restore.

Both take an optional ``engine`` param: "postgres" (the default, the managed
database) or "mongo" (the log database, ops.logbackups), whose jobs lock
``inventory.log_target()`` instead."""

from __future__ import annotations

from django.db import transaction

from hcapadmin.audit.models import record
from hcapadmin.backups.models import BackupVerification
from hcapadmin.core.platform import get_driver
from hcapadmin.jobs.registry import job_kind
from ops.backups import VerifyFailed
from ops.errors import NotFound
from ops.logbackups import MONGO, parse_engine


def take_backup(ctx, engine: str = "postgres") -> dict:
    """Take one backup now, as a step of the calling job; returns
    {"backup": name or None, "size_bytes": n or None, "database": db}."""
    with ctx.step("Back up database"):
        ctx.check_cancelled()
        if engine == MONGO:
            entry = get_driver().take_log_backup(log=ctx.log, check=ctx.check_cancelled)
        else:
            entry = get_driver().take_backup(log=ctx.log, check=ctx.check_cancelled)
    if entry is None:
        ctx.log("The backup finished; its file name was not reported (see the catalog).")
        return {"backup": None, "size_bytes": None, "database": None}
    return {"backup": entry.name, "size_bytes": entry.size_bytes, "database": entry.database, "kind": entry.kind}


@job_kind("backup.manual", title="Manual backup", mutating=True, timeout=3 * 3600, cancellable=True,
          advice="(an unfinished .sql.gz.in_progress file may be left in the backup folder; it can be deleted)")
def run_manual_backup(ctx, params) -> dict:
    result = take_backup(ctx, parse_engine(params.get("engine")))
    ctx.progress(1.0)
    return result


@job_kind("backup.verify", title="Verify backup", mutating=True, timeout=3 * 3600, cancellable=True,
          advice="(if the worker was killed, a stopped throwaway server folder hcapadmin-verify-* may be left in its "
                 "temporary folder; it can be deleted. The live server is never touched by a verify)")
def run_verify(ctx, params) -> dict:
    name = params.get("name")
    engine = parse_engine(params.get("engine"))
    with ctx.step("Find backup"):
        driver = get_driver()
        entries = {e.name: e for e in (driver.list_log_backups() if engine == MONGO else driver.list_backups())}
        entry = entries.get(name)
        if entry is None or entry.in_progress:
            raise NotFound(f"backup {name} is no longer in the catalog")
        ctx.log(f"{entry.path}: {entry.size_bytes / 1e6:,.1f} MB, taken {entry.created_at:%Y-%m-%d %H:%M:%S} UTC")
    ctx.progress(0.05)
    try:
        if engine == MONGO:
            with ctx.step("Check the log backup"):
                findings = driver.verify_log_backup(entry, log=ctx.log, check=ctx.check_cancelled)
        else:
            with ctx.step("Restore into a throwaway server and check"):
                findings = get_driver().verify_backup(entry, log=ctx.log, check=ctx.check_cancelled)
    except VerifyFailed as exc:
        _record(ctx, entry, False, str(exc), {"engine": engine})
        raise
    details = findings.details
    if details.get("check") == "structural":
        ctx.log("Not restored: " + details.get("not_checked", ""))
        message = "structure checked (gzip, mongodump archive framing); not restored"
    else:
        message = "restored and checked"
    _record(ctx, entry, True, message, details)
    return {"backup": entry.name, "ok": True, **details}


def _record(ctx, entry, ok: bool, message: str, details: dict) -> None:
    with transaction.atomic():
        BackupVerification.objects.create(backup_name=entry.name, database=entry.database, ok=ok, message=message,
                                          details=details, job_id=ctx.job.pk)
        record("backup.verified", actor="system", target=entry.database, outcome="success" if ok else "failure",
               details={"backup": entry.name, "engine": entry.engine, "job": ctx.job.pk, "ok": ok,
                        "message": message[:500]})
