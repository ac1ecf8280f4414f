"""The PostgreSQL core of an audited restore (ops/restore.py) against the
real PostgreSQL the harness starts: backups made by ops.backups.local_backup,
loaded, checked and swapped in, and every failure leaving the target under
its own name with either its old or the restored data."""

from __future__ import annotations

import gzip
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest

from ops import backups, restore
from ops.errors import Invalid

OWNER = "rs_owner"
OWNER_PASSWORD = "rs-owner-pw"
READER = "rs_reader"


# --- helpers ---------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def _drop_test_databases(pg):
    """The databases these tests make live in the session's shared server:
    drop them afterwards so other test modules never see them."""
    yield
    out = pg.psql("SELECT datname FROM pg_database WHERE datname LIKE 'rs\\_%'")
    for name in filter(None, out.splitlines()):
        pg.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')



def ci(pg, db="postgres", user="postgres", password=None) -> str:
    password = pg.password if password is None and user == "postgres" else (password or "")
    return f"host=127.0.0.1 port={pg.port} user={user} password={password} dbname={db}"


def roles(pg):
    pg.psql(f"""
        DO $$ BEGIN
          IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{OWNER}') THEN CREATE ROLE {OWNER} LOGIN; END IF;
          IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{READER}') THEN CREATE ROLE {READER} NOLOGIN; END IF;
        END $$;
        ALTER ROLE {OWNER} LOGIN PASSWORD '{OWNER_PASSWORD}';
    """)


def make_db(pg, name):
    """A database like HCAP's on Patroni: owned by the application's
    non-superuser role, with database-level privileges, settings and a
    connection limit that a plain dump does not carry."""
    roles(pg)
    for db in (name, *list_like(pg, name)):
        pg.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    pg.psql(f"CREATE DATABASE {name} OWNER {OWNER}")
    for statement in (f"REVOKE ALL ON DATABASE {name} FROM PUBLIC",
                      f"GRANT CONNECT ON DATABASE {name} TO {OWNER}",
                      f"GRANT CONNECT ON DATABASE {name} TO {READER}",
                      f"GRANT TEMPORARY ON DATABASE {name} TO {READER} WITH GRANT OPTION",
                      f"ALTER DATABASE {name} SET work_mem = '8MB'",
                      f"""ALTER DATABASE {name} SET search_path = "$user", public, extra""",
                      f"ALTER ROLE {READER} IN DATABASE {name} SET statement_timeout = '5s'",
                      f"ALTER DATABASE {name} CONNECTION LIMIT 7"):
        pg.psql(statement)
    with psycopg.connect(ci(pg, name, OWNER, OWNER_PASSWORD), autocommit=True) as conn:
        conn.execute("""
            CREATE TABLE sites (id serial PRIMARY KEY, name text NOT NULL);
            CREATE TABLE applicants (id bigserial PRIMARY KEY, site_id int REFERENCES sites(id), body jsonb, note text);
            CREATE TABLE "Mixed Case" (v text);
            CREATE TABLE empty_one (v int);
            INSERT INTO sites (name) SELECT 'site ' || g FROM generate_series(1, 20) g;
            INSERT INTO applicants (site_id, body, note)
                 SELECT 1 + g % 20, jsonb_build_object('n', g), E'back\\\\slash \\\\. tab\\t' || g
                   FROM generate_series(1, 500) g;
            INSERT INTO "Mixed Case" VALUES ('\\.'), ('\\! not a command'), (NULL);
        """)


def list_like(pg, name):
    out = pg.psql(f"SELECT datname FROM pg_database WHERE datname LIKE '{name}\\_%restore\\_%'")
    return [line for line in out.splitlines() if line]


def snapshot(pg, db) -> str:
    return pg.psql("""SELECT (SELECT string_agg(t::text, '|' ORDER BY id) FROM applicants t)
                          || (SELECT string_agg(t::text, '|' ORDER BY id) FROM sites t)
                          || (SELECT string_agg(coalesce(v, 'null'), '|' ORDER BY v) FROM "Mixed Case")
                          || (SELECT count(*) FROM empty_one)""", db)


def change_data(pg, db):
    pg.psql("DELETE FROM applicants WHERE id > 400; UPDATE sites SET name = 'changed'; "
            "INSERT INTO empty_one VALUES (1)", db)


def take_backup(pg, folder, db, second=0) -> str:
    entry = backups.local_backup(ci(pg, db), str(folder), "hcap-patroni",
                                 now=datetime(2026, 11, 24, 1, 0, second, tzinfo=timezone.utc))
    return entry.path


def approve(path):
    return os.path.getsize(path), restore.sha256_file(path)


def rewrite(path, dest, change) -> str:
    """A copy of the backup with its decompressed text changed by ``change``."""
    text = gzip.decompress(Path(path).read_bytes()).decode()
    changed = change(text)
    assert changed != text
    Path(dest).write_bytes(gzip.compress(changed.encode()))
    return str(dest)


def db_props(pg, db) -> dict:
    with psycopg.connect(ci(pg), autocommit=True) as conn:
        row = conn.execute("SELECT oid, datallowconn, datconnlimit, pg_get_userbyid(datdba) FROM pg_database "
                           "WHERE datname = %s", (db,)).fetchone()
        if row is None:
            return {}
        return {"oid": row[0], "allow": row[1], "limit": row[2], "owner": row[3],
                "acl": restore._acl(conn, db), "settings": restore._settings(conn, db)}


def exists(pg, db) -> bool:
    return pg.psql(f"SELECT 1 FROM pg_database WHERE datname = '{db}'").strip() == "1"


def child_processes() -> list[str]:
    """This process's live psql / decompressor children (none may outlive a load)."""
    found = []
    me = str(os.getpid())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1: stat.rindex(")")]
        fields_ = stat[stat.rindex(")") + 2:].split()
        if fields_[1] == me and fields_[0] != "Z" and name in ("psql", "pigz", "gunzip", "gzip"):
            found.append(name)
    return found


