"""Typed readers for environment variables.

Every reader raises ``ImproperlyConfigured`` naming the variable and what it
expects when the value is malformed, so a typo stops start-up instead of
silently falling back to a default.  Secrets may be given as ``<NAME>_FILE``
(OpenShift mounts secrets as files); the file's content, stripped of the
trailing newline, wins over the plain variable.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _raw(name: str, environ=None) -> str | None:
    environ = os.environ if environ is None else environ
    value = environ.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def secret(name: str, default: str | None = None, environ=None) -> str | None:
    """A secret from ``NAME_FILE`` (preferred) or ``NAME``."""
    environ = os.environ if environ is None else environ
    path = _raw(name + "_FILE", environ)
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                value = fh.read().rstrip("\r\n")
        except OSError as exc:
            raise ImproperlyConfigured(
                f"{name}_FILE: cannot read {path!r} ({exc.strerror}); expected a readable file"
            ) from None
        if not value:
            raise ImproperlyConfigured(f"{name}_FILE: {path!r} is empty; expected the secret value")
        return value
    value = _raw(name, environ)
    return default if value is None else value


def string(name: str, default: str | None = None, environ=None) -> str | None:
    value = _raw(name, environ)
    return default if value is None else value


def boolean(name: str, default: bool, environ=None) -> bool:
    value = _raw(name, environ)
    if value is None:
        return default
    low = value.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={value!r}: expected a boolean (true/false, 1/0, yes/no, on/off)")


def integer(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None, environ=None) -> int:
    value = _raw(name, environ)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r}: expected an integer") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}={number}: expected an integer >= {minimum}")
    if maximum is not None and number > maximum:
        raise ImproperlyConfigured(f"{name}={number}: expected an integer <= {maximum}")
    return number


def choice(name: str, default: str, choices: tuple[str, ...], environ=None) -> str:
    value = _raw(name, environ)
    if value is None:
        return default
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r}: expected one of {', '.join(choices)}")
    return value


def url(name: str, default: str | None = None, *, schemes: tuple[str, ...], secret_value: bool = False, environ=None) -> str | None:
    """A URL whose scheme is one of ``schemes``.  The value is never echoed
    back in errors when it is a secret (it may carry a password)."""
    value = secret(name, None, environ) if secret_value else _raw(name, environ)
    if value is None:
        return default
    shown = "<hidden>" if secret_value else repr(value)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ImproperlyConfigured(f"{name}={shown}: expected a URL ({'/'.join(schemes)}://...)") from None
    if parts.scheme not in schemes or not (parts.netloc or parts.path):
        raise ImproperlyConfigured(f"{name}={shown}: expected a URL with scheme {' or '.join(schemes)}")
    return value


def csv_list(name: str, default: list[str] | None = None, environ=None) -> list[str]:
    value = _raw(name, environ)
    if value is None:
        return list(default or [])
    return [item.strip() for item in value.split(",") if item.strip()]
