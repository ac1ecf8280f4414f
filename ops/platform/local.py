"""The local driver: the managed PostgreSQL reached directly, backups in a
folder with backup-container's layout."""

from __future__ import annotations

import psycopg

from ops.errors import Unavailable
from ops.platform.base import PlatformDriver


class LocalDriver(PlatformDriver):
    name = "local"

    def __init__(self, *, database_conninfo: str, backup_dir: str, migrations_dir: str, backup_host: str = "hcap-patroni",
                 patroni_url: str | None = None, node_pg_migrate: str | None = None, **_ignored):
        self.database_conninfo = database_conninfo
        self.backup_dir = backup_dir
        self.migrations_dir = migrations_dir
        self.backup_host = backup_host
        self.patroni_url = patroni_url
        self.node_pg_migrate = node_pg_migrate

    def connect(self, timeout: float = 5.0, **kwargs) -> psycopg.Connection:
        try:
            return psycopg.connect(self.database_conninfo, connect_timeout=max(1, int(timeout)), **kwargs)
        except psycopg.OperationalError as exc:
            raise Unavailable(f"managed database unreachable: {str(exc).strip().splitlines()[0]}") from None

    def ping(self, timeout: float = 2.0) -> None:
        with self.connect(timeout) as conn:
            conn.execute("SELECT 1")

    def describe(self) -> str:
        with_db = psycopg.conninfo.conninfo_to_dict(self.database_conninfo)
        return f"local · {with_db.get('host', 'localhost')}:{with_db.get('port', '5432')}/{with_db.get('dbname', '')}"