def full_run(pg, path, target, *, stamp, log=None):
    size, sha = approve(path)
    pre = restore.preflight(ci(pg), path, expected_size=size, expected_sha256=sha, target=target, log=log)
    load = restore.LoadStaging(ci(pg), path, target, sha256=sha, stamp=stamp, log=log).run()
    chk = restore.check_staging(ci(pg), load, log=log)
    cut = restore.Cutover(ci(pg), load, log=log).run()
    return pre, load, chk, cut


# --- the whole runbook ------------------------------------------------------------------
def test_online_restore_end_to_end(pg, tmp_path):
    make_db(pg, "rs_e2e")
    backed_up = snapshot(pg, "rs_e2e")
    original = db_props(pg, "rs_e2e")
    path = take_backup(pg, tmp_path, "rs_e2e")
    change_data(pg, "rs_e2e")
    changed = snapshot(pg, "rs_e2e")
    assert changed != backed_up
    app = psycopg.connect(ci(pg, "rs_e2e", OWNER, OWNER_PASSWORD), autocommit=True)
    lines = []
    size, sha = approve(path)
    pre = restore.preflight(ci(pg), path, expected_size=size, expected_sha256=sha, target="rs_e2e", log=lines.append)
    assert pre.target_oid == original["oid"] and pre.needed_bytes >= size and pre.connection_limit == 7
    # step 2: the runbook's safety backup is ops.backups.local_backup, unchanged
    safety = backups.local_backup(ci(pg, "rs_e2e"), str(tmp_path / "safety"), "hcap-patroni")
    load = restore.LoadStaging(ci(pg), path, "rs_e2e", sha256=sha, stamp="20261124010203", log=lines.append).run()
    assert load.staging == "rs_e2e_restore_20261124010203"
    assert load.copy_rows == {"public.applicants": 500, "public.sites": 20, 'public."Mixed Case"': 3,
                              "public.empty_one": 0}
    assert OWNER in load.roles_existing and load.roles_created == []
    json.dumps(load.as_dict())  # the job machine stores it
    assert app.execute("SELECT count(*) FROM applicants").fetchone()[0] == 400  # online: clients keep working
    chk = restore.check_staging(ci(pg), load, log=lines.append)
    assert chk.row_counts["public.applicants"] == 500 and chk.tables == 4
    assert app.execute("SELECT count(*) FROM applicants").fetchone()[0] == 400
    cut = restore.Cutover(ci(pg), load, log=lines.append).run()
    json.dumps(cut.as_dict())
    assert cut.renames == [["rs_e2e", "rs_e2e_pre_restore_20261124010203"], ["rs_e2e_restore_20261124010203", "rs_e2e"]]
    assert cut.downtime_seconds is not None and cut.downtime_seconds >= 0 and cut.sessions_ended >= 1
    with pytest.raises(psycopg.OperationalError):
        app.execute("SELECT 1")  # its session was ended at cutover
    app.close()
    # the target holds the backup's data, the pre-restore database the data from before
    assert snapshot(pg, "rs_e2e") == backed_up
    pre_db = "rs_e2e_pre_restore_20261124010203"
    assert db_props(pg, pre_db)["allow"] is False and db_props(pg, pre_db)["oid"] == original["oid"]
    pg.psql(f"ALTER DATABASE {pre_db} ALLOW_CONNECTIONS true")
    assert snapshot(pg, pre_db) == changed
    # database-level properties carried over
    now = db_props(pg, "rs_e2e")
    assert now["oid"] == load.staging_oid and now["allow"] is True
    for key in ("owner", "acl", "settings", "limit"):
        assert now[key] == original[key], key
    assert (READER, "TEMPORARY", True) in now["acl"] and (None, "CONNECT", False) not in now["acl"]
    # the application's own role connects and can create a table in public, as a migration would
    with psycopg.connect(ci(pg, "rs_e2e", OWNER, OWNER_PASSWORD), autocommit=True) as conn:
        conn.execute("CREATE TABLE public.next_migration (id int)")
        assert conn.execute("SHOW work_mem").fetchone()[0] == "8MB"
        assert conn.execute("SHOW search_path").fetchone()[0] == '"$user", public, extra'
    summary = restore.report(preflight=pre, safety_backup={"name": safety.name}, load=load, check=chk, cutover=cut)
    assert summary["downtime_seconds"] == cut.downtime_seconds and summary["rows"] == 523
    assert set(summary["steps"]) == {"preflight", "safety_backup", "load", "check", "cutover"}
    json.dumps(summary)
    assert any("Cutover done" in line for line in lines)
    # discard the kept database: only names of the pre-restore shape of a known target
    for bad in ("rs_e2e", "postgres", "rs_e2e_restore_20261124010203", "other_pre_restore_20261124010203",
                "rs_e2e_pre_restore_2026112401020", "rs_e2e_pre_restore_20261124010203; DROP", None):
        with pytest.raises(Invalid):
            restore.discard_previous(ci(pg), bad, target="rs_e2e")
    assert restore.discard_previous(ci(pg), pre_db, target="rs_e2e")["dropped"] is True
    assert restore.discard_previous(ci(pg), pre_db, target="rs_e2e")["dropped"] is False
    assert not exists(pg, pre_db) and exists(pg, "rs_e2e")


