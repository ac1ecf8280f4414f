"""The local driver's capabilities against the real PostgreSQL of the test
stack: databases named by odd identifiers, connections blocked and sessions
ended for real, node-pg-migrate run for real; workloads and exec refused as
not applicable on this platform.  Also the two small helpers every driver
shares (ops/pg.py, ops/lines.py), and the rule that only the code building
the driver looks at settings.PLATFORM."""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path

import psycopg
import pytest
from django.conf import settings

from devtools.services import free_port
from hcapadmin.lib import dburl
from ops import pg as opspg
from ops.errors import Invalid, NotFound, Unavailable
from ops.lines import LineSplitter
from ops.migrations import applied
from ops.platform.base import ClusterMember, ClusterState, PlatformDriver, ServerVersion, Unsupported
from ops.platform.local import LocalDriver
from tests.test_migrations import FIXTURE, NODE_PG_MIGRATE, SAMPLE_ORDER, fresh_db  # noqa: F401  (fixture)

ODD = 'odd "name"; DROP DATABASE postgres; --'


def local_driver(pg, dbname="postgres", tmp_path=None, **extra) -> LocalDriver:
    url = pg.url(dbname)
    folder = str(tmp_path or "/nonexistent")
    return LocalDriver(database_conninfo=dburl.to_conninfo(url), database_url=url, backup_dir=folder,
                       migrations_dir=folder, **extra)


def exists(pg, name) -> bool:
    with psycopg.connect(dburl.to_conninfo(pg.url("postgres")), autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


@pytest.fixture
def names(pg):
    """Fresh database names, dropped (if they exist) afterwards."""
    made = []

    def new(prefix="drv"):
        made.append(f"{prefix}_{uuid.uuid4().hex[:8]}")
        return made[-1]

    yield new
    with psycopg.connect(dburl.to_conninfo(pg.url("postgres")), autocommit=True) as conn:
        for name in made + [n + " renamed" for n in made]:
            conn.execute(psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                psycopg.sql.Identifier(name)))


def test_the_driver_composes_every_capability(pg):
    driver = local_driver(pg)
    assert isinstance(driver, PlatformDriver)
    for method in ("list_backups", "take_backup", "verify_backup", "server_version", "create_database",
                   "rename_database", "drop_database", "block_connections", "allow_connections", "end_sessions",
                   "database_size", "migration_files", "read_migration", "migrate_up", "cluster_state", "scale",
                   "wait_pods_gone", "wait_pods_ready", "suspend_cronjobs", "resume_cronjobs", "exec"):
        assert callable(getattr(driver, method)), method


def test_server_version_and_managed_database(pg):
    driver = local_driver(pg)
    version = driver.server_version()
    assert isinstance(version, ServerVersion)
    assert version.number == int(pg.psql("SHOW server_version_num").strip())
    assert version.text == pg.psql("SHOW server_version").strip()
    assert version.major == version.number // 10000 >= 13
    assert driver.managed_database() == "postgres"


def test_create_rename_size_drop_with_an_odd_identifier(pg, names):
    driver = local_driver(pg)
    name = names() + " " + ODD
    driver.create_database(name)
    try:
        assert exists(pg, name) and exists(pg, "postgres")
        assert driver.database_size(name) > 0
        with pytest.raises(Invalid, match="already exists"):
            driver.create_database(name)
        driver.rename_database(name, name + " renamed")
        assert not exists(pg, name) and exists(pg, name + " renamed")
        driver.drop_database(name + " renamed")
        assert not exists(pg, name + " renamed")
    finally:
        for leftover in (name, name + " renamed"):
            driver.drop_database(leftover, missing_ok=True)
    with pytest.raises(NotFound):
        driver.drop_database(name)
    with pytest.raises(NotFound):
        driver.database_size(name)
    with pytest.raises(NotFound):
        driver.rename_database(name, name + "2")


@pytest.mark.parametrize("bad", ["", "x\0y", "x" * 64, "é" * 32, None, 5])
def test_bad_database_names_are_refused_before_any_sql(bad):
    # a closed port: were any SQL attempted, this would be Unavailable, not Invalid
    url = f"postgres://postgres@127.0.0.1:{free_port()}/postgres"
    driver = LocalDriver(database_conninfo=dburl.to_conninfo(url), backup_dir="/x", migrations_dir="/x")
    for call in (driver.create_database, driver.drop_database, driver.block_connections, driver.allow_connections,
                 driver.end_sessions, driver.database_size, lambda n: driver.rename_database("ok", n)):
        with pytest.raises(Invalid):
            call(bad)


