"""What a restore request shows and checks: its plan, the pinned backup,
estimates, creation, the periodic upkeep (expiry, a job that ended without
the request hearing of it) and the dashboard's "waiting for your approval".

How a request becomes a restore:

* ``RESTORE_KINDS`` maps the platform driver's name to the runbook job kind
  that restores on it; ``restore_kind()`` is the one place that choice is
  made.  The final approval submits that kind with ``job_params(req)``:
  ``{request, target, backup, path, size, sha256, mode, stamp}``, the
  backup's size and SHA-256 as pinned when the request was made and its path
  as the catalog gives it at approval (the runbook's preflight refuses a file
  whose size or SHA-256 is no longer the pinned one).
* ``plan_for(req)``: the steps of that kind's declaration, as the request
  page and the API show them; ``steps_with_status`` adds each step's status
  from the job's persisted runbook state.
* The runbook marks the request ``running`` in its preflight and
  ``succeeded`` in its report step; every other end (failed, cancelled,
  rolled back, abandoned, needs attention) is mapped by ``refresh(req)``,
  called on every read and by the worker's periodic sweep (``upkeep``).
"""

from __future__ import annotations

import re
from datetime import timezone as dt_timezone

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from hcapadmin.audit.models import record
from hcapadmin.core.platform import get_driver
from hcapadmin.restores.models import (
    APPROVED, FAILED, NEEDS_ATTENTION, PENDING, RUNNING, SUCCEEDED, Conflict, RestoreRequest, expiry_for)
from ops.errors import Invalid, NotFound, OpsError, Unavailable

# The runbook's accepted target names: backup-container's database-name shape,
# short enough that ``<db>_pre_restore_<14 digits>`` fits 63 bytes.
TARGET_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,35}")
REFUSED_TARGETS = ("postgres", "template0", "template1")
REASON_MAX = 2000
TICKET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._#:/-]{0,99}")
COMMENT_MAX = 2000
# Seconds added to every estimate for the steps whose duration does not grow
# with the backup: preflight checks, session ending, renames, report.
FIXED_SECONDS = 60
CUTOVER_SECONDS = 30
RATE_SAMPLES = 5


# The restore runbook of each platform driver (keyed by ``get_driver().name``).
# Each takes the same parameters (``job_params``).
RESTORE_KINDS = {"local": "restore.local", "openshift": "restore.openshift"}


class PinMismatch(OpsError):
    """The backup file is not the one that was approved."""


class RestoreUnavailable(Unavailable):
    """This portal cannot run a restore on its platform (no runbook for it)."""


def restore_kind() -> str:
    """The registered runbook job kind that restores on this portal's
    platform; raises RestoreUnavailable when there is none."""
    from hcapadmin.jobs.registry import get_kind

    platform = get_driver().name
    kind = RESTORE_KINDS.get(platform)
    try:
        if kind is None or not get_kind(kind).is_runbook:
            raise KeyError(kind)
    except KeyError:
        raise RestoreUnavailable(f"This portal version cannot run restores on the {platform} platform (no "
                                 f"{kind or 'restore'} runbook is installed); the request stays pending and "
                                 "nothing was recorded.") from None
    return kind


def job_params(req: RestoreRequest, *, now=None) -> dict:
    """The runbook's parameters for ``req``: what was pinned at the request,
    the file's path from the catalog now, and the stamp that names the
    staging and pre-restore databases.  Raises Conflict when the backup is no
    longer in the catalog."""
    from hcapadmin.backups import inventory as backups

    try:
        item = backups.find(req.backup_name)
    except (NotFound, Invalid):
        raise Conflict(f"The backup {req.backup_name} is no longer in the catalog, so it cannot be restored; "
                       "nothing was recorded.") from None
    stamp = (now or timezone.now()).astimezone(dt_timezone.utc).strftime("%Y%m%d%H%M%S")
    return {"request": req.pk, "target": req.target, "backup": req.backup_name, "path": item.entry.path,
            "size": req.backup_size, "sha256": req.backup_sha256, "mode": req.mode, "stamp": stamp}


# --- validation ----------------------------------------------------------------------
def validate_target(name) -> str:
    if not isinstance(name, str) or not TARGET_RE.fullmatch(name):
        raise Invalid("target: a database name of letters, digits and underscores, starting with a letter or "
                      "underscore, at most 36 characters")
    if name in REFUSED_TARGETS:
        raise Invalid(f"target: {name} cannot be restored over")
    own = settings.DATABASES["default"].get("NAME")
    if name == own:
        raise Invalid("target: that is the portal's own database")
    return name


