"""``RedisServer`` starts, kills and restarts exactly its own ``redis-server``."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from organelle.testing.servers import RedisServer
from tests._redis import require_redis_server

pytestmark = pytest.mark.timeout(30)


def ping(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(16)


@pytest.fixture(autouse=True)
def _needs_redis() -> None:
    require_redis_server()


def pid_of(server: RedisServer) -> int | None:
    return server.pid


def test_kill_restart_same_port_and_dir_then_close_cleans_up() -> None:
    server = RedisServer().start()
    data_dir = server.data_dir
    try:
        pid = server.pid
        assert pid is not None
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        assert ping(server.port).startswith(b"+PONG")
        server.kill()
        assert pid_of(server) is None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        with pytest.raises(OSError):  # nothing answers on the port any more
            ping(server.port)
        server.restart()
        assert pid_of(server) not in {None, pid}
        assert ping(server.port).startswith(b"+PONG")
        assert (data_dir / "redis.log").exists()
    finally:
        server.close()
    assert pid_of(server) is None
    assert not Path(data_dir).exists()  # the temporary directory it made is gone
