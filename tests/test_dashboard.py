"""The dashboard: backups per database (red when stale), last verification,
running jobs, cluster members (single server, or Patroni's REST API)."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone

from hcapadmin.backups.models import BackupVerification
from tests.harness.kubeapi import kube_api, openshift_real  # noqa: F401  (fixtures)
from tests.test_backups_pages import put
from tests.test_jobs_pages import make

pytestmark = pytest.mark.django_db


def test_dashboard_backups_verification_jobs_single_server(client_as, tmp_path, settings):
    settings.BACKUP_DIR = str(tmp_path)
    settings.PATRONI_URL = None
    now = timezone.now()
    fresh = put(tmp_path, now - timedelta(hours=3), 2000)
    put(tmp_path, now - timedelta(hours=40), 1500, database="stale_db")
    BackupVerification.objects.create(backup_name=fresh, database="hcap", ok=True, message="restored and checked")
    [running] = make(1, kind="backup.manual", title="Manual backup", status="running")
    html = client_as("viewer").get("/").content.decode()
    hcap_row = html[html.index('data-database="hcap"'):html.index('data-database="stale_db"')]
    stale_row = html[html.index('data-database="stale_db"'):]
    assert fresh in hcap_row and 'class="ok" data-testid="backup-age"' in hcap_row and "passed" in hcap_row
    assert 'class="stale" data-testid="backup-age"' in stale_row[:2000] and "never verified" in stale_row[:2000]
    assert f"/jobs/{running.pk}/" in html and "Manual backup" in html
    assert "Single server" in html


def test_dashboard_without_backups_and_with_patroni_rest_api(client_as, tmp_path, settings):
    cluster = {"members": [
        {"name": "hcap-patroni-0", "role": "leader", "state": "running", "host": "10.0.0.1", "timeline": 3},
        {"name": "hcap-patroni-1", "role": "replica", "state": "streaming", "lag": 0, "timeline": 3},
    ]}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps(cluster).encode() if self.path == "/cluster" else b"{}"
            self.send_response(200 if self.path == "/cluster" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings.BACKUP_DIR = str(tmp_path)
        settings.PATRONI_URL = f"http://127.0.0.1:{server.server_address[1]}"
        html = client_as("auditor").get("/").content.decode()
        assert "No completed backup found." in html
        assert 'data-testid="cluster-leader">hcap-patroni-0<' in html and "hcap-patroni-1" in html
        assert "streaming" in html
    finally:
        server.shutdown()
    html = client_as("auditor").get("/").content.decode()  # the API is gone now
    assert "The cluster state cannot be read" in html and "unreachable" in html


def _openshift_dashboard(client_as, openshift_real, settings):
    """The dashboard of the OpenShift driver against the real API server behind
    the stand-in: the catalog by exec in the backup pod (the stand-in's
    handler), Patroni from the namespace's pods and leader ConfigMap.  Returns
    the page's HTML."""
    from hcapadmin.core.platform import _cached
    from tests.test_logbackups import LOG_LISTING, LOG_POD
    from tests.test_platform_openshift import EXEC, LISTING, exit_status

    settings.PLATFORM = "openshift"
    settings.OPENSHIFT_API_URL = openshift_real.url
    settings.OPENSHIFT_NAMESPACE = openshift_real.namespace
    settings.OPENSHIFT_TOKEN = openshift_real.portal_token
    settings.OPENSHIFT_CA_FILE = openshift_real.ca_file
    _cached.cache_clear()  # a driver built now, under this test's environment

    def listing(req, ws):
        ws.send_channel(1, LOG_LISTING if req.match["pod"] == LOG_POD else LISTING)
        ws.send_channel(3, exit_status(0))

    openshift_real.standin.websocket(EXEC, listing)
    try:
        return client_as("viewer").get("/").content.decode()
    finally:
        _cached.cache_clear()


def test_dashboard_on_openshift_reads_catalog_and_patroni_through_the_api(client_as, openshift_real, settings):
    html = _openshift_dashboard(client_as, openshift_real, settings)
    assert "hcap-patroni-hcap_2026-11-24_01-00-00.sql.gz" in html
    assert 'data-testid="cluster-leader">hcap-patroni-0<' in html and "hcap-patroni-1" in html
    assert "1 backup being written now." in html
    assert 'data-database="logs (MongoDB)" data-engine="mongo"' in html  # the log backup pod's newest too
    assert "hcap-mongodb-logs_2026-11-24_01-00-00.sql.gz" in html
    assert all(openshift_real.portal_token not in r.path for r in openshift_real.standin.requests)
    assert {r.bearer for r in openshift_real.standin.requests} == {openshift_real.portal_token}


def test_openshift_driver_ignores_proxy_environment(client_as, openshift_real, settings, monkeypatch):
    """The service account token goes straight to the API: a proxy named in
    the environment (here a port nobody listens on) is used neither for REST
    calls nor for exec's websocket."""
    from devtools.services import free_port

    proxy = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, proxy)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    html = _openshift_dashboard(client_as, openshift_real, settings)
    assert "hcap-patroni-hcap_2026-11-24_01-00-00.sql.gz" in html  # exec in the backup pod
    assert 'data-testid="cluster-leader">hcap-patroni-0<' in html  # REST calls