def test_block_allow_connections_and_end_sessions(pg, names):
    driver = local_driver(pg)
    name = names()
    driver.create_database(name)
    conninfo = dburl.to_conninfo(pg.url(name))
    sessions = [psycopg.connect(conninfo, autocommit=True) for _ in range(2)]
    try:
        driver.block_connections(name)
        with pytest.raises(psycopg.OperationalError, match="not currently accepting connections"):
            psycopg.connect(conninfo, connect_timeout=5)
        sessions[0].execute("SELECT 1")  # blocking leaves existing sessions alone
        assert driver.end_sessions(name) == 2
        left = pg.psql(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{name}'").strip()
        assert left == "0"  # gone when end_sessions returns, not eventually
        with pytest.raises(psycopg.OperationalError):
            sessions[0].execute("SELECT 1")
        driver.allow_connections(name)
        with psycopg.connect(conninfo, connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert driver.end_sessions(name) == 0
    finally:
        for conn in sessions:
            conn.close()
    driver.drop_database(name)


def test_unreachable_server_is_unavailable():
    url = f"postgres://postgres@127.0.0.1:{free_port()}/hcap"
    driver = LocalDriver(database_conninfo=dburl.to_conninfo(url), backup_dir="/x", migrations_dir="/x")
    with pytest.raises(Unavailable, match="unreachable"):
        driver.server_version()
    with pytest.raises(Unavailable, match="unreachable"):
        driver.ping()
    assert driver.managed_database() == "hcap"


def test_workloads_and_exec_are_not_applicable_locally(pg):
    driver = local_driver(pg)
    calls = [lambda: driver.scale("Deployment", "hcap-server", 0), lambda: driver.wait_pods_gone("app=x"),
             lambda: driver.wait_pods_ready("app=x", 1), lambda: driver.suspend_cronjobs(),
             lambda: driver.resume_cronjobs([]), lambda: driver.exec("pod", ["true"])]
    for call in calls:
        with pytest.raises(Unsupported) as info:
            call()
        assert isinstance(info.value, Invalid)  # shown as a refusal (4xx), never a crash
        assert "local platform" in str(info.value)


def test_single_server_cluster_state(pg):
    state = local_driver(pg).cluster_state()
    assert state == ClusterState("single", None, [ClusterMember(f"127.0.0.1:{pg.port}/postgres", "single server",
                                                                "running")])


def test_migrations_listed_read_and_applied_through_the_driver(pg, fresh_db, tmp_path):  # noqa: F811
    name, url, conninfo = fresh_db
    folder = tmp_path / "migrations"
    shutil.copytree(FIXTURE, folder)
    (folder / "1630000000000_broken-backfill.js").unlink()
    driver = LocalDriver(database_conninfo=conninfo, database_url=url, backup_dir=str(tmp_path),
                         migrations_dir=str(folder), node_pg_migrate=NODE_PG_MIGRATE)
    files = driver.migration_files()
    assert sorted(files.names) == sorted(p.name for p in folder.iterdir() if p.is_file() and p.name[0] != ".")
    assert files.location == f"folder {folder}" == driver.migrations_location() and files.pod is None
    assert "exports.up" in driver.read_migration("1590000000000_applicants.js", files)
    with pytest.raises(NotFound):
        driver.read_migration("../1590000000000_applicants.js", files)
    lines = []
    result = driver.migrate_up(files, on_line=lines.append)
    assert result.returncode == 0, result.output
    assert lines[0].startswith(f"$ {NODE_PG_MIGRATE} up --migrations-dir {folder}")
    assert lines[0].endswith("(DATABASE_URL from the environment)")
    assert "Migrations complete!" in result.output
    assert pg.password not in "\n".join(lines)
    assert [r.name for r in applied.read_applied(conninfo).rows] == SAMPLE_ORDER[:5]
    unconfigured = LocalDriver(database_conninfo=conninfo, backup_dir=str(tmp_path), migrations_dir=str(folder))
    with pytest.raises(Unsupported):
        unconfigured.migrate_up()


def test_line_splitter_joins_chunks_into_lines():
    seen = []
    lines = LineSplitter(seen.append, keep=True)
    for chunk in ("first li", "ne\r\nsecond\n", "", "\nthird without newline"):
        lines.feed(chunk)
    assert seen == ["first line", "second", ""]
    lines.close()
    assert seen == lines.lines == ["first line", "second", "", "third without newline"]
    lines.close()
    assert seen[-1] == "third without newline" and len(seen) == 4
    silent = LineSplitter()
    silent.feed("a\nb")
    silent.close()
    assert silent.lines == []


def test_pg_connect_names_what_is_unreachable():
    class Down(Unavailable):
        pass

    conninfo = f"host=127.0.0.1 port={free_port()} dbname=x user=u password=secret-pw"
    with pytest.raises(Down) as info:
        opspg.connect(conninfo, timeout=1, what="the thing", error=Down)
    assert str(info.value).startswith("the thing unreachable: ") and "secret-pw" not in str(info.value)
    assert "\n" not in str(info.value)


def test_only_the_driver_builder_reads_the_platform_setting():
    base = Path(settings.BASE_DIR)
    found = []
    for top in ("hcapadmin", "ops", "migrations_ui"):
        for path in (base / top).rglob("*.py"):
            text = path.read_text()
            if re.search(r"\bsettings\.PLATFORM\b", text):
                found.append(str(path.relative_to(base)))
    assert found == ["hcapadmin/core/platform.py"]
