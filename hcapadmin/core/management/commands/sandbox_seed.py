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
        self.insert_realistic_rows()
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

    def insert_realistic_rows(self):
        """Tens of MB of HCAP-shaped rows, so that a restore's steps take
        visible seconds in the sandbox (see seed_realistic_rows)."""
        with psycopg.connect(dburl.to_conninfo(settings.MANAGED_DATABASE_URL)) as conn:
            counts = seed_realistic_rows(conn)
            size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()[0]
        self.stdout.write(f"hcap: {counts['applicants']:,} participants, {counts['employer_sites']:,} sites, "
                          f"{counts['employer_expressions']:,} employer expressions of interest ({size})")

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


# --- realistic volume in the managed database ----------------------------------------
FIRST_NAMES = ("Amrit", "Olivia", "Liam", "Harpreet", "Emma", "Noah", "Mei", "Lucas", "Sofia", "Jaskaran", "Chloe",
               "Ethan", "Aiyana", "Mateo", "Priya", "Owen", "Hana", "Gurpreet", "Leah", "Wei", "Nathan", "Fatima",
               "Kai", "Isabelle", "Daniel", "Maya", "Ravi", "Grace", "Tyler", "Simran")
LAST_NAMES = ("Sandhu", "Smith", "Nguyen", "Brown", "Li", "Wilson", "Gill", "Martin", "Chen", "Thompson", "Dhillon",
              "Anderson", "Wong", "Taylor", "Grewal", "Campbell", "Lee", "Johnson", "Sidhu", "MacDonald", "Kim",
              "Tremblay", "Singh", "Roberts", "Joe", "Williams", "Patel", "Clark", "Jack", "Morin")
HEALTH_AUTHORITIES = ("Fraser", "Interior", "Island", "Northern", "Vancouver Coastal")
CITIES = ("Surrey", "Kelowna", "Victoria", "Prince George", "Vancouver", "Abbotsford", "Kamloops", "Nanaimo",
          "Fort St. John", "Richmond", "Burnaby", "Vernon", "Courtenay", "Terrace", "North Vancouver")
FSAS = ("V3S", "V1Y", "V8W", "V2L", "V5K", "V2S", "V2C", "V9R", "V1J", "V6X", "V5H", "V1T", "V9N", "V8G", "V7M")
ROLES = ("Health Care Assistant", "Community Health Worker", "Activity Aide", "Housekeeping", "Dietary Aide")
# Participants, employer sites and employer expressions of interest: about
# 40 MB in total (with indexes), generated by PostgreSQL itself (generate_series) in seconds.
PARTICIPANTS = 36_000
EXTRA_SITES = 600
EXPRESSIONS = 8_000


