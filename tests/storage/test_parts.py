"""URL parsing, cache, retries, key escaping and lazy imports."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from organelle.errors import ConfigError, StorageUnavailableError
from organelle.storage import (
    CachedStore,
    Change,
    Entry,
    MemoryStore,
    NatsKvStore,
    Page,
    PostgresStore,
    RedisStore,
    RetryPolicy,
    SqliteStore,
    Store,
    open_store,
)
from organelle.storage._common import prefix_upper
from organelle.storage._nats_keys import decode_key, encode_key, subject_filter
from organelle.storage.retry import retrying
from organelle.storage.url import store_backend
from organelle.testing import eventually
from organelle.testing.servers import NatsServer, free_port

pytestmark = pytest.mark.timeout(30)


async def test_open_store_urls(tmp_path: Path) -> None:
    async with await open_store("memory://") as mem:
        assert isinstance(mem, MemoryStore)
    store = await open_store(f"sqlite:///{tmp_path}/x.db")
    assert isinstance(store, SqliteStore)
    assert store.path == f"{tmp_path}/x.db"
    assert (tmp_path / "x.db").exists()  # opened: connected and the table made
    await store.close()
    assert isinstance(store_backend("sqlite:///:memory:"), SqliteStore)
    assert isinstance(store_backend("postgresql://u@h/db"), PostgresStore)
    assert isinstance(store_backend("postgres://u@h/db", table="t"), PostgresStore)
    kv = store_backend("nats-kv://u:p@h1:1,h2:2/bucket?connect_timeout_s=0.5")
    assert isinstance(kv, NatsKvStore)
    assert (kv.servers, kv.bucket) == (["nats://h1:1", "nats://h2:2"], "bucket")
    red = store_backend("redis://:pw@h:1/2?prefix=app&socket_timeout=1")
    assert isinstance(red, RedisStore)
    assert (red.url, red.prefix) == ("redis://:pw@h:1/2?socket_timeout=1", "app")
    opts = kv.connect_options
    assert (opts.user, opts.password, opts.connect_timeout_s) == ("u", "p", 0.5)
    for bad in [
        "",
        "nope",
        "mongodb://x",
        "redis://h:1/0?prefix=no{tag}",
        "sqlite://",
        "nats-kv://h:1",
        "nats-kv://h:1/a/b",
        "nats-kv://h:1/b?colour=red",
    ]:
        with pytest.raises(ConfigError):
            await open_store(bad)
    with pytest.raises(ConfigError) as err:
        await open_store("nats-kv://h:1/b", tls_ca=str(tmp_path / "missing.pem"))
    assert err.value.details["key"] == "tls_ca"


def test_key_escaping_is_a_bijection() -> None:
    for key in ["a", "a.b", "a..b", ".", "..", "=", "=3D", "é", "x y", "*", ">", "$KV", "a/b-c_d"]:
        encoded = encode_key(key)
        assert decode_key(encoded) == key
        assert all(c.isalnum() or c in "-/_=." for c in encoded)
        assert not encoded.startswith(".")
        assert not encoded.endswith(".")
    assert subject_filter("orders.") == "orders.>"
    assert subject_filter("orders.12") == "orders.>"
    assert subject_filter("ord") == ">"


def test_value_types_are_immutable_keyword_only_values() -> None:
    entry = Entry(key="k", value={"a": 1}, revision=3)
    assert entry == Entry(key="k", value={"a": 1}, revision=3, expires_at=None)
    assert entry != Entry(key="k", value={"a": 1}, revision=4)
    assert repr(entry) == "Entry(key='k', value={'a': 1}, revision=3, expires_at=None)"
    with pytest.raises(AttributeError):
        entry.key = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Entry("k", 1, 3)  # type: ignore[call-arg]
    assert hash(Entry(key="k", value=1, revision=3)) == hash(Entry(key="k", value=1, revision=3))
    change = Change(key="k", value=None, revision=4, op="delete")
    assert repr(change) == "Change(key='k', value=None, revision=4, op='delete')"
    assert Change(key="k", value=1, revision=5).op == "put"
    page = Page(items=[entry])
    assert (page.items, page.cursor) == ([entry], None)
    with pytest.raises(AttributeError):
        page.cursor = "k"  # type: ignore[misc]


def test_prefix_upper() -> None:
    assert prefix_upper("") is None
    assert prefix_upper("ab") == "ac"
    assert prefix_upper("a\U0010ffff") == "b"
    assert prefix_upper("\ud7ff") == "\ue000"


def test_backends_are_imported_lazily() -> None:
    code = (
        "import sys, organelle.storage as s; "
        "assert 'asyncpg' not in sys.modules and 'nats' not in sys.modules; "
        "s.MemoryStore(); assert 'sqlite3' not in sys.modules, 'sqlite3'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


async def test_cache_reads_through_and_invalidates() -> None:
    inner = MemoryStore()
    cache = CachedStore(inner, ttl_s=60)
    await cache.put("k", 1)
    assert (await cache.get("k")).value == 1  # type: ignore[union-attr]
    assert (await cache.get("k")).value == 1  # type: ignore[union-attr]
    assert (cache.hits, cache.misses) == (1, 1)
    await inner.put("k", 2)  # behind the cache's back: stale until invalidated
    assert (await cache.get("k")).value == 1  # type: ignore[union-attr]
    await cache.put("k", 3)
    assert (await cache.get("k")).value == 3  # type: ignore[union-attr]
    await cache.delete("k")
    assert await cache.get("k") is None
    await cache.put("t", 1, ttl_s=0.05)
    assert await cache.get("t") is not None

    async def expired() -> None:
        assert await cache.get("t") is None  # the entry's own expiry wins over the cache TTL

    await eventually(expired, timeout_s=0.08)
    await cache.close()


async def test_cache_ttl_bounds_staleness() -> None:
    inner = MemoryStore()
    cache = CachedStore(inner, ttl_s=0.05, max_entries=2)
    await inner.put("k", 1)
    assert (await cache.get("k")).value == 1  # type: ignore[union-attr]
    await inner.put("k", 2)

    async def fresh() -> None:
        assert (await cache.get("k")).value == 2  # type: ignore[union-attr]

    await eventually(fresh, timeout_s=0.08)  # stale for at most the cache's 0.05 s
    for key in "abc":
        await cache.get(key)
    assert len(cache._cache) == 2


async def test_retry_gives_up_with_unavailable() -> None:
    calls = 0

    async def flaky() -> int:
        nonlocal calls
        calls += 1
        raise OSError("connection refused")

    policy = RetryPolicy(budget_s=0.3, base_delay_s=0.01, max_delay_s=0.05)
    with pytest.raises(StorageUnavailableError) as info:
        await retrying(flaky, policy=policy, is_transient=lambda e: isinstance(e, OSError))
    assert calls > 1
    assert info.value.code == "organelle.storage.unavailable"
    assert isinstance(info.value.__cause__, OSError)
    with pytest.raises(KeyError):  # not transient: raised at once
        await retrying(lambda: _raise(KeyError("x")), policy=policy, is_transient=lambda _e: False)


async def _raise(exc: Exception) -> None:
    raise exc


async def test_unreachable_backends_fail_within_budget(tmp_path: Path) -> None:
    policy = RetryPolicy(budget_s=1.0, base_delay_s=0.05)
    port = free_port()
    stores: list[Store] = [
        PostgresStore(f"postgresql://postgres@127.0.0.1:{port}/postgres", retry=policy),
        NatsKvStore(servers=f"nats://127.0.0.1:{port}", bucket="b", retry=policy),
        SqliteStore(str(tmp_path / "missing-dir" / "x.db"), retry=policy),
    ]
    for store in stores:
        start = time.monotonic()
        with pytest.raises(StorageUnavailableError):
            await store.put("k", 1)
        assert time.monotonic() - start < 10
        await store.close()


async def test_sqlite_locked_by_another_writer_is_retried_then_unavailable(tmp_path: Path) -> None:
    import sqlite3

    path = str(tmp_path / "locked.db")
    store = SqliteStore(path, busy_timeout_s=0.05, retry=RetryPolicy(budget_s=0.5))
    await store.put("k", 1)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StorageUnavailableError):
            await store.put("k", 2)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert await store.put("k", 3) > 0  # lock gone: works again
    assert (await store.get("k")).value == 3  # type: ignore[union-attr]
    await store.close()


async def test_nats_kv_rides_out_a_server_restart() -> None:
    server = await asyncio.to_thread(NatsServer().start)
    try:
        store = NatsKvStore(
            servers=server.url,
            bucket=f"r{uuid.uuid4().hex[:8]}",
            retry=RetryPolicy(budget_s=15),
            op_timeout_s=1,
        )
        await store.put("before", 1)
        server.kill()
        restart = asyncio.create_task(asyncio.to_thread(_restart_later, server))
        assert await store.put("during", 2) > 0  # retried until the server is back
        await restart
        assert (await store.get("before")).value == 1  # type: ignore[union-attr]
        assert (await store.get("during")).value == 2  # type: ignore[union-attr]
        await store.close()
    finally:
        await asyncio.to_thread(server.close)


def _restart_later(server: NatsServer) -> None:
    time.sleep(0.5)
    server.restart()
