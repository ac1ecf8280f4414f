"""The rows of node-pg-migrate's migrations table, read the way the tool reads
them (``ORDER BY run_on, id``), with "no table yet" told apart from "cannot
read it" and from "cannot reach the database"."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import psycopg
from psycopg import sql

from ops import pg
from ops.errors import OpsError, Unavailable


class DatabaseUnavailable(Unavailable):
    """The managed database cannot be reached."""


class MigrationsTableError(OpsError):
    """The database answered, but the migrations table cannot be read."""


class AppliedRow(NamedTuple):
    id: int
    name: str
    run_on: datetime | None


@dataclass
class AppliedState:
    rows: list[AppliedRow]
    table_exists: bool


def read_applied(conninfo: str, table: str = "pgmigrations", schema: str = "public", timeout: float = 5) -> AppliedState:
    """Rows of the migrations table ``ORDER BY run_on, id``.  A missing table
    is not an error (nothing applied yet); an unreachable database is."""
    conn = pg.connect(conninfo, timeout=timeout, error=DatabaseUnavailable, autocommit=True)
    try:
        with conn:
            cur = conn.cursor()
            cur.execute("SELECT set_config('statement_timeout', %s, false)", [str(int(timeout * 1000))])
            cur.execute(
                "SELECT c.relkind FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
                [schema, table],
            )
            if cur.fetchone() is None:
                return AppliedState([], False)
            cur.row_factory = lambda _cursor: AppliedRow._make
            cur.execute(sql.SQL("SELECT id, name, run_on FROM {} ORDER BY run_on, id").format(
                sql.Identifier(schema, table)))
            return AppliedState(cur.fetchall(), True)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"managed database connection lost: {str(exc).strip()[:200]}") from None
    except psycopg.Error as exc:
        raise MigrationsTableError(f"cannot read {schema}.{table}: {pg.first_line(exc)[:200]}") from None
