"""Backups with the local driver against the real PostgreSQL."""

from __future__ import annotations

import gzip
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest
from django.conf import settings
from django.test import RequestFactory

from hcapadmin.accounts.principal import Principal
from hcapadmin.jobs.lifecycle import submit
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
    from hcapadmin.jobs.lifecycle import default_target

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


def test_verify_passes_on_good_file_and_fails_clearly_on_truncated(tmp_path, pg):
    seed(pg)
    drv = driver(tmp_path, pg)
    entry = drv.take_backup(now=datetime(2026, 11, 20, 3, 0, 0, tzinfo=timezone.utc))
    lines = []
    found = drv.verify_backup(entry, log=lines.append).details
    assert found["tables"] >= 2
    assert found["row_counts"]["public.applicants"] == 3000 and found["row_counts"]["public.sites"] == 50
    assert found["benign_role_errors"] >= 1
    assert not pg.psql("SELECT datname FROM pg_database WHERE datname LIKE 'hcapadmin_verify_%'").strip()
    # truncate a copy to 60% of its size
    data = Path(entry.path).read_bytes()
    cut = tmp_path / "daily" / "2026-11-20" / "hcap-patroni-hcap_2026-11-20_04-00-00.sql.gz"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    truncated = next(e for e in drv.list_backups() if e.name == cut.name)
    with pytest.raises(backups.VerifyFailed) as info:
        drv.verify_backup(truncated, log=lines.append)
    assert "truncated or corrupt" in str(info.value)
    assert not pg.psql("SELECT datname FROM pg_database WHERE datname LIKE 'hcapadmin_verify_%'").strip()
    # a file that is not gzip at all
    junk = tmp_path / "daily" / "2026-11-20" / "hcap-patroni-hcap_2026-11-20_05-00-00.sql.gz"
    junk.write_bytes(b"this is not a backup\n" * 10)
    with pytest.raises(backups.VerifyFailed):
        drv.verify_backup(next(e for e in drv.list_backups() if e.name == junk.name))


def test_catalog_lists_layout_kinds_sizes_and_in_progress(tmp_path):
    for rel, size in [("daily/2026-11-24/hcap-patroni-hcap_2026-11-24_01-00-00.sql.gz", 1000),
                      ("weekly/2026-11-22/hcap-patroni-hcap_2026-11-22_01-00-00.sql.gz", 900),
                      ("monthly/2026-10-31/hcap-patroni-hcap_2026-10-31_01-00-00.sql.gz", 800),
                      ("daily/2026-11-25/hcap-patroni-hcap_2026-11-25_01-00-00.sql.gz.in_progress", 10),
                      ("daily/2026-11-25/notes.txt", 5), ("daily/2026-11-25/random.sql.gz", 5)]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
    entries = backups.scan_local(str(tmp_path))
    assert [(e.kind, e.size_bytes, e.in_progress) for e in entries] == [
        ("daily", 10, True), ("daily", 1000, False), ("weekly", 900, False), ("monthly", 800, False)]
    assert entries[1].database == "hcap" and entries[1].host == "hcap-patroni"
    assert entries[1].created_at == datetime(2026, 11, 24, 1, 0, 0, tzinfo=timezone.utc)


def test_warnings_stale_and_shrunk():
    def e(day, size, in_progress=False):
        when = datetime(2026, 11, day, 1, 0, 0, tzinfo=timezone.utc)
        return backups.BackupEntry(backups.backup_name("h", "hcap", when), "/x", "h", "hcap", "daily", when, size,
                                   in_progress)

    now = datetime(2026, 11, 24, 12, 0, 0, tzinfo=timezone.utc)
    fine = backups.backup_warnings([e(22, 1000), e(23, 990), e(24, 1010)], now=now, stale_hours=26, shrink_percent=50)
    assert fine == []
    found = backups.backup_warnings([e(21, 1000), e(22, 400), e(25, 5, True)], now=now, stale_hours=26,
                                    shrink_percent=50)
    assert [w["kind"] for w in found] == ["stale", "shrunk"]
    assert "60% smaller" in found[1]["message"] and "26 hours" in found[0]["message"]


