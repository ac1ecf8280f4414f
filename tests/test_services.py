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