def validate_text(value, field: str, *, required: bool, limit: int) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise Invalid(f"{field}: must be text")
    value = value.strip()
    if "\x00" in value:
        raise Invalid(f"{field}: must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid(f"{field}: not valid Unicode text") from None
    if required and not value:
        raise Invalid(f"{field}: required")
    if len(value) > limit:
        raise Invalid(f"{field}: at most {limit} characters")
    return value


def validate_ticket(value) -> str:
    value = validate_text(value, "ticket", required=False, limit=100)
    if value and not TICKET_RE.fullmatch(value):
        raise Invalid("ticket: letters, digits and . _ # : / - only (e.g. HCAP-1234)")
    return value


# --- the pinned backup -----------------------------------------------------------------
def pin_backup(entry) -> dict:
    """{"size": bytes, "sha256": hex} of a catalog entry, read now where the
    file lives (the platform driver streams it locally or runs sha256sum in
    the backup pod).  Raises NotFound when the file is gone, Unavailable when
    it cannot be read."""
    if getattr(entry, "engine", "postgres") != "postgres":
        raise Invalid("only PostgreSQL backups can be restored by the portal")
    return {"size": entry.size_bytes, "sha256": get_driver().backup_checksum(entry)}


def check_pinned(req: RestoreRequest) -> dict:
    """The backup file as it is now must be the one that was approved (same
    name in the catalog, same size, same SHA-256); raises PinMismatch."""
    from hcapadmin.backups import inventory as backups

    try:
        item = backups.find(req.backup_name)
    except (NotFound, Invalid):
        raise PinMismatch(f"The approved backup {req.backup_name} is no longer in the catalog; nothing was "
                          "changed.") from None
    if item.entry.size_bytes != req.backup_size:
        raise PinMismatch(f"The backup {req.backup_name} changed since it was approved (size "
                          f"{item.entry.size_bytes} bytes, approved {req.backup_size}); nothing was changed.")
    try:
        now = pin_backup(item.entry)
    except NotFound:
        raise PinMismatch(f"The approved backup {req.backup_name} is gone; nothing was changed.") from None
    if now["size"] != req.backup_size or now["sha256"] != req.backup_sha256:
        raise PinMismatch(f"The backup {req.backup_name} changed since it was approved (its SHA-256 or size "
                          "differs); nothing was changed.")
    return now


# --- plan and estimates --------------------------------------------------------------------
# What each step of the restore runbooks does, in plain words (by step name).
STEP_DETAILS = {
    "preflight": "Check that the backup file is the approved one (size and SHA-256), that {db} exists and that "
                 "there is room for the staging copy and the safety backup.",
    "block": "Offline mode: from here on, clients cannot connect to {db}.",
    "safety_backup": "Take a fresh backup of {db} as it is now (kept in the catalog, labelled).",
    "load": "Create {db}_restore_<ts> beside the live database and load the backup into it.",
    "check": "Compare every table's row count with the backup; give staging {db}'s owner, privileges and "
             "settings.",
    "cutover": "Block connections to {db}, end its sessions, rename {db} to {db}_pre_restore_<ts>, rename "
               "{db}_restore_<ts> to {db}, allow connections.",
    "report": "Record the downtime, step durations and row counts.",
}


def plan_for(req: RestoreRequest) -> list[dict]:
    """The steps of the restore, in order: [{"name", "title", "detail"}],
    from the declaration of this platform's restore runbook (empty when the
    portal has none)."""
    from hcapadmin.jobs.registry import get_kind

    try:
        steps = get_kind(restore_kind()).steps
    except (RestoreUnavailable, KeyError):
        return []
    out = []
    for step in steps:
        detail = STEP_DETAILS.get(step.name, "").format(db=req.target)
        if step.name == "block" and req.mode != "offline":
            detail = "Online mode: skipped; clients keep working until the cut-over."
        out.append({"name": step.name, "title": step.title, "detail": detail})
    return out


def mode_statement(mode: str) -> str:
    if mode == "offline":
        return ("Offline: clients are blocked from the safety backup on (step 2) until the cut-over ends, so no "
                "write is lost; the service is down for the whole restore.")
    return ("Online: the service keeps running until the cut-over. Writes made during steps 2-4 (safety backup, "
            "load, check) go to the current database and stay in the pre-restore database after the cut-over; "
            "they are not in the restored one.")


def restore_rate() -> tuple[float, str]:
    """(MB/s, where it comes from): the mean of the last measured restores,
    else HCAPADMIN_RESTORE_DEFAULT_MBPS."""
    rates = list(RestoreRequest.objects.filter(status=SUCCEEDED, measured_mbps__gt=0)
                 .order_by("-finished_at").values_list("measured_mbps", flat=True)[:RATE_SAMPLES])
    if rates:
        return sum(rates) / len(rates), f"measured on the last {len(rates)} restore{'s' if len(rates) > 1 else ''}"
    return float(settings.RESTORE_DEFAULT_MBPS), "default (HCAPADMIN_RESTORE_DEFAULT_MBPS); no restore measured yet"


def estimate(size_bytes: int, mode: str, rate: tuple[float, str] | None = None) -> dict:
    """Time and downtime estimates in seconds.  Loading and the safety backup
    each move about the backup's size at the rate; the rest is fixed."""
    rate, source = rate or restore_rate()
    transfer = (size_bytes / 1e6) / rate
    total = 2 * transfer + FIXED_SECONDS
    downtime = total if mode == "offline" else CUTOVER_SECONDS
    return {"rate_mbps": round(rate, 2), "rate_source": source, "total_seconds": round(total),
            "downtime_seconds": round(downtime)}


def target_state(name: str) -> dict:
    """{"exists": True|False|None, "size_bytes": int|None} from the platform
    driver; None means it could not be asked (shown as unknown)."""
    state = {"exists": None, "size_bytes": None}
    try:
        state["size_bytes"] = get_driver().database_size(name)
        state["exists"] = True
    except NotFound:
        state["exists"] = False
    except OpsError:
        pass
    return state


# --- creating ------------------------------------------------------------------------------
def create_request(*, request, backup: str, target: str, mode: str, reason: str, ticket: str = "",
                   acknowledge_unverified: bool = False) -> RestoreRequest:
    """Validate, pin the backup and write the request with its audit event.
    Raises Invalid (400), NotFound (404), Unavailable (503); PinMismatch never."""
    from hcapadmin.backups import inventory as backups

    if mode not in ("online", "offline"):
        raise Invalid("mode: online or offline")
    target = validate_target(target)
    reason = validate_text(reason, "reason", required=True, limit=REASON_MAX)
    ticket = validate_ticket(ticket)
    if not isinstance(acknowledge_unverified, bool):
        raise Invalid("acknowledge_unverified: true or false")
    item = backups.find(backup)
    verified = None if item.verification is None else bool(item.verification.ok)
    if verified is not True and not acknowledge_unverified:
        what = "has never been verified" if verified is None else "failed its last verification"
        raise Invalid(f"This backup {what}: acknowledge that explicitly (acknowledge_unverified) to request "
                      "its restore.")
    try:
        pinned = pin_backup(item.entry)
    except NotFound as exc:
        raise Conflict(f"The backup changed while the request was being made ({exc}); try again.") from None
    principal = request.principal
    now = timezone.now()
    with transaction.atomic():
        req = RestoreRequest.objects.create(
            backup_name=item.entry.name, backup_database=item.entry.database,
            backup_created_at=item.entry.created_at, backup_size=pinned["size"], backup_sha256=pinned["sha256"],
            backup_verified=verified, acknowledge_unverified=bool(acknowledge_unverified and verified is not True),
            target=target, mode=mode, reason=reason, ticket=ticket, requested_by=principal.name,
            requested_groups=list(principal.groups), approvals_required=int(settings.RESTORE_APPROVALS),
            created_at=now, expires_at=expiry_for(now),
        )
        record("restore.requested", request=request, target=target, details=req.details(
            sha256=req.backup_sha256, size=req.backup_size, reason=reason[:500], ticket=ticket,
            verified=verified, acknowledge_unverified=req.acknowledge_unverified,
            approvals_required=req.approvals_required, expires_at=req.expires_at.isoformat()))
    return req


# --- expiry and job state ------------------------------------------------------------------
def expire_due(now=None) -> list[int]:
    """The sweep: expire every pending request past its deadline (each audited once)."""
    now = now or timezone.now()
    expired = []
    for req in RestoreRequest.objects.filter(status=PENDING, expires_at__lte=now):
        if req.expire(now):
            expired.append(req.pk)
    return expired


def refresh(req: RestoreRequest) -> RestoreRequest:
    """Lazy upkeep on read: expiry, and the end of the request's job mapped
    onto the request when the runbook did not record it itself: failed or
    cancelled (its steps were undone) -> ``failed``; abandoned (its worker
    died: an admin resumes or rolls it back) or needs attention ->
    ``needs_attention``; succeeded -> ``succeeded``.  A request left
    ``needs_attention`` by an abandoned job follows the job's end once it
    was resumed or rolled back."""
    from hcapadmin.jobs import models as jobs

    req.expire_if_due()
    if req.status not in (APPROVED, RUNNING, NEEDS_ATTENTION) or req.job_id is None:
        return req
    job = jobs.Job.objects.get(pk=req.job_id)
    error = job.error or f"job #{job.pk} {job.status}"
    if job.status in (jobs.FAILED, jobs.CANCELLED):
        req.finish(FAILED, error=error)
    elif job.status in (jobs.ABANDONED, jobs.NEEDS_ATTENTION) and req.status != NEEDS_ATTENTION:
        req.finish(NEEDS_ATTENTION, error=error)
    elif job.status == jobs.SUCCEEDED:
        report = ((job.result or {}).get("steps") or {}).get("report") or {}
        req.finish(SUCCEEDED, result=result_of(report), measured_mbps=measured_rate(req, job.finished_at))
    return req


def result_of(report: dict) -> dict:
    """The request's record of a finished restore: the runbook's report with
    the kept database under ``pre_restore_database``."""
    return {**report, "pre_restore_database": report.get("pre_restore")}


def measured_rate(req: RestoreRequest, finished_at=None) -> float | None:
    """MB of compressed backup restored per second, from the request's
    start to ``finished_at`` (now by default)."""
    if req.started_at is None:
        return None
    seconds = ((finished_at or timezone.now()) - req.started_at).total_seconds()
    return (req.backup_size / 1e6) / max(seconds, 1e-3)


def upkeep(now=None) -> dict:
    """What the worker's periodic sweep does for restore requests: expire the
    due ones and map the ends of jobs no reader has seen yet (each change
    audited once)."""
    expired = expire_due(now)
    settled = []
    for req in RestoreRequest.objects.filter(status__in=(APPROVED, RUNNING, NEEDS_ATTENTION), job__isnull=False,
                                             job__finished_at__isnull=False):
        before = req.status
        if refresh(req).status != before:
            settled.append(req.pk)
    return {"expired": expired, "settled": settled}


def waiting_for(principal) -> list[RestoreRequest]:
    """Pending requests this principal may sign off (not their own, not yet
    approved by them), oldest first; empty for non-approvers."""
    if principal is None or not principal.has_perm("approve"):
        return []
    expire_due()
    return list(RestoreRequest.objects.filter(status=PENDING).exclude(requested_by=principal.name)
                .exclude(decisions__approver=principal.name).order_by("created_at", "id")[:20])


def dashboard_context(principal) -> dict:
    """What templates/restores/_dashboard.html needs (one call from the dashboard)."""
    try:
        return {"restores_waiting": waiting_for(principal), "restores_may_approve": bool(
            principal and principal.has_perm("approve"))}
    except Exception:  # the dashboard renders even if this part fails
        return {"restores_waiting": [], "restores_may_approve": False}


# --- API shape -------------------------------------------------------------------------------
def steps_with_status(req: RestoreRequest) -> list[dict]:
    """The plan's steps with their status from the job's runbook state
    (``pending`` before the job runs)."""
    state = {}
    if req.job_id:
        for entry in (req.job.runbook or {}).get("steps", []):
            state[entry.get("name")] = entry
    out = []
    for step in plan_for(req):
        entry = state.get(step["name"], {})
        out.append({**step, "status": entry.get("status", "pending"), "started_at": entry.get("started_at"),
                    "finished_at": entry.get("finished_at"), "error": entry.get("error") or ""})
    return out


def report_of(job) -> dict | None:
    """The restore's report (the runbook's report step, with the kept
    database under ``pre_restore_database``); None until it has one."""
    report = ((job.result or {}).get("steps") or {}).get("report") if job is not None else None
    return result_of(report) if report else None


def as_api(req: RestoreRequest, rate: tuple[float, str] | None = None) -> dict:
    job = req.job if req.job_id else None
    return {
        "id": req.pk,
        "status": req.status,
        "backup": {"name": req.backup_name, "database": req.backup_database,
                   "created_at": req.backup_created_at.isoformat(), "size_bytes": req.backup_size,
                   "sha256": req.backup_sha256, "verified": req.backup_verified},
        "acknowledge_unverified": req.acknowledge_unverified,
        "target": req.target,
        "mode": req.mode,
        "reason": req.reason,
        "ticket": req.ticket,
        "requested_by": req.requested_by,
        "created_at": req.created_at.isoformat(),
        "expires_at": req.expires_at.isoformat(),
        "approvals_required": req.approvals_required,
        "approvals": [{"by": d.approver, "decision": d.decision, "comment": d.comment,
                       "at": d.created_at.isoformat()} for d in req.decisions.all()],
        "job": req.job_id,
        "steps": steps_with_status(req),
        "estimate": estimate(req.backup_size, req.mode, rate),
        "report": report_of(job),
        "error": (job.error or None) if job is not None else None,
        "previous_database": req.previous_database or None,
        "previous_discarded": req.previous_discarded,
        "discard_job": req.discard_job_id,
    }