def test_verify_job_records_result_on_the_backup(tmp_path, pg, run_jobs, settings):
    from hcapadmin.backups.models import BackupVerification

    seed(pg)
    settings.BACKUP_DIR = str(tmp_path)
    settings.MANAGED_DATABASE_URL = pg.url("hcap")
    entry = driver(tmp_path, pg).take_backup(now=datetime(2026, 11, 23, 2, 0, 0, tzinfo=timezone.utc))
    bad = Path(entry.path).with_name("hcap-patroni-hcap_2026-11-23_03-00-00.sql.gz")
    bad.write_bytes(Path(entry.path).read_bytes()[:2000])
    good_job, _ = submit("backup.verify", {"name": entry.name}, request=admin_request(), target="hcap")
    bad_job, _ = submit("backup.verify", {"name": bad.name}, request=admin_request(), target="hcap")
    run_jobs()
    good_job.refresh_from_db()
    bad_job.refresh_from_db()
    assert good_job.status == "succeeded", good_job.error
    assert good_job.result["row_counts"]["public.applicants"] == 3000
    assert bad_job.status == "failed" and "truncated or corrupt" in bad_job.error
    assert BackupVerification.objects.get(backup_name=entry.name).ok is True
    failed = BackupVerification.objects.get(backup_name=bad.name)
    assert failed.ok is False and "truncated" in failed.message and failed.job_id == bad_job.pk


def wait_until(condition, what, deadline=120.0):
    """Poll ``condition`` until true; the deadline only turns a hang into a failure."""
    import time

    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, f"gave up waiting for {what}"
        time.sleep(0.05)


def test_cancelled_backup_kills_the_dump_and_leaves_no_file(tmp_path, pg):
    import psycopg

    pg.psql("DROP DATABASE IF EXISTS cancel_src")
    pg.psql("CREATE DATABASE cancel_src")
    pg.psql("CREATE TABLE held (id int); INSERT INTO held SELECT generate_series(1, 1000)", "cancel_src")
    dump_sessions = ("SELECT count(*) FROM pg_stat_activity WHERE datname = 'cancel_src' "
                     "AND application_name IN ('pg_dump', 'pg_dumpall')")

    class Stop(Exception):
        pass

    seen = {}

    def check():
        # Cancel once pg_dump is provably mid-dump: it waits for the lock this test holds, so it cannot have
        # finished, whatever the machine's speed.
        waiting = pg.psql("SELECT count(*) FROM pg_stat_activity WHERE datname = 'cancel_src' "
                          "AND application_name = 'pg_dump' AND wait_event_type = 'Lock'", "cancel_src").strip()
        if waiting == "1":
            seen["partial"] = [p.name for p in tmp_path.rglob("*.in_progress")]
            raise Stop()

    # pg_dump locks every table it dumps (ACCESS SHARE); holding ACCESS EXCLUSIVE stops it right there.
    with psycopg.connect(pg.url("cancel_src")) as holder:
        holder.execute("LOCK TABLE held IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(Stop):
            driver(tmp_path, pg, "cancel_src").take_backup(check=check)
        assert len(seen["partial"]) == 1  # cancelled while the backup was being written
        assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
        holder.rollback()
    # the killed pg_dump's server session ends once it gets the lock and finds its client gone
    wait_until(lambda: pg.psql(dump_sessions).strip() == "0", "the dump's sessions to end")
    pg.psql("DROP DATABASE cancel_src")


# --- verification in a throwaway server ---------------------------------------------
def backup_text(entry) -> str:
    return gzip.decompress(Path(entry.path).read_bytes()).decode()


def put_backup(tmp_path, drv, text: str, when: datetime):
    """A file with ``text`` as a backup named for ``when``, as the catalog lists it."""
    name = backups.backup_name("hcap-patroni", "hcap", when)
    path = tmp_path / backups.folder_kind(when.date()) / f"{when:%Y-%m-%d}" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text.encode()))
    return next(e for e in drv.list_backups() if e.name == name)


def server_folder(lines) -> Path:
    started = [line for line in lines if line.startswith("Started a throwaway PostgreSQL")]
    assert len(started) == 1, lines
    return Path(started[0].rsplit(" in ", 1)[1])


def test_verify_does_not_touch_the_live_server_roles(tmp_path, pg):
    seed(pg)
    pg.psql("DROP ROLE IF EXISTS hcap_departed; CREATE ROLE hcap_departed LOGIN")
    try:
        drv = driver(tmp_path, pg)
        entry = drv.take_backup(now=datetime(2026, 11, 18, 3, 0, 0, tzinfo=timezone.utc))
        assert "CREATE ROLE hcap_departed;" in backup_text(entry)
        pg.psql("ALTER ROLE hcap_departed NOLOGIN")  # access revoked after that backup was taken
        lines = []
        found = drv.verify_backup(entry, log=lines.append).details
        assert pg.psql("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'hcap_departed'").strip() == "f"
        assert found["row_counts"]["public.applicants"] == 3000 and found["postgres_major"] >= 13
        assert not server_folder(lines).exists()
        assert not pg.psql("SELECT datname FROM pg_database WHERE datname LIKE 'hcapadmin_verify_%'").strip()
    finally:
        pg.psql("DROP ROLE IF EXISTS hcap_departed")


