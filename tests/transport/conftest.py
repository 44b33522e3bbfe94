"""A NATS server for the transport tests (shared per session) and a config per test.

Every test gets its own subject prefix (and so its own registry bucket):
tests sharing the server never see each other's modules, calls or events.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from organelle.testing.servers import NatsServer, shared_nats

Config = Callable[..., dict[str, Any]]


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    with shared_nats() as server:
        yield server


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def node_config(url: str, prefix: str, **options: Any) -> dict[str, Any]:
    """A kernel config joining the cluster on ``url`` under ``prefix`` with fast heartbeats."""
    kernel = options.pop("kernel", {})
    opts = {"prefix": prefix, "heartbeat_s": 0.2, "registry_ttl_s": 1.0, **options}
    return {"kernel": {"transport": url, "transport_options": opts, **kernel}}


@pytest.fixture
def config(nats_server: NatsServer, prefix: str) -> Config:
    def make(**options: Any) -> dict[str, Any]:
        return node_config(nats_server.url, prefix, **options)

    return make
