"""Glue between settings, the platform driver and ops/migrations.py."""

from __future__ import annotations

import posixpath

from django.conf import settings

from hcapadmin.lib import dburl
from ops import migrations as ops


def managed_database_url() -> str | None:
    return settings.MANAGED_DATABASE_URL


def managed_database_name() -> str:
    url = managed_database_url()
    if url:
        try:
            return dburl.parse(url)["NAME"] or "hcap"
        except ValueError:
            pass
    return "hcap"


def conninfo() -> str | None:
    url = managed_database_url()
    return dburl.to_conninfo(url) if url else None


def source():
    """Where the migration files come from on this platform."""
    if settings.PLATFORM == "openshift":
        from hcapadmin.core.platform import get_driver

        return ops.PodFolder(get_driver(), settings.MIGRATIONS_POD_SELECTOR, settings.MIGRATIONS_POD_DIR,
                             container=settings.MIGRATIONS_POD_CONTAINER)
    return ops.LocalFolder(settings.MIGRATIONS_DIR)


def report(src=None) -> ops.Report:
    return ops.build_report(src or source(), conninfo(), settings.MIGRATIONS_TABLE, settings.MIGRATIONS_SCHEMA)


def pod_project_dir() -> str:
    return posixpath.dirname(settings.MIGRATIONS_POD_DIR.rstrip("/")) or "/"
