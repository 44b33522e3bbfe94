"""Session-wide real servers for storage tests (shared with every other conftest using them)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests._redis import redis_or_skip

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