def test_offline_mode_and_every_run_and_undo_twice(pg, tmp_path):
    make_db(pg, "rs_twice")
    backed_up = snapshot(pg, "rs_twice")
    original = db_props(pg, "rs_twice")
    path = take_backup(pg, tmp_path, "rs_twice")
    change_data(pg, "rs_twice")
    changed = snapshot(pg, "rs_twice")
    size, sha = approve(path)
    pre = restore.preflight(ci(pg), path, expected_size=size, expected_sha256=sha, target="rs_twice")
    block = restore.BlockConnections(ci(pg), "rs_twice", original_connection_limit=pre.connection_limit,
                                     target_oid=pre.target_oid)
    first_block = block.run()
    assert block.run().previous_connection_limit == first_block.previous_connection_limit == 7
    with pytest.raises(psycopg.OperationalError, match="too many connections"):
        psycopg.connect(ci(pg, "rs_twice", OWNER, OWNER_PASSWORD))
    # the safety backup (a superuser connection) still runs while the application is kept out
    backups.local_backup(ci(pg, "rs_twice"), str(tmp_path / "safety"), "hcap-patroni")
    step = restore.LoadStaging(ci(pg), path, "rs_twice", sha256=sha, stamp="20261124020000")
    load = step.run()
    again = step.run()
    assert again.already_loaded and again.staging_oid == load.staging_oid and again.copy_rows == load.copy_rows
    chk = restore.check_staging(ci(pg), load, connection_limit=pre.connection_limit)
    assert restore.check_staging(ci(pg), again, connection_limit=pre.connection_limit).row_counts == chk.row_counts
    cutover = restore.Cutover(ci(pg), load)
    cut = cutover.run()
    assert cutover.run().already_done
    assert snapshot(pg, "rs_twice") == backed_up
    restored = db_props(pg, "rs_twice")
    assert restored["limit"] == 7 and restored["allow"] and restored["acl"] == original["acl"]
    summary = restore.report(preflight=pre, block=first_block, load=load, check=chk, cutover=cut)
    assert summary["application_downtime_seconds"] >= summary["downtime_seconds"] >= 0
    # undo everything, each twice, in reverse order
    cutover.undo(cut)
    cutover.undo(cut)
    assert db_props(pg, "rs_twice")["oid"] == original["oid"]
    assert exists(pg, "rs_twice_restore_20261124020000") and not exists(pg, "rs_twice_pre_restore_20261124020000")
    step.undo(load)
    step.undo(load)
    assert not exists(pg, "rs_twice_restore_20261124020000")
    block.undo(first_block)
    block.undo(first_block)
    back = db_props(pg, "rs_twice")
    assert back["limit"] == 7 and back["allow"] is True
    assert snapshot(pg, "rs_twice") == changed
    with psycopg.connect(ci(pg, "rs_twice", OWNER, OWNER_PASSWORD)) as conn:
        conn.execute("SELECT 1")
    # and the whole cutover can happen again after an undo
    load = step.run()
    restore.check_staging(ci(pg), load)
    assert restore.Cutover(ci(pg), load).run().renames
    assert snapshot(pg, "rs_twice") == backed_up


# --- failures: the target is never missing, never half loaded -----------------------------
def assert_untouched(pg, target, data, oid, stamp):
    assert exists(pg, target)
    props = db_props(pg, target)
    assert props["oid"] == oid and props["allow"] is True
    assert snapshot(pg, target) == data
    assert not exists(pg, f"{target}_restore_{stamp}")
    assert not exists(pg, f"{target}_pre_restore_{stamp}")
    assert not child_processes()


def test_truncated_and_corrupt_files_load_nothing(pg, tmp_path):
    make_db(pg, "rs_bad")
    path = take_backup(pg, tmp_path, "rs_bad")
    change_data(pg, "rs_bad")
    live, oid = snapshot(pg, "rs_bad"), db_props(pg, "rs_bad")["oid"]
    data = Path(path).read_bytes()
    cut = tmp_path / "cut.sql.gz"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    corrupt = tmp_path / "corrupt.sql.gz"
    corrupt.write_bytes(data[:200] + bytes(b ^ 0x5A for b in data[200:260]) + data[260:])
    # a well-formed gzip whose SQL stops in the middle of a COPY block: psql would end that COPY at end of
    # input as if it were complete, so only the load's own transaction keeps the rows out
    text = gzip.decompress(data).decode()
    mid_copy = text[: text.index("\n", text.index("COPY public.applicants") + 2000) + 1]
    half = tmp_path / "half.sql.gz"
    half.write_bytes(gzip.compress(mid_copy.encode()))
    no_end = tmp_path / "noend.sql.gz"
    no_end.write_bytes(gzip.compress(text[: text.index("-- PostgreSQL database dump complete")].encode()))
    junk = tmp_path / "junk.sql.gz"
    junk.write_bytes(b"not a backup\n" * 20)
    for bad, message in ((cut, "truncated or corrupt"), (corrupt, "truncated or corrupt"), (half, "truncated"),
                         (no_end, "truncated"), (junk, "truncated or corrupt")):
        size, sha = approve(bad)
        restore.preflight(ci(pg), str(bad), expected_size=size, expected_sha256=sha, target="rs_bad")
        with pytest.raises(restore.RestoreFailed, match=message):
            restore.LoadStaging(ci(pg), str(bad), "rs_bad", sha256=sha, stamp="20261124030000").run()
        assert_untouched(pg, "rs_bad", live, oid, "20261124030000")


def test_a_changed_file_is_refused(pg, tmp_path):
    make_db(pg, "rs_sum")
    path = take_backup(pg, tmp_path, "rs_sum")
    live, oid = snapshot(pg, "rs_sum"), db_props(pg, "rs_sum")["oid"]
    size, sha = approve(path)
    data = bytearray(Path(path).read_bytes())
    data[-9] ^= 0xFF  # same size, different content (in the gzip trailer's CRC)
    Path(path).write_bytes(bytes(data))
    with pytest.raises(restore.RestoreFailed, match="approved sha256"):
        restore.preflight(ci(pg), path, expected_size=size, expected_sha256=sha, target="rs_sum")
    with pytest.raises(restore.RestoreFailed, match="approved file was"):
        restore.preflight(ci(pg), path, expected_size=size + 1, expected_sha256=sha, target="rs_sum")
    # changed after the preflight: the load hashes what it reads and commits nothing
    with pytest.raises(restore.RestoreFailed):
        restore.LoadStaging(ci(pg), path, "rs_sum", sha256=sha, stamp="20261124040000").run()
    assert_untouched(pg, "rs_sum", live, oid, "20261124040000")
    # a good file whose approved checksum is not its own
    good = take_backup(pg, tmp_path, "rs_sum", second=1)
    with pytest.raises(restore.RestoreFailed, match="approved sha256"):
        restore.LoadStaging(ci(pg), good, "rs_sum", sha256="0" * 64, stamp="20261124040000").run()
    assert_untouched(pg, "rs_sum", live, oid, "20261124040000")
    for bad in ("abc", "0" * 63, None):
        with pytest.raises(Invalid):
            restore.preflight(ci(pg), good, expected_size=size, expected_sha256=bad, target="rs_sum")
    with pytest.raises(restore.NotFound):
        restore.preflight(ci(pg), good, expected_size=os.path.getsize(good), expected_sha256=restore.sha256_file(good),
                          target="rs_no_such_db")


