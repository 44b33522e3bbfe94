"""RedisStore beyond the contract: URLs, cross-client watch, expiry events, restarts, outages."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from organelle.errors import ConfigError, StorageUnavailableError, ValidationError
from organelle.storage import RedisStore, RetryPolicy, open_store
from organelle.testing import eventually
from organelle.testing.servers import RedisServer

pytestmark = pytest.mark.timeout(30)


def prefix() -> str:
    return f"s{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def pair(redis_server: RedisServer) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    """Two stores on one prefix: two clients, as two processes would have."""
    p = prefix()
    a = RedisStore(redis_server.url, prefix=p, sweep_interval_s=0.05)
    b = await open_store(f"{redis_server.url}?prefix={p}")
    assert isinstance(b, RedisStore)
    yield a, b
    await a.close()
    await b.close()


async def test_url_picks_redis_and_prefix_isolates(redis_server: RedisServer) -> None:
    one = await open_store(f"{redis_server.url}?prefix={prefix()}")
    two = await open_store(f"{redis_server.url}?prefix={prefix()}")
    try:
        await one.put("k", 1)
        assert await two.get("k") is None
        assert (await one.get("k")).value == 1  # type: ignore[union-attr]
    finally:
        await one.close()
        await two.close()
    with pytest.raises(ConfigError):
        await open_store(f"{redis_server.url}?prefix=bad{{tag}}")
    with pytest.raises(ConfigError):
        RedisStore("http://127.0.0.1:1/0")


async def test_watch_sees_other_clients_and_expiry(pair: tuple[RedisStore, RedisStore]) -> None:
    a, b = pair
    async with b.watch("w.") as changes:
        await a.put_many({"w.1": 1, "w.2": 2, "x": 0})
        await a.put("w.t", "short", ttl_s=0.1)
        await a.delete("w.1")
        got = [await asyncio.wait_for(anext(changes), 5) for _ in range(5)]
    ops = [(c.key, c.op) for c in got]
    assert ops == [
        ("w.1", "put"),
        ("w.2", "put"),
        ("w.t", "put"),
        ("w.1", "delete"),
        ("w.t", "expire"),  # published by a's sweeper
    ]
    revs = [c.revision for c in got]
    assert revs == sorted(revs)
    assert len(set(revs)) == len(revs)
    assert await b.get("w.t") is None
    assert [e.key for e in (await b.scan("w.")).items] == ["w.2"]


async def test_acknowledged_writes_survive_kill_with_aof() -> None:
    async with RedisServer(appendonly=True, appendfsync="always") as server:
        store = RedisStore(server.url, retry=RetryPolicy(budget_s=10.0))
        try:
            revs = await store.put_many({f"d.{i}": i for i in range(50)})
            server.kill()  # SIGKILL: no shutdown save
            server.restart()

            async def back() -> None:
                got = await store.get_many(list(revs))
                assert {k: e.revision for k, e in got.items()} == revs

            await eventually(back, timeout_s=10, interval_s=0.1)
            assert await store.put("after", 1) > max(revs.values())  # the counter survived too
        finally:
            await store.close()


async def test_outage_gives_typed_errors_and_ends_watches() -> None:
    async with RedisServer() as server:
        store = RedisStore(server.url, retry=RetryPolicy(budget_s=0.3))
        try:
            await store.put("k", 1)
            watch = await store.watch().start()
            server.kill()
            with pytest.raises(StorageUnavailableError):
                await store.get("k")
            with pytest.raises(StorageUnavailableError):
                await asyncio.wait_for(anext(watch), 5)
            server.restart()
            await eventually(lambda: store.put("k", 2), timeout_s=10, interval_s=0.1)
        finally:
            await store.close()


@pytest.mark.parametrize("codec", ["msgpack", "json"])
async def test_incr_is_one_script_exact_and_keeps_expiry(
    redis_server: RedisServer, codec: str
) -> None:
    store = RedisStore(redis_server.url, prefix=prefix(), codec=codec)
    try:
        await asyncio.gather(*(store.incr("n") for _ in range(50)))
        assert (await store.get("n")).value == 50  # type: ignore[union-attr]
        await store.put("t", 5, ttl_s=30)
        assert await store.incr("t", -7) == -2
        entry = await store.get("t")
        assert entry is not None
        assert entry.value == -2
        assert entry.expires_at is not None  # incr kept the expiry
        big = 2**53 - 1
        await store.put("big", big)
        assert await store.incr("big", 2) == big + 2  # past Lua's exact range: still exact
        assert await store.incr("big", 2**60) == big + 2 + 2**60
        assert (await store.get("big")).value == big + 2 + 2**60  # type: ignore[union-attr]
        for value in [2.0, True, None, "3", b"3", [1]]:
            await store.put("odd", value)
            with pytest.raises(ValidationError):
                await store.incr("odd")
            assert (await store.get("odd")).value == value  # type: ignore[union-attr]
    finally:
        await store.close()
