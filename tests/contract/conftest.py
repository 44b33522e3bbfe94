"""Session-wide real servers for storage tests (shared with every other conftest using them)."""

from __future__ import annotations

import http.client
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from tests._redis import redis_or_skip

from organelle.testing._process import HOST, free_port
from organelle.testing.servers import (
    NatsServer,
    PostgresServer,
    RedisServer,
    shared_nats,
    shared_postgres,
)


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    with shared_nats() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with shared_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    yield from redis_or_skip()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """An S3 endpoint: moto's standalone server in its own process, on loopback (real HTTP).

    Its own process, not ``ThreadedMotoServer``, so what it holds never shows in
    this process's ``tracemalloc`` (the blob suite measures its own memory).
    """
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from moto.server import main; main()", "-H", HOST, "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with code {proc.returncode}")
            try:
                conn = http.client.HTTPConnection(HOST, port, timeout=1)
                conn.request("GET", "/moto-api/")
                conn.getresponse().read()
                conn.close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"http://{HOST}:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
