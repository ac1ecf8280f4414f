"""Seed the sandbox's demo data (run once by `make run`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import psycopg
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from hcapadmin.lib import dburl

DEMO_MIGRATIONS = Path(settings.BASE_DIR) / "demo" / "migrations"
PENDING_IN_DEMO = 2  # left pending so the migrations page has something to apply


class Command(BaseCommand):
    help = "Seed the sandbox: hcap database by real migrations, rows, backups, winston logs."

    def handle(self, *args, **options):
        if not settings.SANDBOX:
            raise CommandError("sandbox_seed only runs in the sandbox (HCAPADMIN_SANDBOX=true)")
        self.migrate_hcap()
        self.insert_rows()
        self.make_backups()
        make_log_backups(self.stdout)
        self.make_logs()

    # -- the managed hcap database -------------------------------------------
    def migrate_hcap(self):
        target = Path(settings.MIGRATIONS_DIR)
        target.mkdir(parents=True, exist_ok=True)
        for item in DEMO_MIGRATIONS.iterdir():
            dest = target / item.name
            if item.is_dir():
                shutil.copytree(item, dest, dirs_exist_ok=True)
            else:
                shutil.copy2(item, dest)
        files = sorted(p for p in target.iterdir() if p.is_file() and not p.name.startswith("."))
        count = max(0, len(files) - PENDING_IN_DEMO)
        env = dict(os.environ, DATABASE_URL=settings.MANAGED_DATABASE_URL)
        result = subprocess.run(
            [settings.NODE_PG_MIGRATE, "up", str(count), "--migrations-dir", str(target),
             "--migrations-table", settings.MIGRATIONS_TABLE, "--migrations-schema", settings.MIGRATIONS_SCHEMA],
            env=env, capture_output=True, text=True, timeout=300,
        )
        if result.returncode != 0:
            raise CommandError(f"node-pg-migrate up failed:\n{result.stdout}\n{result.stderr}")
        self.stdout.write(f"hcap: applied {count} demo migrations, {len(files) - count} left pending")

    def insert_rows(self):
        with psycopg.connect(dburl.to_conninfo(settings.MANAGED_DATABASE_URL)) as conn:
            conn.execute(
                """
                INSERT INTO applicants (body, created_at)
                SELECT jsonb_build_object('firstName', 'Applicant ' || g, 'postalCode', 'V' || (g % 10) || 'A 1B' || (g % 7),
                                          'preferredLocation', (ARRAY['Fraser','Interior','Island','Northern','Vancouver Coastal'])[1 + g % 5]),
                       now() - (g || ' hours')::interval
                FROM generate_series(1, 500) AS g
                """
            )
        self.stdout.write("hcap: 500 applicants")

    def make_backups(self):
        from ops.backups import local_backup

        # Nightly backups at 01:00 UTC over the last week, the latest within
        # the staleness window, so the dashboard starts green.
        current = timezone.now()
        nightly = current.replace(hour=1, minute=0, second=0, microsecond=0)
        if nightly > current:
            nightly -= timedelta(days=1)
        now = nightly
        made = []
        for days_ago in (6, 5, 4, 3, 2, 1, 0):
            made.append(local_backup(
                dburl.to_conninfo(settings.MANAGED_DATABASE_URL),
                settings.BACKUP_DIR,
                settings.BACKUP_HOST,
                now=now - timedelta(days=days_ago),
            ))
        self.stdout.write(f"backups: {len(made)} in {settings.BACKUP_DIR}")

    def make_logs(self):
        import pymongo

        from ops.logs import ensure_indexes
        from ops.logs_demo import SANDBOX_DOCS, generate

        client = pymongo.MongoClient(settings.MONGO_URL)
        collection = client[settings.MONGO_LOG_DB][settings.MONGO_LOG_COLLECTION]
        if collection.estimated_document_count() == 0:
            generate(collection, SANDBOX_DOCS, days=30)
        ensure_indexes(collection)
        self.stdout.write(f"logs: {collection.estimated_document_count()} documents in "
                          f"{settings.MONGO_LOG_DB}.{settings.MONGO_LOG_COLLECTION}")


def make_log_backups(stdout) -> None:
    """Demo backups of the log database (MongoDB) in HCAPADMIN_LOG_BACKUP_DIR:
    nightly at 01:30 UTC over the last week, each the gzip of a small but
    well-formed mongodump archive (so a structural verify passes).  mongodump
    itself is not available here; on OpenShift backup-container writes these."""
    from datetime import datetime, timezone as dt_timezone

    from ops.logbackups import build_archive, write_local

    if not settings.LOG_BACKUP_DIR:
        return
    current = timezone.now()
    nightly = current.replace(hour=1, minute=30, second=0, microsecond=0)
    if nightly > current:
        nightly -= timedelta(days=1)
    levels = ("info", "info", "info", "warn", "error")
    made = 0
    for days_ago in (6, 5, 4, 3, 2, 1, 0):
        when = nightly - timedelta(days=days_ago)
        docs = [{"timestamp": datetime.fromtimestamp(when.timestamp() - 60 * i, dt_timezone.utc),
                 "level": levels[i % len(levels)], "message": f"demo log line {i}",
                 "metadata": {"req": {"status": 200 if i % 5 else 500}}}
                for i in range(200 + 40 * (6 - days_ago))]
        write_local(settings.LOG_BACKUP_DIR, "hcap-mongodb", settings.MONGO_LOG_DB, when,
                    build_archive(settings.MONGO_LOG_DB, {settings.MONGO_LOG_COLLECTION: docs}))
        made += 1
    stdout.write(f"log backups: {made} in {settings.LOG_BACKUP_DIR} (mongodump archives, demo)")
