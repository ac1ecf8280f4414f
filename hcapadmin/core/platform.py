"""Builds the configured platform driver from settings (one per process).

This is the only place that looks at ``settings.PLATFORM``: everything that
differs between the platforms is a driver method (see ops/platform/base.py),
and each driver gets the settings it needs here."""

from __future__ import annotations

from functools import lru_cache

from django.conf import settings

from hcapadmin.lib import dburl
from ops.platform import PlatformDriver, make_driver


def driver_config() -> dict:
    if settings.PLATFORM == "openshift":
        return {
            "api_url": settings.OPENSHIFT_API_URL,
            "namespace": settings.OPENSHIFT_NAMESPACE,
            "token": settings.OPENSHIFT_TOKEN,
            "ca_file": settings.OPENSHIFT_CA_FILE,
            "server_name": settings.OPENSHIFT_SERVER_NAME,
            "patroni_name": settings.OPENSHIFT_PATRONI_NAME,
            "patroni_leader_configmap": settings.OPENSHIFT_PATRONI_LEADER_CONFIGMAP,
            "backup_name": settings.OPENSHIFT_BACKUP_NAME,
            "cronjobs": tuple(settings.OPENSHIFT_CRONJOBS),
            "migrations_pod_selector": settings.MIGRATIONS_POD_SELECTOR,
            "migrations_pod_dir": settings.MIGRATIONS_POD_DIR,
            "migrations_pod_container": settings.MIGRATIONS_POD_CONTAINER,
            "log_backup_name": settings.OPENSHIFT_LOG_BACKUP_NAME,
            "database_host": settings.OPENSHIFT_DATABASE_HOST,
        }
    return {
        "database_conninfo": dburl.to_conninfo(settings.MANAGED_DATABASE_URL),
        "database_url": settings.MANAGED_DATABASE_URL,
        "backup_dir": settings.BACKUP_DIR,
        "migrations_dir": settings.MIGRATIONS_DIR,
        "backup_host": settings.BACKUP_HOST,
        "patroni_url": settings.PATRONI_URL,
        "node_pg_migrate": settings.NODE_PG_MIGRATE,
        "migrations_table": settings.MIGRATIONS_TABLE,
        "migrations_schema": settings.MIGRATIONS_SCHEMA,
        "log_backup_dir": settings.LOG_BACKUP_DIR,
    }


@lru_cache(maxsize=1)
def _cached(kind: str, key: tuple) -> PlatformDriver:
    return make_driver(kind, **dict(key))


def get_driver() -> PlatformDriver:
    config = driver_config()
    return _cached(settings.PLATFORM, tuple(sorted(config.items())))