def test_verify_refuses_psql_meta_commands_naming_the_line(tmp_path, pg):
    seed(pg)
    drv = driver(tmp_path, pg)
    good = backup_text(drv.take_backup(now=datetime(2026, 11, 17, 3, 0, 0, tzinfo=timezone.utc)))
    # a planted file would not carry pg_dump's own \restrict lines
    lines = [line for line in good.splitlines(keepends=True) if not line.startswith(("\\restrict", "\\unrestrict"))]
    at = next(i for i, line in enumerate(lines) if line.startswith("CREATE TABLE public.applicants"))
    planted = tmp_path / "planted"
    hour = iter(range(4, 24))

    def planted_file(extra: str):
        text = "".join(lines[:at]) + extra + "".join(lines[at:])
        return put_backup(tmp_path, drv, text, datetime(2026, 11, 17, next(hour), 0, 0, tzinfo=timezone.utc))

    for command in (f"\\! touch {planted}", f"  \\! touch {planted}", "\\copy sites to '/tmp/x'", "\\i /etc/passwd",
                    "\\set ON_ERROR_STOP 0", "\\connect hcap host=evil.example"):
        with pytest.raises(backups.VerifyFailed) as info:
            drv.verify_backup(planted_file(command + "\n"), log=lambda line: None)
        message = str(info.value)
        assert f"line {at + 1}:" in message and "meta-command \\" + command.split()[0].lstrip("\\") in message, message
        assert not planted.exists()
    # after SQL on the same line, psql itself refuses it: the server's psql runs in \restrict mode
    lines_seen = []
    with pytest.raises(backups.VerifyFailed) as info:
        drv.verify_backup(planted_file(f"SELECT 1; \\! touch {planted}\n"), log=lines_seen.append)
    assert "backslash commands are restricted" in str(info.value)
    assert not planted.exists()
    assert not server_folder(lines_seen).exists()  # removed after a failing verify too
    # the check also works on its own, on a whole file, without running anything
    with gzip.open(planted_file(f"\\! touch {planted}\n").path, "rb") as fh, pytest.raises(backups.UnsafeSQL):
        backups.check_sql_file(fh, chunk_size=4096)
    with gzip.open(drv.take_backup().path, "rb") as fh:
        assert backups.check_sql_file(fh, chunk_size=4096) == good.count("\n")
    assert "\\restrict " in good  # pg_dump's own lines pass


def test_verify_passes_copy_data_that_begins_with_backslashes(tmp_path, pg):
    seed(pg)
    pg.psql(r"""DROP TABLE IF EXISTS notes;
                CREATE TABLE notes (body text, n int);
                INSERT INTO notes VALUES (E'\\x41', 1), (NULL, 2), (E'\\.', 3), (E'\\', 4), (E'\\! touch /x', 5),
                                         (E'\\connect other', 6), (E'a\nb', 7);""", "hcap")
    try:
        drv = driver(tmp_path, pg)
        entry = drv.take_backup(now=datetime(2026, 11, 16, 3, 0, 0, tzinfo=timezone.utc))
        text = backup_text(entry)
        assert "\n\\N\t2\n" in text and "\n\\\\.\t3\n" in text and "\n\\\\! touch /x\t5\n" in text
        # chunks cut anywhere, lines split across reads
        with gzip.open(entry.path, "rb") as fh:
            assert backups.check_sql_file(fh, chunk_size=7) == text.count("\n")
        found = drv.verify_backup(entry).details
        assert found["row_counts"]["public.notes"] == 7
    finally:
        pg.psql("DROP TABLE IF EXISTS notes", "hcap")


def test_verify_throwaway_server_is_removed_after_a_cancel(tmp_path, pg):
    seed(pg)
    drv = driver(tmp_path, pg)
    entry = drv.take_backup(now=datetime(2026, 11, 15, 3, 0, 0, tzinfo=timezone.utc))
    lines = []

    class Stop(Exception):
        pass

    def check():
        if any(line.startswith("Restoring into") for line in lines):
            assert server_folder(lines).is_dir()  # the server really was running
            raise Stop()

    with pytest.raises(Stop):
        drv.verify_backup(entry, log=lines.append, check=check)
    assert not server_folder(lines).exists()