@pytest.mark.parametrize("tamper,message", [
    ("DELETE FROM applicants WHERE id <= 3", "public.applicants has 497 rows, the backup 500"),
    ("DROP TABLE empty_one", "public.empty_one is missing from staging"),
    ("CREATE TABLE stray (v int)", "public.stray is in staging but has no data section"),
])
def test_staging_that_does_not_match_the_backup_fails_the_check(pg, tmp_path, tamper, message):
    make_db(pg, "rs_chk")
    path = take_backup(pg, tmp_path, "rs_chk")
    change_data(pg, "rs_chk")
    live, oid = snapshot(pg, "rs_chk"), db_props(pg, "rs_chk")["oid"]
    size, sha = approve(path)
    step = restore.LoadStaging(ci(pg), path, "rs_chk", sha256=sha, stamp="20261124050000")
    load = step.run()
    pg.psql(tamper, load.staging)
    with pytest.raises(restore.CheckFailed, match=message):
        restore.check_staging(ci(pg), load)
    step.undo(load)
    assert_untouched(pg, "rs_chk", live, oid, "20261124050000")


@pytest.mark.parametrize("held", ["target", "staging"])
def test_a_rename_that_fails_leaves_the_target_under_its_name_accepting_connections(pg, tmp_path, held):
    make_db(pg, "rs_busy")
    backed_up = snapshot(pg, "rs_busy")
    path = take_backup(pg, tmp_path, "rs_busy")
    change_data(pg, "rs_busy")
    live, oid = snapshot(pg, "rs_busy"), db_props(pg, "rs_busy")["oid"]
    size, sha = approve(path)
    load = restore.LoadStaging(ci(pg), path, "rs_busy", sha256=sha, stamp="20261124060000").run()
    restore.check_staging(ci(pg), load)
    # a superuser session holds the target open, and the cutover runs as a role that may not end it
    pg.psql("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rs_operator') THEN "
            "CREATE ROLE rs_operator LOGIN CREATEDB PASSWORD 'rs-op-pw'; END IF; END $$")
    pg.psql(f"GRANT {OWNER} TO rs_operator")
    holder = psycopg.connect(ci(pg, "rs_busy" if held == "target" else load.staging), autocommit=True)
    try:
        with pytest.raises(restore.CutoverFailed) as info:
            restore.Cutover(ci(pg, user="rs_operator", password="rs-op-pw"), load).run()
        assert "being accessed by other users" in str(info.value)
        assert f"rs_busy keeps its data and accepts connections again" in str(info.value)
        if held == "target":  # the first rename failed: nothing was changed
            assert "could not be ended" in str(info.value) and "Nothing was changed" in str(info.value)
        else:  # the second failed: the first was reversed
            assert "rs_busy_pre_restore_20261124060000 was renamed back" in str(info.value)
        assert holder.execute("SELECT 1").fetchone() == (1,)
    finally:
        holder.close()
    props = db_props(pg, "rs_busy")
    assert props["oid"] == oid and props["allow"] is True and snapshot(pg, "rs_busy") == live
    assert not exists(pg, "rs_busy_pre_restore_20261124060000") and exists(pg, load.staging)
    with psycopg.connect(ci(pg, "rs_busy", OWNER, OWNER_PASSWORD)) as conn:
        conn.execute("SELECT 1")
    # with the session gone the same cutover goes through
    restore.Cutover(ci(pg), load).run()
    assert snapshot(pg, "rs_busy") == backed_up


# --- what the load runs and what it never runs --------------------------------------------
def test_existing_roles_are_never_altered_and_missing_ones_are_created(pg, tmp_path):
    make_db(pg, "rs_roles")
    pg.psql("DROP ROLE IF EXISTS rs_new_role")
    path = take_backup(pg, tmp_path, "rs_roles")
    owner_line = next(l for l in gzip.decompress(Path(path).read_bytes()).decode().splitlines()
                      if l.startswith(f"ALTER ROLE {OWNER} WITH"))

    def edit(text):
        text = text.replace(owner_line, f"ALTER ROLE {OWNER} WITH NOSUPERUSER NOLOGIN PASSWORD 'stolen';")
        extra = ("CREATE ROLE rs_new_role;\n"
                 "ALTER ROLE rs_new_role WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION "
                 "NOBYPASSRLS;\n"
                 "COMMENT ON ROLE rs_new_role IS 'made; by the restore';\n"
                 f"ALTER ROLE {OWNER} SET work_mem TO '1MB';\n"
                 f"GRANT {READER} TO rs_new_role GRANTED BY postgres;\n"
                 f"GRANT rs_new_role TO {OWNER} GRANTED BY postgres;\n")
        return text.replace("--\n-- User Configurations\n--\n", extra + "--\n-- User Configurations\n--\n")

    edited = rewrite(path, tmp_path / "roles.sql.gz", edit)
    size, sha = approve(edited)
    step = restore.LoadStaging(ci(pg), edited, "rs_roles", sha256=sha, stamp="20261124070000")
    load = step.run()
    assert load.roles_created == ["rs_new_role"] and OWNER in load.roles_existing
    assert any("stolen" in s for s in load.roles_statements_skipped)
    # the existing role keeps LOGIN, its password, its settings and memberships
    with psycopg.connect(ci(pg, "rs_roles", OWNER, OWNER_PASSWORD)) as conn:
        assert conn.execute("SHOW work_mem").fetchone()[0] == "8MB"
    assert pg.psql(f"SELECT rolcanlogin, rolconfig IS NULL FROM pg_roles WHERE rolname = '{OWNER}'").strip() == "t|t"
    assert pg.psql(f"SELECT pg_has_role('{OWNER}', 'rs_new_role', 'MEMBER')").strip() == "f"
    # the missing role got what the backup gives it
    assert pg.psql("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'rs_new_role'").strip() == "f"
    assert pg.psql(f"SELECT pg_has_role('rs_new_role', '{READER}', 'MEMBER')").strip() == "t"
    assert pg.psql("SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = 'rs_new_role'"
                   ).strip() == "made; by the restore"
    # running again changes nothing; undo drops staging and the role it created
    assert step.run().already_loaded
    undone = step.undo(load)
    assert undone.roles_dropped == ["rs_new_role"]
    assert pg.psql("SELECT count(*) FROM pg_roles WHERE rolname = 'rs_new_role'").strip() == "0"
    step.undo(load)


