"""Who may reach every named URL.  tests/test_access.py requests each entry
as anonymous and as each role and checks the status; it also fails when a
named URL has no entry here, so a new view cannot ship without one.

Entry(method, path, expect, data=None, setup=None):
  expect: {"anonymous": status, "viewer": status, ...} (use the helpers)
  data: form/JSON body for POSTs (choose one that proves the permission
        check passed without doing heavy work, e.g. a 400 for bad input)
  setup: optional callable(db) -> dict of format values for the path,
         e.g. lambda: {"id": make_job().pk} with path "/jobs/{id}/"
"""

from __future__ import annotations

from dataclasses import dataclass, field

ROLES = ("anonymous", "viewer", "admin", "approver", "auditor")


@dataclass
class Entry:
    method: str
    path: str
    expect: dict
    data: dict | None = None
    json: bool = False
    setup: object = None
    note: str = field(default="")


def page(*allowed, ok=200, denied=403):
    """A page: anonymous is redirected to the login page (302)."""
    return {"anonymous": 302, **{r: (ok if r in allowed else denied) for r in ROLES[1:]}}


def api(*allowed, ok=200, denied=403):
    """An API endpoint: anonymous gets 401."""
    return {"anonymous": 401, **{r: (ok if r in allowed else denied) for r in ROLES[1:]}}


def everyone(status=200):
    return {r: status for r in ROLES}


ALL = ("viewer", "admin", "approver", "auditor")


def _audit_event() -> int:  # issue 3
    from hcapadmin.audit.models import record

    return record("test.access", actor="access-table", target="x").pk

