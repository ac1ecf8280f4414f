"""pytest plugin (loaded with ``-p tests.harness.plugin``): starts throwaway
PostgreSQL, Redis and FerretDB servers on free ports for the whole session,
before Django's settings are read, and stops them at the end.

Set HCAPADMIN_TEST_SERVICES=external to use servers named by the usual
environment variables instead.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from devtools import services

_STACK: dict = {}


def start_stack() -> dict:
    base = Path(tempfile.mkdtemp(prefix="hcapadmin-test-"))
    os.chmod(base, 0o755)  # the postgres user must reach its data directory
    pg = services.Postgres.create(base / "pg" / "data", services.free_port(), fast=True).start()
    stack = {"base": base, "postgres": pg}
    try:
        pg.create_database("hcapadmin")
        pg.create_database("hcap")
        pg.create_database("ferretdb")
        stack["redis"] = services.Redis(services.free_port(), base / "redis").start()
        stack["ferretdb"] = services.FerretDB(services.free_port(), base / "ferretdb", pg.url("ferretdb")).start()
    except Exception:
        stop_stack(stack)
        raise
    backups = base / "backups"
    migrations = base / "migrations"
    backups.mkdir()
    migrations.mkdir()
    stack["env"] = {
        "DATABASE_URL": pg.url("hcapadmin"),
        "REDIS_URL": stack["redis"].url(),
        "MONGO_URL": stack["ferretdb"].url(),
        "HCAPADMIN_MANAGED_DATABASE_URL": pg.url("hcap"),
        "HCAPADMIN_BACKUP_DIR": str(backups),
        "HCAPADMIN_MIGRATIONS_DIR": str(migrations),
    }
    return stack


def stop_stack(stack: dict) -> None:
    for name in ("ferretdb", "redis", "postgres"):
        service = stack.get(name)
        if service is not None:
            try:
                service.stop()
            except Exception as exc:  # keep tearing down the others
                print(f"warning: stopping {name}: {exc}")
    base = stack.get("base")
    if base is not None:
        shutil.rmtree(base, ignore_errors=True)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hcapadmin.settings")
    os.environ.update(
        {
            "SECRET_KEY": "test-secret-key-not-for-production-" + "x" * 20,
            "HCAPADMIN_TESTING": "true",
            "HCAPADMIN_HTTPS": "false",
            "HCAPADMIN_LOCAL_ACCOUNTS": "true",
            "HCAPADMIN_SANDBOX": "true",
            "HCAPADMIN_PLATFORM": "local",
            # Playwright's sync API runs an event loop in the main thread;
            # Django's ORM calls made around it are still synchronous.
            "DJANGO_ALLOW_ASYNC_UNSAFE": "true",
        }
    )
    if any(a in ("--help", "-h", "--version") for a in args):
        return
    if os.environ.get("HCAPADMIN_TEST_SERVICES") == "external":
        return
    stack = start_stack()
    _STACK.update(stack)
    os.environ.update(stack["env"])


def pytest_unconfigure(config):
    if _STACK:
        stop_stack(_STACK)
        _STACK.clear()


def stack() -> dict:
    return _STACK
