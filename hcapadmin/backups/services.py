"""The backup catalog as the pages and the API see it."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from hcapadmin.backups.models import BackupVerification
from hcapadmin.core.platform import get_driver
from ops.backups import BackupEntry, backup_warnings, parse_name
from ops.errors import Invalid, NotFound


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


def catalog() -> list[CatalogItem]:
    """Every backup the platform driver sees, newest first, with its latest verification."""
    entries = get_driver().list_backups()
    verified = latest_verifications(e.name for e in entries)
    return [CatalogItem(e, verified.get(e.name)) for e in entries]


def find(name, *, completed: bool = True) -> CatalogItem:
    """The catalog item named exactly ``name``.  Anything else (a path, ``..``,
    shell metacharacters, a well-formed name that is not in the catalog) is
    refused: Invalid for malformed input, NotFound for an unknown name."""
    if not isinstance(name, str) or parse_name(name) is None:
        raise Invalid("not a backup name (expected <host>-<database>_YYYY-MM-DD_HH-MM-SS.sql.gz)")
    for item in catalog():
        if item.entry.name == name:
            if completed and item.entry.in_progress:
                raise Invalid(f"{name} is still being written")
            return item
    raise NotFound(f"no backup named {name} in the catalog")


def warnings(items: list[CatalogItem]) -> list[dict]:
    return backup_warnings([i.entry for i in items], now=timezone.now(), stale_hours=settings.BACKUP_STALE_HOURS,
                           shrink_percent=settings.BACKUP_SHRINK_PERCENT)


def per_database(items: list[CatalogItem]) -> dict[str, dict]:
    """For the dashboard and charts: per database, the latest completed
    backup, the latest verification, and the size history (oldest first)."""
    out: dict[str, dict] = {}
    for item in items:
        if item.entry.in_progress:
            continue
        db = out.setdefault(item.entry.database, {"latest": None, "history": [], "last_verification": None})
        if db["latest"] is None or item.entry.created_at > db["latest"].entry.created_at:
            db["latest"] = item
        db["history"].append(item)
        v = item.verification
        if v is not None and (db["last_verification"] is None or v.verified_at > db["last_verification"].verified_at):
            db["last_verification"] = v
    for db in out.values():
        db["history"].sort(key=lambda i: i.entry.created_at)
    return dict(sorted(out.items()))