def test_verify_of_a_backup_from_a_major_version_not_installed_fails_clearly(tmp_path, pg):
    from ops.errors import Unavailable

    seed(pg)
    drv = driver(tmp_path, pg)
    text = backup_text(drv.take_backup(now=datetime(2026, 11, 14, 3, 0, 0, tzinfo=timezone.utc)))
    missing = next(n for n in (12, 11, 10, 19, 20) if not Path(f"/usr/lib/postgresql/{n}/bin/postgres").exists())
    text = re.sub(r"-- Dumped from database version \d+\.\d+", f"-- Dumped from database version {missing}.4", text)
    entry = put_backup(tmp_path, drv, text, datetime(2026, 11, 14, 4, 0, 0, tzinfo=timezone.utc))
    with pytest.raises(Unavailable) as info:
        drv.verify_backup(entry)
    assert f"PostgreSQL {missing} is not installed" in str(info.value)


# --- honest errors -----------------------------------------------------------------
@pytest.fixture
def full_backup_dir(tmp_path, monkeypatch):
    """A backup folder that fills up after 1 MB: a real 1 MB tmpfs where
    mounting is allowed, else the compressor writing into /dev/full (the
    same ENOSPC on the compressor's own write)."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                             capture_output=True).returncode == 0
    if not mounted:
        real = backups.compressor_argv()
        monkeypatch.setattr(backups, "compressor_argv", lambda: ["sh", "-c", 'exec "$0" "$@" >/dev/full'] + real)
    yield folder
    if mounted:
        subprocess.run(["umount", str(folder)], check=True)


def test_full_disk_during_backup_reports_the_compressors_error(full_backup_dir, pg):
    pg.psql("DROP DATABASE IF EXISTS big_src")
    pg.psql("CREATE DATABASE big_src")
    # about 8 MB of dump that compresses to about half: far more than the folder and the pipe between the two hold
    pg.psql("CREATE TABLE filler AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS body "
            "FROM generate_series(1, 120000) g", "big_src")
    try:
        with pytest.raises(backups.OpsError) as info:
            driver(full_backup_dir, pg, "big_src").take_backup()
        message = str(info.value)
        # the compressor's own failure and message, not "pg_dump failed (killed by SIGPIPE)"
        assert message.split()[0] in ("pigz", "gzip", "sh") and "No space left on device" in message, message
        assert [p for p in full_backup_dir.rglob("*") if p.is_file()] == []
    finally:
        pg.psql("DROP DATABASE big_src")


def test_sql_reader_lets_through_only_pg_dumps_own_meta_commands():
    import io

    def run(text, chunk_size=5):
        reader = backups.SafeSQLReader(io.BytesIO(text.encode()), chunk_size=chunk_size)
        return reader, b"".join(iter(lambda: reader.read(3), b"")).decode()

    reader, out = run("SELECT 1;\n\\restrict abc123\n\\connect hcap\n"
                      "\\connect -reuse-previous=on \"dbname='my db'\"\n\\unrestrict abc123\n")
    key = reader.restrict_key
    assert reader.preamble.decode() == f"\\restrict {key}\n" and len(key) >= 32
    # the file's own \restrict lines are blanked; \connect runs outside the reader's restricted mode only
    assert out == (f"SELECT 1;\n\n\\unrestrict {key}\n\\connect hcap\n\\restrict {key}\n"
                   f"\\unrestrict {key}\n\\connect -reuse-previous=on \"dbname='my db'\"\n\\restrict {key}\n\n")
    for bad in ("\\connect hcap evil.example", "\\connect -reuse-previous=on \"dbname='host=evil.example'\"",
                "\\connect -reuse-previous=on \"dbname='postgresql://evil'\"", "\\c hcap", "\\restrict a b",
                "\\gexec", "\t\\o /tmp/out", "COPY t TO stdout; -- FROM stdin;\n\\! id"):
        with pytest.raises(backups.UnsafeSQL) as info:
            run(f"SELECT 1;\n{bad}\n")
        assert str(info.value).startswith("line 2:") or str(info.value).startswith("line 3:"), str(info.value)
    # in pg_dumpall's roles section nothing is COPY data
    with pytest.raises(backups.UnsafeSQL, match="line 3: psql meta-command \\\\!"):
        run("-- PostgreSQL database cluster dump\nCOPY public.t (a) FROM stdin;\n\\! id\n\\.\n")
    _, out = run("-- PostgreSQL database cluster dump complete\nCOPY public.t (a) FROM stdin;\n\\! id\n\\.\n")
    assert "\\! id" in out
