"""The local driver: the managed PostgreSQL reached directly with psycopg,
backups in a folder with backup-container's layout, node-pg-migrate run on
this machine against the folder ``HCAPADMIN_MIGRATIONS_DIR``.

There are no pods or workloads here: the ``Workloads`` and ``Exec``
capabilities raise ``Unsupported``."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql

from ops import backups, logbackups, pg
from ops.errors import Invalid, NotFound, OpsError, Timeout, Unavailable
from ops.migrations import runner
from ops.migrations.runner import UpResult
from ops.migrations.sources import LocalFolder, MigrationFiles
from ops.platform.base import (ClusterMember, ClusterState, PlatformDriver, ServerVersion, Unsupported,
                               VerifyFindings, database_name)


class LocalDriver(PlatformDriver):
    name = "local"

    def __init__(self, *, database_conninfo: str, backup_dir: str, migrations_dir: str, backup_host: str = "hcap-patroni",
                 patroni_url: str | None = None, node_pg_migrate: str | None = None, database_url: str | None = None,
                 migrations_table: str = "pgmigrations", migrations_schema: str = "public",
                 maintenance_database: str = "postgres", log_backup_dir: str | None = None,
                 **_ignored):
        self.database_conninfo = database_conninfo
        self.database_url = database_url
        self.backup_dir = backup_dir
        self.migrations_dir = migrations_dir
        self.backup_host = backup_host
        self.patroni_url = patroni_url
        self.node_pg_migrate = node_pg_migrate
        self.migrations_table = migrations_table
        self.migrations_schema = migrations_schema
        self.maintenance_database = maintenance_database
        self.folder = LocalFolder(migrations_dir)
        self.log_backup_dir = log_backup_dir  # None: no log backups here

    def connect(self, timeout: float = 5.0, **kwargs) -> psycopg.Connection:
        return pg.connect(self.database_conninfo, timeout=timeout, **kwargs)

    def _maintenance(self, timeout: float = 5.0) -> psycopg.Connection:
        """A connection to the server's maintenance database, outside any
        database being created, renamed or dropped."""
        conninfo = psycopg.conninfo.make_conninfo(self.database_conninfo, dbname=self.maintenance_database)
        return pg.connect(conninfo, timeout=timeout, what="managed database server", autocommit=True)

    def ping(self, timeout: float = 2.0) -> None:
        with self.connect(timeout) as conn:
            conn.execute("SELECT 1")

    def _address(self) -> str:
        with_db = psycopg.conninfo.conninfo_to_dict(self.database_conninfo)
        return f"{with_db.get('host', 'localhost')}:{with_db.get('port', '5432')}/{with_db.get('dbname', '')}"

    def describe(self) -> str:
        return f"local · {self._address()}"

    def banner(self) -> str:
        return "Local platform"

    # --- backups -----------------------------------------------------------------------
    def list_backups(self) -> list:
        return backups.scan_local(self.backup_dir)

    def take_backup(self, *, log=None, check=None, now=None):
        return backups.local_backup(self.database_conninfo, self.backup_dir, self.backup_host, now=now, log=log,
                                    check=check)

    def verify_backup(self, entry, *, log=None, check=None) -> VerifyFindings:
        # in a throwaway server this worker starts, never on the managed one
        found = backups.verify_local(entry.path, log=log, check=check)
        return VerifyFindings(f"restored into a throwaway server: {found.get('tables', 0)} tables", found)

    # --- database ----------------------------------------------------------------------
    def managed_database(self) -> str | None:
        return psycopg.conninfo.conninfo_to_dict(self.database_conninfo).get("dbname") or None

    def _run(self, statement, params=(), *, fetch: bool = False):
        try:
            with self._maintenance() as conn:
                cur = conn.execute(statement, params)
                return cur.fetchone() if fetch else None
        except pgerrors.DuplicateDatabase:
            raise Invalid("a database of that name already exists") from None
        except pgerrors.InvalidCatalogName:
            raise NotFound("no such database") from None
        except pgerrors.ObjectInUse as exc:
            raise Invalid(f"the database is in use: {pg.first_line(exc)}") from None
        except pgerrors.InsufficientPrivilege as exc:
            raise OpsError(f"the managed database refused: {pg.first_line(exc)}") from None
        except psycopg.OperationalError as exc:
            raise Unavailable(f"managed database server connection lost: {pg.first_line(exc)}") from None
        except psycopg.Error as exc:
            raise OpsError(f"the managed database server answered: {pg.first_line(exc)}") from None

    def server_version(self) -> ServerVersion:
        number, text = self._run("SELECT current_setting('server_version_num')::int, current_setting('server_version')",
                                 fetch=True)
        return ServerVersion(number, text)

    def create_database(self, name: str, *, owner: str | None = None) -> None:
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database_name(name)))
        if owner is not None:
            statement = sql.SQL("{} OWNER {}").format(statement, sql.Identifier(database_name(owner)))
        self._run(statement)

    def rename_database(self, name: str, new_name: str) -> None:
        self._run(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(database_name(name)),
                                                                   sql.Identifier(database_name(new_name))))

    def drop_database(self, name: str, *, missing_ok: bool = False) -> None:
        self._run(sql.SQL("DROP DATABASE {}{}").format(sql.SQL("IF EXISTS ") if missing_ok else sql.SQL(""),
                                                       sql.Identifier(database_name(name))))

    def block_connections(self, name: str) -> None:
        self._run(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(database_name(name))))

    def allow_connections(self, name: str) -> None:
        self._run(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(database_name(name))))

    def end_sessions(self, name: str, timeout: float = 30) -> int:
        name = database_name(name)
        others = "FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
        try:
            with self._maintenance() as conn:
                ended = conn.execute(f"SELECT count(pg_terminate_backend(pid)) {others}", [name]).fetchone()[0]
                give_up = time.monotonic() + timeout  # guards against a backend that never exits
                while conn.execute(f"SELECT count(*) {others}", [name]).fetchone()[0]:
                    if time.monotonic() > give_up:
                        raise Timeout(f"sessions on {name} were still there {timeout:g} s after being terminated")
                    time.sleep(0.05)
        except psycopg.Error as exc:
            raise Unavailable(f"could not end the sessions on {name}: {pg.first_line(exc)}") from None
        return ended

    def database_size(self, name: str) -> int:
        name = database_name(name)
        row = self._run("SELECT pg_database_size(datname) FROM pg_database WHERE datname = %s", [name], fetch=True)
        if row is None:
            raise NotFound(f"no database {name}")
        return row[0]

    # --- migrations --------------------------------------------------------------------
    def migrations_location(self) -> str:
        return self.folder.migrations_location()

    def migration_files(self) -> MigrationFiles:
        return self.folder.migration_files()

    def read_migration(self, filename: str, files: MigrationFiles | None = None) -> str:
        return self.folder.read_migration(filename, files)

    def migrate_up(self, files: MigrationFiles | None = None, *, on_line=None, timeout: float = 1800,
                   check=None) -> UpResult:
        if not self.node_pg_migrate or not self.database_url:
            raise Unsupported("node-pg-migrate or the managed database URL is not configured")
        argv = runner.local_up_argv(self.node_pg_migrate, self.migrations_dir, self.migrations_table,
                                    self.migrations_schema)
        if on_line:
            on_line("$ " + " ".join(argv) + "   (DATABASE_URL from the environment)")
        code, output = runner.run_local_up(self.node_pg_migrate, self.migrations_dir, self.database_url,
                                           self.migrations_table, self.migrations_schema, on_line=on_line,
                                           timeout=timeout, check=check)
        return UpResult(code, output)

    def backup_checksum(self, entry, *, check=None) -> str:
        try:
            return backups.sha256_file(entry.path, check=check)
        except FileNotFoundError:
            raise NotFound(f"the backup file {entry.name} is no longer there") from None
        except OSError as exc:
            raise Unavailable(f"the backup file {entry.name} cannot be read: {exc.strerror or exc}") from None

    # --- log database (MongoDB) backups: listed and checked, never taken (no mongodump) ---
    def list_log_backups(self) -> list:
        return logbackups.scan_local(self.log_backup_dir)

    def verify_log_backup(self, entry, *, log=None, check=None) -> VerifyFindings:
        found = logbackups.check_archive(entry.path, log=log, check=check)
        return VerifyFindings("structure checked (gzip, mongodump archive framing); not restored", found)

    # --- cluster -----------------------------------------------------------------------
    def cluster_state(self, timeout: float = 3.0) -> ClusterState:
        """Patroni's REST API ``GET /cluster`` when HCAPADMIN_PATRONI_URL is set,
        otherwise a single server."""
        if not self.patroni_url:
            return ClusterState("single", None, [ClusterMember(self._address(), "single server", "running")])
        url = self.patroni_url.rstrip("/") + "/cluster"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - configured http(s) URL
                data = json.loads(resp.read(1_000_000))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise Unavailable(f"Patroni REST API at {url} unreachable: {getattr(exc, 'reason', exc)}") from None
        members = []
        leader = None
        for member in data.get("members") or []:
            role = member.get("role", "")
            if role in ("leader", "standby_leader"):
                leader = member.get("name")
            members.append(ClusterMember(member.get("name", "?"), role, member.get("state", ""), member.get("lag"),
                                         member.get("timeline"), member.get("host")))
        return ClusterState("patroni", leader, members)

    # --- workloads and exec: nothing to scale or exec into on this machine ---------------
    def _no_workloads(self, *args, **kwargs):
        raise Unsupported("the local platform has no workloads (Deployments, pods, CronJobs) to manage")

    scale = wait_pods_gone = wait_pods_ready = suspend_cronjobs = resume_cronjobs = _no_workloads
    server_workload = replicas_of = cronjob_states = wait_pod_count = _no_workloads

    def _no_patronictl(self, *args, **kwargs):
        raise Unsupported("the local platform has no Patroni pods to run patronictl in")

    patroni_members = patroni_switchover = patroni_reinit = _no_patronictl

    def database_credentials(self):
        raise Unsupported("the local platform connects with HCAPADMIN_MANAGED_DATABASE_URL; it has no Secret")

    def maintenance_conninfo(self) -> str:
        return self.database_conninfo  # HCAPADMIN_MANAGED_DATABASE_URL's role (ops.restore switches databases)

    def exec(self, pod, argv, **kwargs):
        raise Unsupported("the local platform has no pods to run commands in")