def seed_realistic_rows(conn, *, scale: float = 1.0) -> dict:
    """Insert HCAP-shaped participants (``applicants``, with their search
    vector), employer sites and employer expressions of interest into the
    tables the demo migrations create.  Deterministic: row n always gets the
    same values.  ``scale`` shrinks it for tests."""
    participants, sites, expressions = (max(1, int(n * scale)) for n in (PARTICIPANTS, EXTRA_SITES, EXPRESSIONS))
    arrays = {"first": list(FIRST_NAMES), "last": list(LAST_NAMES), "ha": list(HEALTH_AUTHORITIES),
              "city": list(CITIES), "fsa": list(FSAS), "roles": list(ROLES)}
    with conn.transaction():
        conn.execute(
            """
            INSERT INTO employer_sites (site_id, body, created_at, updated_at)
            SELECT 2000 + g,
                   jsonb_build_object(
                     'siteName', (%(city)s::text[])[1 + g %% 15] || ' ' ||
                                 (ARRAY['Care Home','Lodge','Residence','Manor','Place','Village'])[1 + g %% 6],
                     'healthAuthority', (%(ha)s::text[])[1 + g %% 5],
                     'allocation', 2 + (g * 7) %% 19,
                     'address', (100 + (g * 37) %% 9800) || ' ' ||
                                (ARRAY['Main St','Oak Ave','Cedar Rd','King George Blvd','Lakeshore Dr'])[1 + g %% 5],
                     'city', (%(city)s::text[])[1 + g %% 15],
                     'postalCode', (%(fsa)s::text[])[1 + g %% 15] || ' ' || (g %% 10) || chr(65 + g %% 26) || (g %% 7),
                     'registeredBusinessName', (%(last)s::text[])[1 + g %% 30] || ' Health Services Ltd.',
                     'operatorName', (%(first)s::text[])[1 + (g * 3) %% 30] || ' ' ||
                                     (%(last)s::text[])[1 + (g * 7) %% 30],
                     'operatorEmail', 'operator' || g || '@example-care.ca',
                     'isRHO', g %% 4 = 0),
                   now() - ((g * 13) %% 700) * interval '1 day',
                   now() - ((g * 5) %% 60) * interval '1 day'
              FROM generate_series(1, %(sites)s) g
            """, {**arrays, "sites": sites})
        conn.execute(
            """
            INSERT INTO applicants (body, search, created_at, updated_at)
            SELECT body,
                   to_tsvector('simple', concat_ws(' ', body->>'firstName', body->>'lastName', body->>'emailAddress',
                                                   body->>'postalCode', body->>'preferredLocation')),
                   created, created + ((g * 11) %% 90) * interval '1 day'
              FROM (SELECT g, now() - ((g * 7919) %% 1051200) * interval '1 minute' AS created,
                           jsonb_build_object(
                             'firstName', (%(first)s::text[])[1 + g %% 30],
                             'lastName', (%(last)s::text[])[1 + (g / 30) %% 30],
                             'phoneNumber', '250' || lpad(((g::bigint * 104729) %% 10000000)::text, 7, '0'),
                             'emailAddress', lower((%(first)s::text[])[1 + g %% 30]) || '.' ||
                                             lower((%(last)s::text[])[1 + (g / 30) %% 30]) || g || '@example.com',
                             'postalCode', (%(fsa)s::text[])[1 + (g / 7) %% 15] || ' ' || (g %% 10) ||
                                           chr(65 + (g / 3) %% 26) || (g %% 9),
                             'postalCodeFsa', (%(fsa)s::text[])[1 + (g / 7) %% 15],
                             'preferredLocation', (%(ha)s::text[])[1 + g %% 5] ||
                                                  CASE WHEN g %% 4 = 0 THEN ';' || (%(ha)s::text[])[1 + (g + 2) %% 5]
                                                       ELSE '' END,
                             'eligibility', g %% 11 <> 0,
                             'crcClear', (ARRAY['yes','no','in progress'])[1 + g %% 3],
                             'interested', (ARRAY['yes','no','withdrawn'])[1 + (g %% 17 = 0)::int + (g %% 29 = 0)::int],
                             'indigenous', (ARRAY['no','yes','prefer not to say'])[1 + (g * 5) %% 3],
                             'experienceWithHealthCareSettings', g %% 3 = 0,
                             'currentOrMostRecentIndustry',
                               (ARRAY['Hospitality','Retail','Tourism','Food services','Health care',
                                      'Other'])[1 + g %% 6],
                             'roleInvolvesHealthCareSettings', (%(roles)s::text[])[1 + g %% 5],
                             'maximusId', 1000000 + g,
                             'callbackStatus', g %% 13 = 0,
                             'userUpdatedAt', to_char(now() - ((g * 31) %% 400) * interval '1 day',
                                                      'YYYY-MM-DD"T"HH24:MI:SS"Z"')) AS body
                      FROM generate_series(1, %(participants)s) g) AS p
            """, {**arrays, "participants": participants})
        conn.execute(
            """
            INSERT INTO employer_expressions (body, created_at, updated_at)
            SELECT jsonb_build_object(
                     'organizationName', (%(last)s::text[])[1 + g %% 30] || ' ' ||
                                         (ARRAY['Seniors Living','Care Society','Health Group',
                                                'Community Care'])[1 + g %% 4],
                     'healthAuthority', (%(ha)s::text[])[1 + g %% 5],
                     'siteName', (%(city)s::text[])[1 + g %% 15] || ' ' ||
                                 (ARRAY['Care Home','Lodge','Residence'])[1 + g %% 3],
                     'emailAddress', 'hr' || g || '@example-employer.ca',
                     'phoneNumber', '604' || lpad(((g::bigint * 7793) %% 10000000)::text, 7, '0'),
                     'siteType', (ARRAY['Long-term care','Assisted living','Home support','Mental health'])[1 + g %% 4],
                     'numPublicLongTermCare', (g * 3) %% 120,
                     'numPrivateLongTermCare', (g * 5) %% 80,
                     'hcapOpportunity', g %% 5 <> 0,
                     'expressionOfInterest', 'We would like to hire ' || (1 + g %% 12) || ' participants as '
                                             || (%(roles)s::text[])[1 + g %% 5] || ' in '
                                             || (%(city)s::text[])[1 + (g / 5) %% 15] || '.'),
                   now() - ((g * 131) %% 500000) * interval '1 minute',
                   CASE WHEN g %% 3 = 0 THEN now() - ((g * 17) %% 30) * interval '1 day' END
              FROM generate_series(1, %(expressions)s) g
            """, {**arrays, "expressions": expressions})
        conn.execute("ANALYZE applicants, employer_sites, employer_expressions")
    return {"applicants": participants, "employer_sites": sites, "employer_expressions": expressions}
