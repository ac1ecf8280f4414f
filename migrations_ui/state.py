"""The migrations state of the managed database as this portal is configured:
the platform driver's migration files merged with the rows of
HCAPADMIN_MIGRATIONS_SCHEMA.HCAPADMIN_MIGRATIONS_TABLE, read from
HCAPADMIN_MANAGED_DATABASE_URL (on either platform)."""

from __future__ import annotations

from django.conf import settings

from hcapadmin.core.platform import get_driver
from hcapadmin.lib import dburl
from ops.migrations.report import Report, build_report


def conninfo() -> str | None:
    url = settings.MANAGED_DATABASE_URL
    return dburl.to_conninfo(url) if url else None


def table() -> str:
    """The migrations table as people read it (``schema.table``)."""
    return f"{settings.MIGRATIONS_SCHEMA}.{settings.MIGRATIONS_TABLE}"


def report() -> Report:
    """Files and applied rows now; ``report.files`` is the listing, for
    reading a file or running ``up`` where it was taken."""
    return build_report(get_driver(), conninfo(), settings.MIGRATIONS_TABLE, settings.MIGRATIONS_SCHEMA)
