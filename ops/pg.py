"""Connecting to PostgreSQL with psycopg, and the one place a failed
connection becomes an ops error.

Both platform drivers and the migrations reader connect to the managed
database; a connection that cannot be made must read the same everywhere
("<what> unreachable: <libpq's first line>"), never a traceback or the
password-bearing connection string."""

from __future__ import annotations

import psycopg

from ops.errors import Unavailable


def first_line(exc: BaseException) -> str:
    """The first line of an error's text (libpq adds detail lines), or the
    error's type when it has no text."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def connect(conninfo: str, *, timeout: float = 5.0, what: str = "managed database",
            error: type[Unavailable] = Unavailable, **kwargs) -> psycopg.Connection:
    """``psycopg.connect`` with a whole-second connect timeout (at least 1);
    an OperationalError becomes ``error("<what> unreachable: ...")``."""
    try:
        return psycopg.connect(conninfo, connect_timeout=max(1, int(timeout)), **kwargs)
    except psycopg.OperationalError as exc:
        raise error(f"{what} unreachable: {first_line(exc)}") from None
