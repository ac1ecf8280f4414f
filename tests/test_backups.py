"""Backups with the local driver against the real PostgreSQL."""

from __future__ import annotations

import gzip
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest
from django.conf import settings
from django.test import RequestFactory

from hcapadmin.accounts.principal import Principal
from hcapadmin.jobs.models import Job
from hcapadmin.jobs.services import submit
from ops import backups
from ops.platform.local import LocalDriver

pytestmark = pytest.mark.django_db


def admin_request():
    request = RequestFactory().post("/x")
    request.principal = Principal(name="alice", groups=("hcap-admins",), roles=frozenset({"admin"}))
    return request


def seed(pg, db="hcap"):
    pg.psql("""
        DROP TABLE IF EXISTS applicants, sites;
        CREATE TABLE sites (id serial PRIMARY KEY, name text NOT NULL, opened date);
        CREATE TABLE applicants (id bigserial PRIMARY KEY, site_id int REFERENCES sites(id), body jsonb, note text);
        INSERT INTO sites (name, opened) SELECT 'site ' || g, date '2020-01-01' + g FROM generate_series(1, 50) g;
        INSERT INTO applicants (site_id, body, note)
             SELECT 1 + g % 50, jsonb_build_object('n', g, 'tag', 'x' || g), E'line\\ttab ''quote'' ' || g
               FROM generate_series(1, 3000) g;
    """, db)


def rows(pg, db):
    return pg.psql("SELECT string_agg(t::text, '|' ORDER BY id) FROM (SELECT * FROM applicants) t;"
                   "SELECT string_agg(t::text, '|' ORDER BY id) FROM (SELECT * FROM sites) t;", db)


def fresh_db(pg, name):
    pg.psql(f"DROP DATABASE IF EXISTS {name}")
    pg.psql(f"CREATE DATABASE {name}")


def driver(tmp_path, pg, db="hcap"):
    return LocalDriver(database_conninfo=f"host=127.0.0.1 port={pg.port} user=postgres password={pg.password} dbname={db}",
                       backup_dir=str(tmp_path), migrations_dir=str(tmp_path), backup_host="hcap-patroni")


def test_folder_kind_follows_backup_container():
    from datetime import date

    assert backups.folder_kind(date(2026, 11, 30)) == "monthly"
    assert backups.folder_kind(date(2026, 2, 28)) == "monthly"
    assert backups.folder_kind(date(2026, 5, 31)) == "monthly"  # a Sunday, but month end wins
    assert backups.folder_kind(date(2026, 11, 29)) == "weekly"  # Sunday
    assert backups.folder_kind(date(2026, 11, 25)) == "daily"


def test_local_backup_name_format_and_identical_restore(tmp_path, pg):
    seed(pg)
    when = datetime(2026, 11, 24, 1, 2, 3, tzinfo=timezone.utc)
    lines = []
    entry = driver(tmp_path, pg).take_backup(now=when, log=lines.append)
    assert entry.name == "hcap-patroni-hcap_2026-11-24_01-02-03.sql.gz"
    path = tmp_path / "daily" / "2026-11-24" / entry.name
    assert Path(entry.path) == path and path.is_file() and entry.kind == "daily" and not entry.in_progress
    assert not list(tmp_path.rglob("*.in_progress"))
    text = gzip.decompress(path.read_bytes()).decode()
    # roles first (pg_dumpall --roles-only --no-role-passwords), then the plain dump
    assert text.startswith("--\n-- PostgreSQL database cluster dump\n--")
    roles_end = text.index(backups.ROLES_END_MARKER)
    assert "CREATE ROLE postgres;" in text[:roles_end] and "PASSWORD" not in text[:roles_end]
    assert text.index("-- PostgreSQL database dump\n", roles_end) > roles_end
    assert "COPY public.applicants" in text
    env = {"PGPASSWORD": pg.password, "PATH": "/usr/bin:/bin"}
    psql = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres"]
    # 1. backup-container's own restore pipeline, literally: on a server where the roles exist it stops at
    #    the first CREATE ROLE (the documented, benign failure) and at nothing else.
    fresh_db(pg, "restored_literal")
    gunzip = subprocess.Popen(["gunzip", "-c", str(path)], stdout=subprocess.PIPE)
    literal = subprocess.run(psql + ["-d", "restored_literal"], stdin=gunzip.stdout, capture_output=True, env=env)
    gunzip.stdout.close()
    gunzip.wait()
    assert literal.returncode == 3
    assert [l for l in literal.stderr.decode().splitlines() if "ERROR" in l][0].endswith('role "postgres" already exists')
    # 2. gunzip -c file, roles section set aside, | psql -v ON_ERROR_STOP=1 into a fresh database -> identical data
    fresh_db(pg, "restored")
    gunzip = subprocess.Popen(["gunzip", "-c", str(path)], stdout=subprocess.PIPE)
    restore = subprocess.Popen(psql + ["-d", "restored"], stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    in_roles = True
    for line in gunzip.stdout:
        if in_roles:
            in_roles = not line.startswith(backups.ROLES_END_MARKER.encode())
            continue
        restore.stdin.write(line)
    restore.stdin.close()
    assert restore.wait() == 0 and gunzip.wait() == 0, restore.stderr.read().decode()
    assert rows(pg, "restored") == rows(pg, "hcap")
    assert "3000" in pg.psql("SELECT count(*) FROM applicants", "restored")
    # 3. the portal's own restore (roles with an allow-list, then ON_ERROR_STOP) gives the same data
    fresh_db(pg, "restored2")
    with gzip.open(path, "rb") as fh:
        found = backups.restore_stream(fh, f"host=127.0.0.1 port={pg.port} user=postgres dbname=restored2", env,
                                       log=lambda line: None)
    assert found["benign_role_errors"] >= 1
    assert rows(pg, "restored2") == rows(pg, "hcap")
    for db in ("restored_literal", "restored", "restored2"):
        pg.psql(f"DROP DATABASE {db}")


def test_manual_backup_job_writes_a_backup_and_records_it(pg, run_jobs):
    from hcapadmin.jobs.services import default_target

    seed(pg)
    job, created = submit("backup.manual", {}, request=admin_request(), target=default_target())
    assert created and job.target == "hcap" and job.mutating
    run_jobs()
    job.refresh_from_db()
    assert job.status == "succeeded", job.error + job.log
    name = job.result["backup"]
    assert backups.parse_name(name)["database"] == "hcap"
    assert list(Path(settings.BACKUP_DIR).rglob(name))
    assert [s["name"] for s in job.steps] == ["Back up database"]
    assert "Dumping database (pg_dump)" in job.log and "Backup complete" in job.log