@pytest.mark.parametrize("where,injected,error", [
    ("dump", "\\! touch {marker}\n", restore.RestoreRefused),
    ("dump", "SELECT 1; \\! touch {marker}\n", restore.RestoreFailed),  # mid-line: psql's \restrict mode refuses
    ("dump", "\\connect postgres\n\\! touch {marker}\n", restore.RestoreRefused),
    ("dump-copy", "\\! touch {marker}\n", restore.RestoreRefused),
    ("roles", "\\! touch {marker}\n", restore.RestoreRefused),
    ("roles", "DROP DATABASE rs_meta;\n", restore.RestoreRefused),
])
def test_meta_commands_and_stray_statements_are_refused(pg, tmp_path, where, injected, error):
    make_db(pg, "rs_meta")
    live, oid = snapshot(pg, "rs_meta"), db_props(pg, "rs_meta")["oid"]
    path = take_backup(pg, tmp_path, "rs_meta")
    marker = tmp_path / "pwned"
    line = injected.format(marker=marker)

    def edit(text):
        if where == "roles":
            return text.replace("--\n-- User Configurations\n--\n", line + "--\n-- User Configurations\n--\n")
        if where == "dump-copy":  # right after a COPY block has ended
            end = text.index("\n\\.\n", text.index("COPY public.sites")) + 4
            return text[:end] + line + text[end:]
        return text.replace("SET row_security = off;\n", "SET row_security = off;\n" + line, 1)

    edited = rewrite(path, tmp_path / "meta.sql.gz", edit)
    size, sha = approve(edited)
    with pytest.raises(error):
        restore.LoadStaging(ci(pg), edited, "rs_meta", sha256=sha, stamp="20261124080000").run()
    assert not marker.exists()
    assert_untouched(pg, "rs_meta", live, oid, "20261124080000")


def test_patroni_only_extensions_are_skipped_and_reported_other_errors_stop(pg, tmp_path):
    make_db(pg, "rs_ext")
    live, oid = snapshot(pg, "rs_ext"), db_props(pg, "rs_ext")["oid"]
    path = take_backup(pg, tmp_path, "rs_ext")
    patroni = ("CREATE EXTENSION IF NOT EXISTS pg_stat_kcache WITH SCHEMA public;\n"
               "COMMENT ON EXTENSION pg_stat_kcache IS 'Kernel statistics gathering';\n"
               "CREATE EXTENSION IF NOT EXISTS set_user WITH SCHEMA public;\n")
    edited = rewrite(path, tmp_path / "patroni.sql.gz",
                     lambda t: t.replace("SET default_table_access_method = heap;\n",
                                         patroni + "SET default_table_access_method = heap;\n"))
    size, sha = approve(edited)
    step = restore.LoadStaging(ci(pg), edited, "rs_ext", sha256=sha, stamp="20261124090000")
    load = step.run()
    assert len(load.benign_skipped) == 3 and "pg_stat_kcache" in load.benign_skipped[0]
    restore.check_staging(ci(pg), load)
    step.undo(load)
    other = rewrite(path, tmp_path / "other.sql.gz",
                    lambda t: t.replace("SET default_table_access_method = heap;\n",
                                        "CREATE EXTENSION IF NOT EXISTS no_such_extension WITH SCHEMA public;\n"
                                        "SET default_table_access_method = heap;\n"))
    size, sha = approve(other)
    with pytest.raises(restore.RestoreFailed, match="no_such_extension"):
        restore.LoadStaging(ci(pg), other, "rs_ext", sha256=sha, stamp="20261124090000").run()
    assert_untouched(pg, "rs_ext", live, oid, "20261124090000")


@pytest.mark.parametrize("raise_on_call", [1, 2, 3])
def test_cancel_kills_the_children_and_drops_staging(pg, tmp_path, raise_on_call):
    make_db(pg, "rs_cancel")
    live, oid = snapshot(pg, "rs_cancel"), db_props(pg, "rs_cancel")["oid"]
    path = take_backup(pg, tmp_path, "rs_cancel")
    size, sha = approve(path)
    calls = []

    class Cancelled(Exception):
        pass

    def check():
        calls.append(1)
        if len(calls) >= raise_on_call:
            raise Cancelled()

    # the load calls check() at least before creating staging, after the roles and before COMMIT,
    # so each of these cancels lands while the load is under way, whatever the machine's speed
    with pytest.raises(Cancelled):
        restore.LoadStaging(ci(pg), path, "rs_cancel", sha256=sha, stamp="20261124100000", check=check).run()
    assert_untouched(pg, "rs_cancel", live, oid, "20261124100000")


def test_names_are_validated_by_shape():
    for bad in ("", "a-b", "x" * 37, "Robert'); DROP", "postgres", "template1", None, 5, "1abc"):
        with pytest.raises(Invalid):
            restore.validate_target(bad)
    for bad in ("2026112401000", "20261324010000", "abcdefghijklmn", None):
        with pytest.raises(Invalid):
            restore.staging_name("hcap", bad)
    assert restore.pre_restore_name("hcap", "20261124010203") == "hcap_pre_restore_20261124010203"
    with pytest.raises(Invalid):
        restore.stamp_of("other_restore_20261124010203", "hcap")


