"""devtools.services: the sandbox's and the harness's server management."""

import socket

import pytest

from devtools import services


def test_refuses_to_start_on_a_port_already_in_use(tmp_path):
    """A server left over from an earlier sandbox must not be mistaken for
    the new one (the new one would fail to bind while the port answered)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        with pytest.raises(RuntimeError, match=f"already listens on 127.0.0.1:{port}"):
            services.Redis(port, tmp_path / "redis").start()
        with pytest.raises(RuntimeError, match="cannot start ferretdb"):
            services.FerretDB(port, tmp_path / "ferret", "postgres://unused@127.0.0.1:1/x").start()
    finally:
        listener.close()


def test_redis_starts_and_stops_on_a_free_port(tmp_path):
    import redis

    server = services.Redis(services.free_port(), tmp_path / "redis").start()
    try:
        assert redis.Redis.from_url(server.url()).ping() is True
    finally:
        server.stop()
    with pytest.raises(redis.exceptions.ConnectionError):
        redis.Redis.from_url(server.url(), socket_connect_timeout=1).ping()


def test_free_ports_come_from_below_the_ephemeral_range(monkeypatch):
    """A port the kernel may give an outgoing connection could be taken
    between the check and the server's bind: ports come from below the
    ephemeral range, are bindable, and bind(0) is the fallback when there is
    no room below it."""
    low, _high = services._ephemeral_range()
    ports = {services.free_port() for _ in range(20)}
    assert all(services._LISTEN_PORTS_FLOOR <= port < low for port in ports), ports
    assert len(ports) > 1  # random, so runs side by side rarely meet
    for port in ports:
        assert services._bindable(port)
    monkeypatch.setattr(services, "_ephemeral_range", lambda: (services._LISTEN_PORTS_FLOOR + 10, 60999))
    fallback = services.free_port()
    assert fallback >= services._LISTEN_PORTS_FLOOR + 10 and services._bindable(fallback)