ACCESS: dict[str, Entry] = {
    # --- core (foundation) ---
    "healthz": Entry("GET", "/healthz", everyone(200)),
    "readyz": Entry("GET", "/readyz", everyone(200)),
    "dashboard": Entry("GET", "/", page(*ALL)),
    # --- accounts and audit (issue 3) ---
    "login": Entry("GET", "/login/", everyone(200)),
    "logout": Entry("POST", "/logout/", everyone(302)),
    "audit_list": Entry("GET", "/audit/", page("auditor")),
    "audit_detail": Entry("GET", "/audit/{id}/", page("auditor"), setup=lambda: {"id": _audit_event()}),
    "audit_export_csv": Entry("GET", "/audit/export.csv", page("auditor")),
    "audit_export_json": Entry("GET", "/audit/export.json", page("auditor")),
    "api_audit": Entry("GET", "/api/v1/audit", api("auditor")),
    # --- jobs and backups (issue 4) ---
    "jobs_list": Entry("GET", "/jobs/", page(*ALL)),
    "job_detail": Entry("GET", "/jobs/{id}/", page(*ALL), setup=lambda: {"id": _finished_job()}),
    "job_live": Entry("GET", "/jobs/{id}/live/", page(*ALL), setup=lambda: {"id": _finished_job()}),
    # cancelling a finished job: 400 proves the permission check passed, nothing changes
    "job_cancel": Entry("POST", "/jobs/{id}/cancel/", page("admin", ok=400), data={},
                        setup=lambda: {"id": _finished_job()}),
    # resuming or rolling back a finished (not abandoned runbook) job: 400, nothing changes
    "job_resume": Entry("POST", "/jobs/{id}/resume/", page("admin", ok=400), data={},
                        setup=lambda: {"id": _finished_job()}),
    "job_rollback": Entry("POST", "/jobs/{id}/rollback/", page("admin", ok=400), data={},
                          setup=lambda: {"id": _finished_job()}),
    "api_job": Entry("GET", "/api/v1/jobs/{id}", api(*ALL), setup=lambda: {"id": _finished_job()}),
    "backups_list": Entry("GET", "/backups/", page(*ALL)),
    # no confirm=yes: 400, nothing is queued
    "backup_run": Entry("POST", "/backups/run/", page("admin", ok=400), data={}),
    # a path instead of a catalog name: 400
    "backup_verify": Entry("POST", "/backups/verify/", page("admin", ok=400), data={"name": "../../etc/passwd"}),
    "api_backups": Entry("GET", "/api/v1/backups", api(*ALL)),
    # POST on the same URL needs "operate"; an unknown field -> 400, nothing is queued
    "api_backups_create": Entry("POST", "/api/v1/backups", api("admin", ok=400), data={"bogus": 1}, json=True),
    "api_backup_verify": Entry("POST", "/api/v1/backups/verify", api("admin", ok=400), data={"name": "x;rm -rf /"},
                               json=True),
    # --- logs (issue 5) ---
    "logs": Entry("GET", "/logs/?range=15m", page("viewer", "admin")),
    "logs-histogram": Entry("GET", "/logs/histogram?range=15m", page("viewer", "admin")),
    "logs-follow": Entry("GET", "/logs/follow?range=15m&follow=1", page("viewer", "admin")),
    "log-detail": Entry("GET", "/logs/entry/{id}/", page("viewer", "admin"), setup=lambda: _log_entry()),
    # Allowed: a bad format is refused with 400 before any query runs (and audited).
    "logs-export": Entry("GET", "/logs/export?format=xml&range=15m", page("admin", ok=400)),
    "api-logs": Entry("GET", "/api/v1/logs?limit=1", api("viewer", "admin")),
    # --- migrations (issue 6) ---
    "migrations": Entry("GET", "/migrations/", page(*ALL)),
    "migration_detail": Entry("GET", "/migrations/{name}/", page(*ALL), setup=lambda: _migration_file()),
    # no "confirm" field: 400 proves the permission check passed, nothing is queued
    "migrations_apply": Entry("POST", "/migrations/apply/", page("admin", ok=400), data={}),
    "api_migrations": Entry("GET", "/api/v1/migrations", api(*ALL)),
    # --- restore requests ---
    "restores": Entry("GET", "/restores/", page(*ALL)),
    # a path instead of a catalog name: 400
    "restore_new": Entry("GET", "/restores/new/?backup=../../etc/passwd", page("admin", ok=400)),
    "restore_detail": Entry("GET", "/restores/{id}/", page(*ALL), setup=lambda: {"id": _restore_request()}),
    # no typed confirmation / no comment / no confirm: 400 proves the permission check passed, nothing changes
    "restore_approve": Entry("POST", "/restores/{id}/approve/", page("approver", ok=400), data={},
                             setup=lambda: {"id": _restore_request()}),
    "restore_reject": Entry("POST", "/restores/{id}/reject/", page("approver", ok=400), data={},
                            setup=lambda: {"id": _restore_request()}),
    "restore_cancel": Entry("POST", "/restores/{id}/cancel/", page("admin", ok=400), data={},
                            setup=lambda: {"id": _restore_request()}),
    "restore_discard": Entry("POST", "/restores/{id}/discard-previous/", page("admin", ok=400), data={},
                             setup=lambda: {"id": _restore_request()}),
    "api_restores": Entry("GET", "/api/v1/restores", api(*ALL)),
    # POST on the same URL needs "operate"; an unknown field -> 400, nothing is written
    "api_restores_create": Entry("POST", "/api/v1/restores", api("admin", ok=400), data={"bogus": 1}, json=True),
    "api_restore": Entry("GET", "/api/v1/restores/{id}", api(*ALL), setup=lambda: {"id": _restore_request()}),
    "api_restore_approve": Entry("POST", "/api/v1/restores/{id}/approve", api("approver", ok=400),
                                 data={"comment": 5}, json=True, setup=lambda: {"id": _restore_request()}),
    "api_restore_reject": Entry("POST", "/api/v1/restores/{id}/reject", api("approver", ok=400), data={},
                                json=True, setup=lambda: {"id": _restore_request()}),
    # the requester (someone else here) or an admin
    "api_restore_cancel": Entry("POST", "/api/v1/restores/{id}/cancel", api("admin", ok=400), data={"comment": 5},
                                json=True, setup=lambda: {"id": _restore_request()}),
    "api_restore_discard": Entry("POST", "/api/v1/restores/{id}/discard-previous", api("admin", ok=400),
                                 data={"confirm": 5}, json=True, setup=lambda: {"id": _restore_request()}),
    # --- deploys (previews, confirm, approve) ---
    "deploys": Entry("GET", "/deploys/", page(*ALL)),
    "deploy_new": Entry("GET", "/deploys/new/db-prep/", page("admin")),
    "deploy_detail": Entry("GET", "/deploys/{id}/", page(*ALL), setup=lambda: {"id": _deploy_preview()}),
    # no typed namespace: 400 proves the permission check passed, nothing is confirmed
    "deploy_confirm": Entry("POST", "/deploys/{id}/confirm/", page("admin", ok=400), data={},
                            setup=lambda: {"id": _deploy_preview()}),
    "deploy_approve": Entry("POST", "/deploys/{id}/approve/", page("approver", ok=400), data={},
                            setup=lambda: {"id": _deploy_preview()}),
    # not a rollout: 400, nothing previewed
    "deploy_rollback": Entry("POST", "/deploys/{id}/rollback/", page("admin", ok=400), data={},
                             setup=lambda: {"id": _deploy_preview()}),
    "api_deploy_preview": Entry("POST", "/api/v1/deploys/preview", api("admin", ok=400), data={"bogus": 1},
                                json=True),
    "api_deploys": Entry("POST", "/api/v1/deploys", api("admin", ok=400), data={"preview": "1"}, json=True),
    "api_deploy": Entry("GET", "/api/v1/deploys/{id}", api(*ALL), setup=lambda: {"id": _deploy_preview()}),
    # the namespace not typed: 400 proves the permission check passed, nothing is approved
    "api_deploy_approve": Entry("POST", "/api/v1/deploys/{id}/approve", api("approver", ok=400),
                                data={"confirm": 5}, json=True, setup=lambda: {"id": _deploy_preview()}),
}


