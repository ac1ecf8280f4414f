"""HCAPADMIN_AUDIT_KEY: id:key entries, required outside the sandbox, never
echoed in errors, readable from a file; the sandbox derives one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from hcapadmin.audit.keys import SANDBOX_KEY_ID, parse_audit_keys, sandbox_audit_keys

ROOT = Path(__file__).resolve().parent.parent
GOOD = "k" * 40


def test_entries_in_order_first_signs():
    keys = parse_audit_keys(f"k2:{GOOD}2,\n k1 : {GOOD}1 \n", "HCAPADMIN_AUDIT_KEY")
    assert list(keys) == ["k2", "k1"] and keys["k1"] == (GOOD + "1").encode()


def test_a_key_may_contain_colons():
    assert parse_audit_keys(f"2026-11:{GOOD}:x", "V") == {"2026-11": f"{GOOD}:x".encode()}


@pytest.mark.parametrize("value,message", [
    (GOOD, "entry 1 is not id:key"),
    (f"bad id:{GOOD}", "entry 1 is not id:key"),
    ("k1:short-secret-value", "'k1' is shorter than 32 characters"),
    (f"unkeyed:{GOOD}", "reserved"),
    (f"k1:{GOOD},k1:{GOOD}x", "listed twice"),
    (" , \n", "at least one"),
])
def test_bad_values_name_the_variable_and_hide_the_key(value, message):
    with pytest.raises(ImproperlyConfigured) as err:
        parse_audit_keys(value, "HCAPADMIN_AUDIT_KEY")
    assert "HCAPADMIN_AUDIT_KEY" in str(err.value) and message in str(err.value)
    assert GOOD not in str(err.value) and "short-secret" not in str(err.value)


def test_sandbox_key_is_derived_from_the_secret_key():
    a, b = sandbox_audit_keys("secret-one"), sandbox_audit_keys("secret-two")
    assert list(a) == [SANDBOX_KEY_ID] and a != b and a == sandbox_audit_keys("secret-one")


def _check(extra_env: dict) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HCAPADMIN_") and k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    environ.update({"HCAPADMIN_MANAGED_DATABASE_URL": os.environ["HCAPADMIN_MANAGED_DATABASE_URL"]})
    environ.update(extra_env)
    return subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=environ, capture_output=True,
                          text=True, timeout=120)


def test_production_requires_the_key():
    result = _check({})
    assert result.returncode != 0
    assert "HCAPADMIN_AUDIT_KEY (or HCAPADMIN_AUDIT_KEY_FILE): required outside the sandbox" in result.stderr


def test_key_from_a_file_and_a_bad_one_is_not_echoed(tmp_path):
    key_file = tmp_path / "audit-key"
    key_file.write_text(f"k1:{GOOD}\n")
    assert _check({"HCAPADMIN_AUDIT_KEY_FILE": str(key_file)}).returncode == 0
    result = _check({"HCAPADMIN_AUDIT_KEY": "k1:hunter2-too-short"})
    assert result.returncode != 0 and "HCAPADMIN_AUDIT_KEY" in result.stderr and "hunter2" not in result.stderr


def test_sandbox_starts_without_the_key():
    assert _check({"HCAPADMIN_SANDBOX": "true"}).returncode == 0