def test_roles_section_parser():
    lines = [b"--\n", b"-- PostgreSQL database cluster dump\n", b"\\restrict abc\n",
             b"SET default_transaction_read_only = off;\n", b'CREATE ROLE "Odd ""Name""";\n',
             b"ALTER ROLE \"Odd \"\"Name\"\"\" WITH NOLOGIN;\n", b"COMMENT ON ROLE app IS 'a;\n", b"b';\n",
             b"GRANT reader TO app WITH INHERIT TRUE GRANTED BY postgres;\n", b"\\unrestrict abc\n"]
    parsed = restore.parse_roles_section(lines)
    assert [(k, r) for k, r, _ in parsed] == [("create", 'Odd "Name"'), ("alter", 'Odd "Name"'), ("alter", "app"),
                                               ("grant", "app")]
    for bad in (b"CREATE ROLE x; DROP DATABASE hcap;\n", b"CREATE ROLE x SUPERUSER;\n", b"\\! id\n",
                b"SELECT 1;\n", b"ALTER ROLE x WITH LOGIN\n"):
        with pytest.raises(restore.RestoreRefused):
            restore.parse_roles_section([bad])


def test_rerun_after_a_crash_resumes_the_load_and_the_cutover(pg, tmp_path):
    make_db(pg, "rs_crash")
    backed_up = snapshot(pg, "rs_crash")
    path = take_backup(pg, tmp_path, "rs_crash")
    change_data(pg, "rs_crash")
    changed, oid = snapshot(pg, "rs_crash"), db_props(pg, "rs_crash")["oid"]
    size, sha = approve(path)
    # a worker died during the load: its staging exists, without the marker a complete load commits
    pg.psql("CREATE DATABASE rs_crash_restore_20261124110000")
    pg.psql("CREATE TABLE half_loaded (v int)", "rs_crash_restore_20261124110000")
    step = restore.LoadStaging(ci(pg), path, "rs_crash", sha256=sha, stamp="20261124110000")
    load = step.run()
    assert not load.already_loaded
    restore.check_staging(ci(pg), load)  # no stray half_loaded table: staging was made again
    # a worker died between the two renames of the cutover
    pg.psql("ALTER DATABASE rs_crash ALLOW_CONNECTIONS false")
    pg.psql("ALTER DATABASE rs_crash RENAME TO rs_crash_pre_restore_20261124110000")
    cutover = restore.Cutover(ci(pg), load)
    cut = cutover.run()
    assert cut.resumed and cut.original_oid == oid
    assert snapshot(pg, "rs_crash") == backed_up and db_props(pg, "rs_crash")["allow"] is True
    cutover.undo(cut)
    assert db_props(pg, "rs_crash")["oid"] == oid and snapshot(pg, "rs_crash") == changed
    step.undo(load)
    assert_untouched(pg, "rs_crash", changed, oid, "20261124110000")


def test_the_line_filter_is_a_parameter(pg, tmp_path):
    """An optional line filter gets the dump's lines (never the roles
    section) before ops.backups' check and yields those to run; its refusal
    stops the load."""
    make_db(pg, "rs_filter")
    live, oid = snapshot(pg, "rs_filter"), db_props(pg, "rs_filter")["oid"]
    path = take_backup(pg, tmp_path, "rs_filter")
    size, sha = approve(path)
    seen = []

    def shared_filter(lines):
        for line in lines:
            seen.append(line)
            if line.startswith(b'COPY public."Mixed Case"'):
                raise Invalid("refused by the shared filter")
            yield line

    with pytest.raises(Invalid, match="shared filter"):
        restore.LoadStaging(ci(pg), path, "rs_filter", sha256=sha, stamp="20261124120000",
                            line_filter=shared_filter).run()
    assert seen and not any(b"cluster dump" in line for line in seen)  # the roles section is parsed, not filtered
    assert_untouched(pg, "rs_filter", live, oid, "20261124120000")
    with pytest.raises(Invalid):
        restore.LoadStaging(ci(pg), None, "rs_filter", sha256=sha)
    with pytest.raises(Invalid):
        restore.preflight(ci(pg), "", expected_size=size, expected_sha256=sha, target="rs_filter")


# --- the load's chunk-wise check -----------------------------------------------------------
# A dump section with everything the chunk-wise check must find wherever a chunk
# boundary falls: psql's own \restrict lines (blanked), a Patroni-only extension
# (left out), COPY data whose lines begin with backslashes (data, never commands:
# only a line that is exactly \. ends the block), a CRLF block, and pg_dump's
# closing line.
CHUNK_DUMP = (b"-- PostgreSQL database dump\n"
              b"SET row_security = off;\n"
              b"\\restrict k3y\n"
              b"CREATE EXTENSION IF NOT EXISTS pg_stat_kcache WITH SCHEMA public;\n"
              b"COMMENT ON EXTENSION pg_stat_kcache IS 'Kernel statistics gathering';\n"
              b"CREATE EXTENSION IF NOT EXISTS plpgsql WITH SCHEMA pg_catalog;\n"
              b"COPY public.t (a, b) FROM stdin;\n"
              b"1\t\\N\n"
              b"\\\\.\n"
              b"\\! not a command\n"
              b"\\.x\n"
              b"\\.\n"
              b"COPY public.\"Mixed Case\" (v) FROM stdin;\r\n"
              b"a\r\n"
              b"\\.\r\n"
              b"SELECT 1;\r\n"
              b"\\unrestrict k3y\n"
              b"-- PostgreSQL database dump complete\n")


def chunk_reader(data: bytes, chunk_size: int):
    import io

    return restore._LoadReader(io.BytesIO(data), benign_extensions=restore.BENIGN_MISSING_EXTENSIONS,
                               available={"plpgsql"}, chunk_size=chunk_size)


def read_all(reader) -> bytes:
    return b"".join(iter(reader.read_chunk, b""))


