"""Real servers for the testing kit's own tests (shared with every other conftest using them)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from organelle.testing.servers import NatsServer, PostgresServer, shared_nats, shared_postgres


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    with shared_nats() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with shared_postgres() as server:
        yield server
