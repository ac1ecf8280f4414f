"""The local driver: the managed PostgreSQL reached directly, backups in a
folder with backup-container's layout."""

from __future__ import annotations

import psycopg

from ops.errors import Unavailable
from ops.platform.base import PlatformDriver


class LocalDriver(PlatformDriver):
    name = "local"

    def __init__(self, *, database_conninfo: str, backup_dir: str, migrations_dir: str, backup_host: str = "hcap-patroni",
                 patroni_url: str | None = None, node_pg_migrate: str | None = None, log_backup_dir: str | None = None,
                 **_ignored):
        self.database_conninfo = database_conninfo
        self.backup_dir = backup_dir
        self.migrations_dir = migrations_dir
        self.backup_host = backup_host
        self.patroni_url = patroni_url
        self.node_pg_migrate = node_pg_migrate
        self.log_backup_dir = log_backup_dir  # None: no log backups here

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

    # --- backups (issue 4) ---------------------------------------------------------
    def list_backups(self) -> list:
        from ops.backups import scan_local

        return scan_local(self.backup_dir)

    def take_backup(self, *, log=None, check=None, now=None):
        from ops.backups import local_backup

        return local_backup(self.database_conninfo, self.backup_dir, self.backup_host, now=now, log=log, check=check)

    def verify_backup(self, entry, *, log=None, check=None) -> dict:
        from ops.backups import verify_local

        # in a throwaway server this worker starts, never on the managed one
        return verify_local(entry.path, log=log, check=check)

    # --- log database (MongoDB) backups: listed and checked, never taken (no mongodump) ---
    def list_log_backups(self) -> list:
        from ops.logbackups import scan_local

        return scan_local(self.log_backup_dir)

    def verify_log_backup(self, entry, *, log=None, check=None) -> dict:
        from ops.logbackups import check_archive

        return check_archive(entry.path, log=log, check=check)

    def cluster_members(self, timeout: float = 3.0) -> dict:
        """Patroni's REST API ``GET /cluster`` when HCAPADMIN_PATRONI_URL is set,
        otherwise a single server."""
        if not self.patroni_url:
            return {"mode": "single", "leader": None, "members": [
                {"name": self.describe().split(" · ", 1)[-1], "role": "single server", "state": "running"}]}
        import json
        import urllib.error
        import urllib.request

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
            members.append({"name": member.get("name", "?"), "role": role, "state": member.get("state", ""),
                            "lag": member.get("lag"), "timeline": member.get("timeline"),
                            "host": member.get("host")})
        return {"mode": "patroni", "leader": leader, "members": members}