def test_the_chunk_wise_check_gives_the_same_result_wherever_a_chunk_ends():
    expected = (CHUNK_DUMP.replace(b"\\restrict k3y\n", b"\n").replace(b"\\unrestrict k3y\n", b"\n")
                .replace(b"CREATE EXTENSION IF NOT EXISTS pg_stat_kcache WITH SCHEMA public;\n", b"")
                .replace(b"COMMENT ON EXTENSION pg_stat_kcache IS 'Kernel statistics gathering';\n", b""))
    for chunk_size in range(1, len(CHUNK_DUMP) + 2):
        reader = chunk_reader(CHUNK_DUMP, chunk_size)
        assert read_all(reader) == expected, chunk_size
        assert reader.copy_rows == {"public.t": 4, 'public."Mixed Case"': 1}, chunk_size
        assert reader.complete and not reader.in_copy and len(reader.benign) == 2, chunk_size
        assert reader.preamble.startswith(b"\\restrict ") and b"k3y" not in reader.preamble
    # a dump that stops inside COPY data is seen as unfinished, however it is cut
    cut = CHUNK_DUMP[:CHUNK_DUMP.index(b"\\.x\n")]
    for chunk_size in range(1, len(cut) + 2):
        reader = chunk_reader(cut, chunk_size)
        read_all(reader)
        assert reader.in_copy and not reader.complete and reader.copy_rows == {"public.t": 3}


@pytest.mark.parametrize("after,bad", [
    (b"SET row_security = off;\n", b"\\! touch /tmp/x\n"),
    (b"SET row_security = off;\n", b"  \\o /tmp/out\n"),
    (b"SET row_security = off;\n", b"\\connect postgres\n"),
    (b"\\.x\n\\.\n", b"\\! touch /tmp/x\n"),            # right after a COPY block ended with \.
    (b"a\r\n\\.\r\n", b"\\copy t from '/etc/passwd'\r\n"),  # after a CRLF block
    (b"SELECT 1;\r\n", b"\\gexec\r\n"),
])
def test_a_meta_command_is_refused_wherever_a_chunk_ends(after, bad):
    at = CHUNK_DUMP.index(after) + len(after)
    data = CHUNK_DUMP[:at] + bad + CHUNK_DUMP[at:]
    line = CHUNK_DUMP[:at].count(b"\n") + 1
    for chunk_size in range(1, len(data) + 2):
        reader = chunk_reader(data, chunk_size)
        with pytest.raises(backups.UnsafeSQL, match=f"^line {line}: psql meta-command"):
            read_all(reader)


def test_a_copy_line_whose_table_cannot_be_read_is_refused():
    data = CHUNK_DUMP.replace(b"COPY public.t (a, b) FROM stdin;\n", b"COPY public.T (a) FROM stdin;\n")
    with pytest.raises(restore.RestoreRefused, match="cannot read the table name"):
        read_all(chunk_reader(data, 64))


def test_a_load_in_tiny_chunks_equals_the_backup(pg, tmp_path):
    make_db(pg, "rs_chunks")
    backed_up = snapshot(pg, "rs_chunks")
    path = take_backup(pg, tmp_path, "rs_chunks")
    size, sha = approve(path)
    step = restore.LoadStaging(ci(pg), path, "rs_chunks", sha256=sha, stamp="20261124130000", chunk_size=7)
    load = step.run()
    assert load.copy_rows == {"public.applicants": 500, "public.sites": 20, 'public."Mixed Case"': 3,
                              "public.empty_one": 0}
    restore.check_staging(ci(pg), load)
    assert snapshot(pg, "rs_chunks_restore_20261124130000") == backed_up
    step.undo(load)
    assert not exists(pg, "rs_chunks_restore_20261124130000")


# --- the roles of a load that did not finish -------------------------------------------------
def role_oid(pg, name):
    out = pg.psql(f"SELECT oid FROM pg_roles WHERE rolname = '{name}'").strip()
    return int(out) if out else None


def test_roles_recorded_before_commit_are_reused_by_a_rerun_and_only_they_are_dropped(pg, tmp_path):
    role = "rs_own_role"
    make_db(pg, "rs_own")
    pg.psql(f"DROP ROLE IF EXISTS {role}")
    pg.psql(f"CREATE ROLE {role} NOLOGIN")
    path = take_backup(pg, tmp_path, "rs_own")
    pg.psql(f"DROP ROLE {role}")
    size, sha = approve(path)
    stamp = "20261124140000"
    statements = [("create", role, f"CREATE ROLE {role};")]
    try:
        # a run whose worker died after its roles were committed: what it recorded before the commit
        recorded = []
        first = restore.apply_roles(ci(pg), statements, record=recorded.append)
        oid = role_oid(pg, role)
        assert recorded == [{role: oid}] and first["created"] == [role]
        # the rerun, given that record, knows the role as this restore's own
        step = restore.LoadStaging(ci(pg), path, "rs_own", sha256=sha, stamp=stamp, own_roles=recorded[0],
                                   record_roles=recorded.append)
        load = step.run()
        assert load.roles_created == [role] and load.role_oids == {role: oid} and role not in load.roles_existing
        assert recorded[-1] == {role: oid}
        step.undo(load)
        assert role_oid(pg, role) is None
        # a load that never finished: undo drops what it recorded
        restore.apply_roles(ci(pg), statements, record=recorded.append)
        undone = step.undo({"target": "rs_own", "staging": f"rs_own_restore_{stamp}", "staging_oid": 0,
                            "role_oids": recorded[-1]})
        assert undone.roles_dropped == [role] and role_oid(pg, role) is None
        # a role of the same name made by someone else afterwards is neither reused nor dropped
        restore.apply_roles(ci(pg), statements, record=recorded.append)
        pg.psql(f"DROP ROLE {role}")
        pg.psql(f"CREATE ROLE {role} NOLOGIN")
        theirs = role_oid(pg, role)
        undone = step.undo({"target": "rs_own", "staging": f"rs_own_restore_{stamp}", "staging_oid": 0,
                            "role_oids": recorded[-1]})
        assert undone.roles_dropped == [] and role_oid(pg, role) == theirs
        again = restore.LoadStaging(ci(pg), path, "rs_own", sha256=sha, stamp=stamp, own_roles=recorded[-1]).run()
        assert again.roles_created == [] and role in again.roles_existing
        step.undo(again)
        assert role_oid(pg, role) == theirs
    finally:
        pg.psql(f"DROP ROLE IF EXISTS {role}")


