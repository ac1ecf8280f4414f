"""`HCAPADMIN_SANDBOX_KUBE=true make run`: the sandbox's kube-apiserver part.

The same function the sandbox calls (devtools/sandbox.py start_kube) starts
the server; each printed ``oc login`` line, pasted into the login page,
logs in with its role; the portal's settings for it carry no token, and the
server's files live outside ./var."""

from __future__ import annotations

import re
import shutil

import pytest

from devtools import sandbox
from devtools.kube import SANDBOX_ROLE_USERS


@pytest.fixture(scope="module")
def sandbox_kube():
    kube, workdir, kube_env = sandbox.start_kube()
    try:
        yield kube, workdir, kube_env
    finally:
        kube.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_kube_enabled_reads_the_setting():
    assert sandbox.kube_enabled({}) is False
    assert sandbox.kube_enabled({"HCAPADMIN_SANDBOX_KUBE": "true"}) is True
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured):
        sandbox.kube_enabled({"HCAPADMIN_SANDBOX_KUBE": "maybe"})


@pytest.mark.django_db
def test_each_printed_login_line_logs_in_with_its_role(sandbox_kube, client, settings, caplog):
    from django.core.cache import cache
    from django.db import connection

    kube, workdir, kube_env = sandbox_kube
    banner = sandbox.token_login_banner(kube)
    lines = dict(re.findall(r"^ +(admin|approver|auditor|viewer) +(oc login --token=\S+ --server=\S+)$", banner,
                            flags=re.M))
    assert sorted(lines) == sorted(SANDBOX_ROLE_USERS)
    assert all(f"--server={kube.url}" in line for line in lines.values())
    # the portal's settings name the server, never a token
    assert set(kube_env) == {"HCAPADMIN_OPENSHIFT_API_URL", "HCAPADMIN_OPENSHIFT_CA_FILE",
                             "HCAPADMIN_OPENSHIFT_NAMESPACE"}
    assert not any("sha256~" in value for value in kube_env.values())
    assert sandbox.VAR not in workdir.parents
    settings.OPENSHIFT_API_URL = kube_env["HCAPADMIN_OPENSHIFT_API_URL"]
    settings.OPENSHIFT_CA_FILE = kube_env["HCAPADMIN_OPENSHIFT_CA_FILE"]
    settings.OPENSHIFT_NAMESPACE = kube_env["HCAPADMIN_OPENSHIFT_NAMESPACE"]
    settings.ROLE_ACCESS_REVIEW = True  # the namespace's RBAC backs each role, as HCAP's does
    cache.clear()
    for role, line in lines.items():
        response = client.post("/login/", {"token": line})
        assert response.status_code == 302, (role, response.content[:500])
        page = client.get("/").content.decode()
        assert f'data-testid="user-roles">{role}<' in page, role
        assert SANDBOX_ROLE_USERS[role][1] in page  # the demo user's name
        client.post("/logout/")
    # the tokens went nowhere: not into the log, not into any table of the portal's database
    tokens = [line.split("--token=")[1].split()[0] for line in lines.values()]
    with connection.cursor() as cur:
        cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        dump = []
        for (table,) in cur.fetchall():
            cur.execute(f'SELECT t::text FROM "{table}" t')
            dump.extend(row for (row,) in cur.fetchall())
    dump = "\n".join(dump)
    assert "ada" in dump  # the logins are recorded
    assert not [t for t in tokens if t in dump or t.split("~")[1] in dump or t in caplog.text]
