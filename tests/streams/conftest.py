"""A session NATS server for stream tests (shared with every other conftest using it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from organelle.testing.servers import NatsServer, shared_nats


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    with shared_nats() as server:
        yield server
