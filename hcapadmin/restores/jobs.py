"""Restore job kinds: ``restore.run`` (submitted when a request's last
approval arrives) and ``restore.discard_previous``.

INTEGRATION POINT.  ``restore.run`` marks the request running, checks that
the backup file is still the approved one (``check_pinned``), then hands the
request to ``runbook_for(req)``.  The runbook engine (hcapadmin/jobs) and the
PostgreSQL steps (ops/restore.py) are built separately; until the lead wires
them here, ``runbook_for`` raises "restore runbook not wired yet", so the job
fails and the request ends ``failed`` with nothing changed.  This kind does
not restore anything yet.

Contract for the wiring: ``runbook_for(ctx, req)`` runs the steps of
``plan_for(req)`` (job step names equal to the plan's ``name`` or ``title``
so the request page shows their status) and returns the report (a dict; put
the kept database's name under ``"pre_restore_database"``).  Raise
``RolledBack`` (or any error) when the restore was undone: the request ends
``failed``; raise ``NeedsAttention`` when it stopped half way.
"""

from __future__ import annotations

import time

from django.conf import settings

from hcapadmin.jobs.registry import job_kind
from hcapadmin.restores.models import FAILED, NEEDS_ATTENTION, SUCCEEDED, RestoreRequest
from hcapadmin.restores.workflow import check_pinned
from ops.errors import Invalid, OpsError


class RunbookNotWired(OpsError):
    """The restore runbook has not been connected to restore requests yet."""


class NeedsAttention(OpsError):
    """The restore stopped part way and could not be undone automatically."""


def runbook_for(ctx, req: RestoreRequest) -> dict:
    """Run the restore runbook for ``req`` (to be implemented with the runbook engine)."""
    raise RunbookNotWired("restore runbook not wired yet: this portal version records and approves restore "
                          "requests but cannot run them; nothing was changed.")


def _request(params) -> RestoreRequest:
    pk = params.get("request")
    if not isinstance(pk, int) or isinstance(pk, bool):
        raise Invalid("restore job without a request id")
    try:
        return RestoreRequest.objects.get(pk=pk)
    except RestoreRequest.DoesNotExist:
        raise Invalid(f"restore request #{pk} does not exist") from None


@job_kind("restore.run", title="Restore database", mutating=True, timeout=12 * 3600,
          advice="(the restore request's page lists each step; a half-done restore leaves "
                 "<db>_restore_<ts> or <db>_pre_restore_<ts> beside the database)")
def run_restore(ctx, params) -> dict:
    req = _request(params)
    if not req.mark_started(ctx.job):
        raise Invalid(f"restore request #{req.pk} is {req.status}, not approved; not starting it")
    try:
        with ctx.step("Check the pinned backup"):
            check_pinned(req)
            ctx.log(f"{req.backup_name}: {req.backup_size} bytes, SHA-256 {req.backup_sha256} as approved")
        started = time.monotonic()
        report = runbook_for(ctx, req) or {}
        elapsed = max(time.monotonic() - started, 1e-3)
    except NeedsAttention as exc:
        req.finish(NEEDS_ATTENTION, error=str(exc))
        raise
    except BaseException as exc:
        req.finish(FAILED, error=str(exc) or type(exc).__name__)
        raise
    mbps = (req.backup_size / 1e6) / elapsed
    req.finish(SUCCEEDED, result=report, measured_mbps=mbps)
    return {"request": req.pk, **report, "measured_mbps": round(mbps, 3)}


@job_kind("restore.discard_previous", title="Discard the pre-restore database", mutating=True, timeout=3600)
def run_discard_previous(ctx, params) -> dict:
    from django.db import transaction

    from hcapadmin.audit.models import record
    from hcapadmin.lib import dburl

    req = _request(params)
    name = params.get("database")
    if not req.previous_database or name != req.previous_database:
        raise Invalid(f"{name!r} is not the kept pre-restore database of request #{req.pk}")
    try:
        from ops import restore as ops_restore
    except ImportError:
        raise RunbookNotWired("ops.restore is not part of this portal version yet; nothing was dropped.") from None
    with ctx.step(f"Drop {name}"):
        result = ops_restore.discard_previous(dburl.to_conninfo(settings.MANAGED_DATABASE_URL), name,
                                              target=req.target, log=ctx.log)
    with transaction.atomic():
        RestoreRequest.objects.filter(pk=req.pk).update(previous_discarded=True)
        record("restore.previous_discarded", actor="system", target=req.target,
               details=req.details(database=name, job=ctx.job.pk, dropped=bool(result.get("dropped"))))
    return {"request": req.pk, **result}
