"""The backup catalog as the pages and the API see it."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from hcapadmin.backups.models import BackupVerification
from hcapadmin.core.platform import get_driver
from ops.backups import BackupEntry, parse_name
from ops.errors import Invalid, NotFound, OpsError
from ops.logbackups import ENGINE_LABELS, MONGO, POSTGRES, engine_warnings


@dataclass
class CatalogItem:
    entry: BackupEntry
    verification: BackupVerification | None

    def __getattr__(self, item):
        return getattr(self.entry, item)

    @property
    def age_seconds(self) -> float:
        return max(0.0, (timezone.now() - self.entry.created_at).total_seconds())

    @property
    def stale(self) -> bool:
        return self.age_seconds > settings.BACKUP_STALE_HOURS * 3600

    def as_api(self) -> dict:
        v = self.verification
        return {
            "name": self.entry.name,
            "engine": self.entry.engine,
            "database": self.entry.database,
            "kind": self.entry.kind,
            "created_at": self.entry.created_at.isoformat(),
            "size_bytes": self.entry.size_bytes,
            "in_progress": self.entry.in_progress,
            "verified": None if v is None else {"ok": v.ok, "at": v.verified_at.isoformat(), "message": v.message},
        }


def latest_verifications(names) -> dict[str, BackupVerification]:
    found: dict[str, BackupVerification] = {}
    for v in BackupVerification.objects.filter(backup_name__in=list(names)).order_by("backup_name", "-verified_at",
                                                                                         "-id"):
        found.setdefault(v.backup_name, v)
    return found


def catalog(errors: list | None = None) -> list[CatalogItem]:
    """Every backup the platform driver sees, newest first, with its latest
    verification: the managed PostgreSQL's and the log database's (MongoDB).
    When the log backups cannot be listed and ``errors`` is a list, the
    message is appended to it and the PostgreSQL backups are still returned;
    otherwise the OpsError propagates."""
    driver = get_driver()
    entries = driver.list_backups()
    try:
        entries = entries + driver.list_log_backups()
    except OpsError as exc:
        if errors is None:
            raise
        errors.append(f"the log database's backups cannot be listed: {exc}")
    entries.sort(key=lambda e: (e.created_at, e.name), reverse=True)
    verified = latest_verifications(e.name for e in entries)
    return [CatalogItem(e, verified.get(e.name)) for e in entries]


def find(name, *, completed: bool = True, engine: str | None = None) -> CatalogItem:
    """The catalog item named exactly ``name`` (of ``engine`` when given).
    Anything else (a path, ``..``, shell metacharacters, a well-formed name
    that is not in the catalog) is refused: Invalid for malformed input,
    NotFound for an unknown name."""
    if not isinstance(name, str) or parse_name(name) is None:
        raise Invalid("not a backup name (expected <host>-<database>_YYYY-MM-DD_HH-MM-SS.sql.gz)")
    found = [item for item in catalog() if item.entry.name == name and engine in (None, item.entry.engine)]
    if len(found) > 1:
        raise Invalid(f"{name} names both a PostgreSQL and a MongoDB backup; say which (engine)")
    for item in found:
        if completed and item.entry.in_progress:
            raise Invalid(f"{name} is still being written")
        return item
    raise NotFound(f"no backup named {name} in the catalog")


def warnings(items: list[CatalogItem]) -> list[dict]:
    return engine_warnings([i.entry for i in items], now=timezone.now(), stale_hours=settings.BACKUP_STALE_HOURS,
                           shrink_percent=settings.BACKUP_SHRINK_PERCENT)


def per_database(items: list[CatalogItem]) -> dict[str, dict]:
    """For the dashboard and charts: per database, the latest completed
    backup, the latest verification, and the size history (oldest first).
    Keyed by database name, "<name> (MongoDB)" for the log database's."""
    out: dict[str, dict] = {}
    for item in items:
        if item.entry.in_progress:
            continue
        key = database_label(item.entry)
        db = out.setdefault(key, {"latest": None, "history": [], "last_verification": None,
                                  "engine": item.entry.engine, "database": item.entry.database})
        if db["latest"] is None or item.entry.created_at > db["latest"].entry.created_at:
            db["latest"] = item
        db["history"].append(item)
        v = item.verification
        if v is not None and (db["last_verification"] is None or v.verified_at > db["last_verification"].verified_at):
            db["last_verification"] = v
    for db in out.values():
        db["history"].sort(key=lambda i: i.entry.created_at)
    return dict(sorted(out.items()))


# --- the log database (MongoDB) -----------------------------------------------------
def database_label(entry: BackupEntry) -> str:
    """How a database is named on the pages: PostgreSQL ones by name, the
    log database's as "<name> (MongoDB)"."""
    return entry.database if entry.engine == POSTGRES else f"{entry.database} ({ENGINE_LABELS[entry.engine]})"


def log_target() -> str:
    """The lock name of jobs on the log database: never the managed
    PostgreSQL's (``default_target()``), so a log backup neither waits for
    nor blocks a PostgreSQL backup, verify, migration or restore."""
    from hcapadmin.jobs.lifecycle import default_target

    return "logs" if default_target() != "logs" else "logs-mongodb"


def target_for(engine: str) -> str:
    from hcapadmin.jobs.lifecycle import default_target

    return log_target() if engine == MONGO else default_target()


def log_backup_refusal() -> str | None:
    """Why a manual log backup cannot be taken here (None when it can)."""
    from ops.logbackups import MONGODUMP_UNAVAILABLE

    return None if get_driver().takes_log_backups else MONGODUMP_UNAVAILABLE
