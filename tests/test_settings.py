"""Settings come from the environment and reject bad values."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from hcapadmin.lib import dburl, env

ROOT = Path(__file__).resolve().parent.parent


def test_boolean_accepts_common_spellings():
    assert env.boolean("X", False, environ={"X": "yes"}) is True
    assert env.boolean("X", True, environ={"X": "off"}) is False
    assert env.boolean("X", True, environ={}) is True


@pytest.mark.parametrize(
    "reader,value,expected",
    [
        (lambda e: env.boolean("HCAPADMIN_DEBUG", False, environ=e), "maybe", "HCAPADMIN_DEBUG='maybe': expected a boolean"),
        (lambda e: env.integer("HCAPADMIN_DEBUG", 1, environ=e), "ten", "expected an integer"),
        (lambda e: env.choice("HCAPADMIN_DEBUG", "local", ("local", "openshift"), environ=e), "k8s", "expected one of local, openshift"),
        (lambda e: env.url("HCAPADMIN_DEBUG", schemes=("https",), environ=e), "ftp://x", "expected a URL with scheme https"),
    ],
)
def test_bad_values_name_the_variable(reader, value, expected):
    with pytest.raises(ImproperlyConfigured) as exc:
        reader({"HCAPADMIN_DEBUG": value})
    assert "HCAPADMIN_DEBUG" in str(exc.value)
    assert expected in str(exc.value)


def test_secret_url_is_not_echoed_in_errors():
    with pytest.raises(ImproperlyConfigured) as exc:
        env.url("DATABASE_URL", schemes=("postgres",), secret_value=True, environ={"DATABASE_URL": "mysql://u:hunter2@h/db"})
    assert "hunter2" not in str(exc.value)
    assert "DATABASE_URL" in str(exc.value)


def test_secret_from_file_wins(tmp_path):
    f = tmp_path / "secret"
    f.write_text("from-file\n")
    assert env.secret("SECRET_KEY", environ={"SECRET_KEY": "plain", "SECRET_KEY_FILE": str(f)}) == "from-file"
    assert env.secret("SECRET_KEY", environ={"SECRET_KEY": "plain"}) == "plain"
    with pytest.raises(ImproperlyConfigured, match="SECRET_KEY_FILE"):
        env.secret("SECRET_KEY", environ={"SECRET_KEY_FILE": str(tmp_path / "missing")})


def test_dburl_parses_password_and_options():
    cfg = dburl.parse("postgres://u%40x:p%2Fw@db.example:6543/hcap?sslmode=require")
    assert (cfg["USER"], cfg["PASSWORD"], cfg["HOST"], cfg["PORT"], cfg["NAME"]) == ("u@x", "p/w", "db.example", "6543", "hcap")
    assert cfg["OPTIONS"] == {"sslmode": "require"}
    assert "password='p/w'" in dburl.to_conninfo("postgres://u:p%2Fw@h/d")


def _django_check(extra_env: dict, *args) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HCAPADMIN_") and k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    environ.update({"HCAPADMIN_MANAGED_DATABASE_URL": os.environ["HCAPADMIN_MANAGED_DATABASE_URL"]})
    environ.update(extra_env)
    return subprocess.run([sys.executable, "manage.py", "check", *args], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=120)


def test_unknown_platform_stops_startup():
    result = _django_check({"HCAPADMIN_PLATFORM": "kubernetes"})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "HCAPADMIN_PLATFORM='kubernetes': expected one of local, openshift" in result.stderr


def test_openshift_platform_requires_api_url():
    result = _django_check({"HCAPADMIN_PLATFORM": "openshift"})
    assert result.returncode != 0
    assert "HCAPADMIN_OPENSHIFT_API_URL: required" in result.stderr


def test_production_settings_pass_check_deploy():
    result = _django_check(
        {"SECRET_KEY": "k" * 30 + "-Zq8#x9!vB2@nM4$rT6&yU1*", "ALLOWED_HOSTS": "ops.example.gov.bc.ca",
         "HCAPADMIN_AUDIT_KEY": "k1:" + "a" * 20 + "-Audit-Key-Not-For-Production"}, "--deploy",
        "--fail-level", "WARNING",
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "System check identified no issues" in result.stdout


def test_openshift_api_url_must_be_https():
    """Tokens are sent there: never in clear text."""
    result = _django_check({"HCAPADMIN_OPENSHIFT_API_URL": "http://api.cluster.example:6443"})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "HCAPADMIN_OPENSHIFT_API_URL='http://api.cluster.example:6443': expected a URL with scheme https" in result.stderr
    from ops.platform.openshift import OpenShiftDriver

    with pytest.raises(ValueError, match="https"):
        OpenShiftDriver(api_url="http://api.cluster.example:6443", namespace="hcap-prod", token="t")


def test_secret_key_fallbacks_keep_old_signatures_valid(tmp_path):
    """Rotating SECRET_KEY: values signed with the old key (sessions, CSRF)
    still verify while it is listed in SECRET_KEY_FALLBACKS_FILE."""
    from django.core import signing

    old, new = "old-" + "o" * 46, "new-" + "n" * 46
    signed = signing.dumps({"user": "alice"}, key=old, salt="rotation-test")
    fallbacks = tmp_path / "fallbacks"
    fallbacks.write_text(f"{old}\n\nsomething-older-{'x' * 40}\n")
    code = ("from django.conf import settings; from django.core import signing; "
            f"print(len(settings.SECRET_KEY_FALLBACKS)); print(signing.loads({signed!r}, salt='rotation-test'))")
    environ = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "SECRET_KEY_FILE")}
    run = subprocess.run([sys.executable, "manage.py", "shell", "-v", "0", "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env={**environ, "SECRET_KEY": new,
                                                      "SECRET_KEY_FALLBACKS_FILE": str(fallbacks)})
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["2", "{'user':", "'alice'}"]
    without = subprocess.run([sys.executable, "manage.py", "shell", "-v", "0", "-c", code], cwd=ROOT, capture_output=True,
                             text=True, timeout=120, env={**environ, "SECRET_KEY": new})
    assert without.returncode != 0 and "BadSignature" in without.stderr
