"""/healthz and /readyz.

Nothing here depends on the machine's speed: the probe's time bound is
checked by asserting the configured timeouts and by a check that never
answers (released at the end of the test), not by timing real work."""

import logging
import threading

import pytest

from hcapadmin.core import health

COMPONENTS = {"database", "redis", "mongodb", "platform"}
GUARD_SECONDS = 120  # failure guard only: a hung probe fails the test instead of hanging the suite


def test_healthz_needs_nothing(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.content == b"ok\n"


@pytest.mark.django_db
def test_readyz_ok_when_everything_answers(client):
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 200, body
    assert body == {"status": "ok", "components": {name: "ok" for name in COMPONENTS}}
    details = health.readiness()
    assert set(details["components"]) == COMPONENTS
    for component in details["components"].values():
        assert component["ok"] is True and component["error"] is None and component["latency_ms"] >= 0


@pytest.mark.django_db
def test_readyz_reports_dead_redis_and_mongo_without_details(client, settings, caplog):
    from devtools.services import free_port

    dead = free_port()
    settings.REDIS_URL = f"redis://127.0.0.1:{dead}/0"
    settings.MONGO_URL = f"mongodb://127.0.0.1:{dead}/"
    caplog.set_level(logging.WARNING, logger="hcapadmin.core.health")
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "degraded",
                               "components": {"database": "ok", "redis": "down", "mongodb": "down", "platform": "ok"}}
    text = response.content.decode()
    assert str(dead) not in text and "127.0.0.1" not in text and "Error" not in text
    # the details go to the portal's own log
    assert "readiness: redis is down" in caplog.text and "readiness: mongodb is down" in caplog.text
    assert str(dead) in caplog.text


@pytest.mark.django_db
def test_readyz_database_down_is_503_without_details(client, settings, monkeypatch):
    def refused():
        raise OSError('connection to server at "db.internal", port 5432 failed: password for user "hcapadmin"')

    monkeypatch.setitem(health.CHECKS, "database", refused)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "down" and response.json()["components"]["database"] == "down"
    assert b"db.internal" not in response.content and b"hcapadmin" not in response.content


@pytest.mark.django_db
def test_readyz_on_a_silent_server_reports_down(client, settings, silent_server):
    """A server that accepts connections and never answers."""
    port, _ = silent_server
    settings.MONGO_URL = f"mongodb://127.0.0.1:{port}/"
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
    body = client.get("/readyz").json()
    assert body["status"] == "degraded"
    assert body["components"]["mongodb"] == "down" and body["components"]["redis"] == "down"


def test_clients_use_the_short_timeouts(settings):
    assert health.CLIENT_TIMEOUT < health.CHECK_TIMEOUT < 3
    redis = health.redis_client()
    try:
        kwargs = redis.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == health.CLIENT_TIMEOUT
    finally:
        redis.close()
    mongo = health.mongo_client()
    try:
        assert mongo.options.server_selection_timeout == health.CLIENT_TIMEOUT
        assert mongo.options.pool_options.connect_timeout == health.CLIENT_TIMEOUT
        assert mongo.options.pool_options.socket_timeout == health.CLIENT_TIMEOUT
    finally:
        mongo.close()


@pytest.mark.django_db
def test_readiness_answers_while_a_check_never_does(monkeypatch):
    """The probe waits CHECK_TIMEOUT for its checks, never for a check that
    hangs: that component is reported down and the others as they are."""
    release = threading.Event()
    started = threading.Event()

    def hangs():
        started.set()
        release.wait()

    monkeypatch.setitem(health.CHECKS, "mongodb", hangs)
    waits = []
    real_wait = health.wait

    def recording_wait(futures, timeout=None, **kwargs):
        waits.append(timeout)
        return real_wait(futures, timeout=timeout, **kwargs)

    monkeypatch.setattr(health, "wait", recording_wait)
    result = {}
    thread = threading.Thread(target=lambda: result.update(health.readiness()), daemon=True)
    try:
        thread.start()
        thread.join(GUARD_SECONDS)
        assert not thread.is_alive(), "readiness() waited for a check that never answers"
    finally:
        release.set()
    assert started.is_set() and waits == [health.CHECK_TIMEOUT]
    mongodb = result["components"]["mongodb"]
    assert mongodb["ok"] is False and mongodb["error"] == f"no answer within {health.CHECK_TIMEOUT:g}s"
    assert result["status"] == "degraded"
    assert health.public_summary(result)["components"]["mongodb"] == "down"


@pytest.mark.django_db
def test_dashboard_shows_readiness_details_to_admins_only(client_as, settings, tmp_path):
    from devtools.services import free_port

    settings.BACKUP_DIR = str(tmp_path)
    settings.PATRONI_URL = None
    dead = free_port()
    settings.REDIS_URL = f"redis://127.0.0.1:{dead}/0"
    html = client_as("admin").get("/").content.decode()
    assert 'data-testid="dash-health"' in html
    row = html[html.index('data-component="redis"'):]
    row = row[:row.index("</tr>")]
    assert "down" in row and str(dead) in row
    html = client_as("viewer").get("/").content.decode()
    assert 'data-testid="dash-health"' not in html and str(dead) not in html
