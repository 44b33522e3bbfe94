"""Every port opens the same way, on every backend.

``await open_<port>(url)`` returns the port connected; it works as ``async
with`` (entering an opened one is fine); ``close()`` may be called again; an
unknown scheme is a ``ConfigError`` with a stable code naming the scheme.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from organelle.blobs import open_blobs
from organelle.errors import ConfigError
from organelle.jobs import open_queue
from organelle.storage import open_store
from organelle.streams import StreamSpec, open_log
from organelle.testing.servers import NatsServer, PostgresServer, RedisServer

pytestmark = pytest.mark.timeout(60)

Opener = Callable[..., Awaitable[Any]]


def _tag() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def _url(request: pytest.FixtureRequest, tmp_path: Path, port: str, backend: str) -> str:
    """A fresh, isolated URL of ``backend`` for ``port`` (servers from the session fixtures)."""
    if backend == "memory":
        return "memory://"
    if backend in {"filesystem", "s3"}:
        return _blobs_url(request, tmp_path, backend)
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / f'{port}.db'}"
    if backend == "sqlite-memory":
        return "sqlite:///:memory:" if port == "store" else "sqlite://:memory:"
    if backend in {"postgresql", "redis"}:
        return _server_url(request, port, backend)
    nats: NatsServer = request.getfixturevalue("nats_server")
    host = nats.url.removeprefix("nats://")
    return {
        "store": f"nats-kv://{host}/{_tag()}",
        "jobs": f"nats://{host}?stream={_tag().upper()}",
        "streams": f"nats://{host}?prefix={_tag().upper()}",
        "blobs": f"nats://{host}?bucket={_tag()}",
    }[port]


def _server_url(request: pytest.FixtureRequest, port: str, backend: str) -> str:
    if backend == "redis":
        redis: RedisServer = request.getfixturevalue("redis_server")
        return f"{redis.url}?prefix={_tag()}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return f"{server.dsn}?table={_tag()}" if port == "jobs" else server.dsn


def _blobs_url(request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> str:
    if backend == "filesystem":
        return f"file://{tmp_path / 'blobs'}"
    endpoint: str = request.getfixturevalue("s3_server")
    return f"s3://{_tag()}?endpoint={endpoint}&region=us-east-1&create=true"


async def _store_is_open(store: Any) -> None:
    assert await store.get("absent") is None


async def _queue_is_open(queue: Any) -> None:
    assert await queue.backlog() == {}


async def _log_is_open(log: Any) -> None:
    await log.ensure("shape", StreamSpec())
    assert (await log.info("shape")).name == "shape"


async def _blobs_are_open(blobs: Any) -> None:
    assert await blobs.head("absent") is None


PORTS: dict[str, tuple[Opener, Callable[[Any], Awaitable[None]], dict[str, Any]]] = {
    "store": (open_store, _store_is_open, {}),
    "jobs": (open_queue, _queue_is_open, {}),
    "streams": (open_log, _log_is_open, {}),
    "blobs": (open_blobs, _blobs_are_open, {}),
}
CASES = [
    *(("store", b) for b in ("memory", "sqlite", "sqlite-memory", "postgresql", "nats", "redis")),
    *(("jobs", b) for b in ("memory", "sqlite", "postgresql", "nats", "redis")),
    *(("streams", b) for b in ("memory", "sqlite", "sqlite-memory", "nats")),
    *(("blobs", b) for b in ("memory", "filesystem", "s3", "nats")),
]


@pytest.mark.parametrize(("port", "backend"), CASES, ids=[f"{p}-{b}" for p, b in CASES])
async def test_open_returns_it_connected_usable_as_async_with(
    request: pytest.FixtureRequest, tmp_path: Path, port: str, backend: str
) -> None:
    opener, is_open, options = PORTS[port]
    if port == "store" and backend == "postgresql":
        options = {"table": _tag()}
    if port == "blobs" and backend == "s3":
        options = {"access_key_id": "testing", "secret_access_key": "testing"}
    url = _url(request, tmp_path, port, backend)
    async with await opener(url, **options) as opened:
        await is_open(opened)  # connected before anything else was asked of it
    await opened.close()  # closed by the block: closing again is a no-op
    await opened.close()
    port_ = await opener(url, **options)
    async with port_ as entered:  # entering an opened one opens nothing twice
        assert entered is port_
        await is_open(entered)


@pytest.mark.parametrize("port", PORTS)
async def test_an_unknown_scheme_is_a_config_error_with_a_stable_code(port: str) -> None:
    opener = PORTS[port][0]
    with pytest.raises(ConfigError) as err:
        await opener("mongodb://127.0.0.1:27017/0")
    assert err.value.code == "organelle.config"
    assert err.value.details["scheme"] == "mongodb"
    assert "mongodb" in str(err.value)