def _restore_request() -> int:
    """A pending restore request by someone who is none of the test roles."""
    from datetime import timedelta

    from django.utils import timezone

    from hcapadmin.restores.models import RestoreRequest

    now = timezone.now()
    return RestoreRequest.objects.create(
        backup_name="hcap-patroni-hcap_2026-01-01_00-00-00.sql.gz", backup_database="hcap", backup_created_at=now,
        backup_size=10, backup_sha256="0" * 64, backup_verified=True, target="hcap", mode="online",
        reason="access check", requested_by="someone-else", expires_at=now + timedelta(hours=1)).pk


def _migration_file() -> dict:
    """A migration file in the configured folder (for the migrations detail page)."""
    from pathlib import Path

    from django.conf import settings

    name = "1590000000000_access-check"
    folder = Path(settings.MIGRATIONS_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.js").write_text("exports.up = (pgm) => {};\nexports.down = (pgm) => {};\n")
    return {"name": name}


def _finished_job() -> int:
    """A finished (succeeded) job row, for the job pages (issue 4)."""
    from django.utils import timezone

    from hcapadmin.jobs.models import Job, params_key

    now = timezone.now()
    return Job.objects.create(kind="backup.manual", title="Manual backup", params={}, target="hcap",
                              params_key=params_key("backup.manual", {"access": now.isoformat()}, "hcap"),
                              status="succeeded", requested_by="admin", started_at=now, finished_at=now,
                              steps=[{"name": "Back up database", "started_at": now.isoformat(),
                                      "finished_at": now.isoformat(), "outcome": "succeeded"}],
                              log="done\n", result={"backup": "hcap-patroni-hcap_2026-01-01_00-00-00.sql.gz"}).pk


def _log_entry() -> dict:
    """A winston-shaped document in the default log source (issue 5)."""
    from datetime import datetime, timezone

    from hcapadmin.logbrowser import mongo

    _, coll = mongo.collection(None)
    result = coll.insert_one({"timestamp": datetime.now(timezone.utc), "level": "info", "message": "access test"})
    return {"id": str(result.inserted_id)}


def _deploy_preview() -> int:
    from hcapadmin.deploys.models import Preview

    return Preview.objects.create(kind="db-prep", target_namespace="hcap-dev", tools_namespace="hcap-tools",
                                  plan={"items": [], "warnings": []}, created_by="someone-else").pk
