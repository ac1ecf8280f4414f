"""Turn a ``postgres://`` URL into Django/psycopg connection settings."""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlsplit


def parse(value: str) -> dict:
    """Return Django's ``DATABASES`` entry for a PostgreSQL URL.

    Query parameters become psycopg connection options (``sslmode`` etc.).
    A socket directory may be given as ``?host=/path``.
    """
    parts = urlsplit(value)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError("expected a postgres:// URL")
    options = dict(parse_qsl(parts.query))
    host = unquote(parts.hostname or "") or options.pop("host", "")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")) or "postgres",
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": host,
        "PORT": str(parts.port or ""),
        "OPTIONS": options,
    }


def to_conninfo(value: str) -> str:
    """A libpq keyword/value string for psycopg.connect / pg_dump ``-d``."""
    cfg = parse(value)
    pairs = {
        "dbname": cfg["NAME"],
        "user": cfg["USER"],
        "password": cfg["PASSWORD"],
        "host": cfg["HOST"],
        "port": cfg["PORT"],
        **cfg["OPTIONS"],
    }

    def quote(v: str) -> str:
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"

    return " ".join(f"{k}={quote(str(v))}" for k, v in pairs.items() if v not in ("", None))
