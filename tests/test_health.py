"""/healthz and /readyz."""

import time

import pytest
from django.test import override_settings


def test_healthz_needs_nothing(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.content == b"ok\n"


@pytest.mark.django_db
def test_readyz_ok_when_everything_answers(client):
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok", body
    assert set(body["components"]) == {"database", "redis", "mongodb", "platform"}
    for component in body["components"].values():
        assert component["ok"] is True
        assert component["error"] is None
        assert component["latency_ms"] >= 0


@pytest.mark.django_db
def test_readyz_reports_dead_redis_and_mongo_quickly(client, settings):
    from devtools.services import free_port

    dead = free_port()
    settings.REDIS_URL = f"redis://127.0.0.1:{dead}/0"
    settings.MONGO_URL = f"mongodb://127.0.0.1:{dead}/"
    started = time.monotonic()
    response = client.get("/readyz")
    elapsed = time.monotonic() - started
    body = response.json()
    assert elapsed < 3.0
    assert response.status_code == 200
    assert body["status"] == "degraded"
    assert body["components"]["redis"]["ok"] is False
    assert "Connection" in body["components"]["redis"]["error"]
    assert body["components"]["mongodb"]["ok"] is False
    assert body["components"]["database"]["ok"] is True


@pytest.mark.django_db
def test_readyz_never_hangs_on_a_silent_server(client, settings, silent_server):
    """A server that accepts connections and never answers."""
    port, _ = silent_server
    settings.MONGO_URL = f"mongodb://127.0.0.1:{port}/"
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
    started = time.monotonic()
    body = client.get("/readyz").json()
    assert time.monotonic() - started < 3.0
    assert body["status"] == "degraded"
    assert not body["components"]["mongodb"]["ok"]
    assert not body["components"]["redis"]["ok"]