# --- COPY FREEZE --------------------------------------------------------------------------
FREEZE_DUMP = (b"-- PostgreSQL database dump\n"
               b"CREATE TABLE public.plain (\n    a integer\n);\n"
               b"CREATE TABLE public.parted (\n    a integer\n)\nPARTITION BY RANGE (a);\n"
               b"CREATE TABLE public.leaf (\n    a integer\n);\n"
               b"CREATE UNLOGGED TABLE public.\"Odd Name\" (\n    a integer\n);\n"
               b"ALTER TABLE ONLY public.parted ATTACH PARTITION public.leaf FOR VALUES FROM (0) TO (10);\n"
               b"COPY public.plain (a) FROM stdin;\n1\n\\.\n"
               b"COPY public.parted (a) FROM stdin;\n2\n\\.\n"
               b"COPY public.leaf (a) FROM stdin;\r\n3\r\n\\.\r\n"
               b"COPY public.\"Odd Name\" (a) FROM stdin;\n4\n\\.\n"
               b"COPY public.not_created_here (a) FROM stdin;\n5\n\\.\n"
               b"-- PostgreSQL database dump complete\n")


def test_copy_freeze_only_into_tables_the_load_creates_and_never_into_a_partitioned_one():
    """A COPY gets WITH (FREEZE) when its table's CREATE TABLE came earlier
    in the load (one transaction) and no PARTITION BY followed it, wherever
    the chunks end; the COPY data and the row counts are unchanged."""
    expected = (FREEZE_DUMP.replace(b"COPY public.plain (a) FROM stdin;", b"COPY public.plain (a) FROM stdin WITH (FREEZE);")
                .replace(b"COPY public.leaf (a) FROM stdin;\r", b"COPY public.leaf (a) FROM stdin WITH (FREEZE);\r")
                .replace(b'COPY public."Odd Name" (a) FROM stdin;', b'COPY public."Odd Name" (a) FROM stdin WITH (FREEZE);'))
    for chunk_size in range(1, len(FREEZE_DUMP) + 2):
        reader = chunk_reader(FREEZE_DUMP, chunk_size)
        assert read_all(reader) == expected, chunk_size
        assert reader.frozen == ["public.plain", "public.leaf", 'public."Odd Name"'], chunk_size
        assert reader.copy_rows == {"public.plain": 1, "public.parted": 1, "public.leaf": 1,
                                    'public."Odd Name"': 1, "public.not_created_here": 1}, chunk_size


def frozen_pages(pg, db, table) -> tuple[int, int]:
    """(pages, all-frozen pages) of ``table`` in ``db``, from pg_visibility."""
    pg.psql("CREATE EXTENSION IF NOT EXISTS pg_visibility", db)
    out = pg.psql(f"SELECT pg_relation_size('{table}') / current_setting('block_size')::int, all_frozen "
                  f"FROM pg_visibility_map_summary('{table}')", db)
    pages, frozen = out.strip().split("|")
    return int(pages), int(frozen)


@pytest.mark.parametrize("via_root", [False, True], ids=["partitions", "load-via-partition-root"])
def test_a_load_writes_its_tables_frozen_and_loads_partitioned_dumps(pg, tmp_path, via_root):
    """Real pg_dump output of partitioned, sub-partitioned, inherited,
    unlogged and oddly named tables loads and passes the check; the tables
    the load created hold only frozen pages (so the check's first scan
    writes nothing), and a --load-via-partition-root dump's COPY into the
    partitioned parent is left without FREEZE (PostgreSQL would refuse it)."""
    import subprocess

    db = "rs_freeze_root" if via_root else "rs_freeze"
    for name in (db, *list_like(pg, db)):
        pg.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    pg.psql(f"CREATE DATABASE {db}")
    pg.psql("""
        CREATE TABLE m (id int, d date) PARTITION BY RANGE (d);
        CREATE TABLE m1 PARTITION OF m FOR VALUES FROM ('2020-01-01') TO ('2021-01-01') PARTITION BY LIST (id);
        CREATE TABLE m1a PARTITION OF m1 FOR VALUES IN (1);
        CREATE TABLE m2 PARTITION OF m FOR VALUES FROM ('2021-01-01') TO ('2022-01-01');
        CREATE TABLE par (a int);
        CREATE TABLE chi (b int) INHERITS (par);
        CREATE UNLOGGED TABLE u (x int);
        CREATE TABLE "Weird Name" (x int);
        INSERT INTO m SELECT 1, '2020-05-01' FROM generate_series(1, 300);
        INSERT INTO m SELECT g, '2021-05-01' FROM generate_series(1, 3000) g;
        INSERT INTO chi SELECT g, g FROM generate_series(1, 400) g;
        INSERT INTO par SELECT g FROM generate_series(1, 50) g;
        INSERT INTO u SELECT g FROM generate_series(1, 2000) g;
        INSERT INTO "Weird Name" SELECT g FROM generate_series(1, 5000) g;
    """, db)
    dump = subprocess.run(["pg_dump", "--no-owner", *(["--load-via-partition-root"] if via_root else []),
                           f"--dbname={ci(pg, db)}"], check=True, capture_output=True).stdout
    path = tmp_path / f"{db}.sql.gz"
    path.write_bytes(gzip.compress(dump))
    _, sha = approve(path)
    load = restore.LoadStaging(ci(pg), str(path), db, sha256=sha, stamp="20261125120000").run()
    check = restore.check_staging(ci(pg), load)
    if via_root:
        assert set(load.copy_freeze) == {"public.chi", "public.par", "public.u", 'public."Weird Name"'}
        assert load.copy_rows["public.m"] == 3300
    else:
        assert set(load.copy_freeze) == {"public.chi", "public.par", "public.u", 'public."Weird Name"',
                                         "public.m1a", "public.m2"}
    assert sum(check.row_counts.values()) == 3300 + 400 + 50 + 2000 + 5000
    for table in ("chi", "u", '"Weird Name"', *(() if via_root else ("m2",))):
        pages, frozen = frozen_pages(pg, load.staging, table)
        assert pages > 0 and frozen == pages, (table, pages, frozen)
    restore.LoadStaging(ci(pg), str(path), db, sha256=sha, stamp="20261125120000").undo(load)
    assert not exists(pg, load.staging)
