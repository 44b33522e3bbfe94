"""Transactions around the backends: the cache, ``on_end``, closing and cancelling mid-way."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from organelle.errors import ConflictError, StorageUnavailableError
from organelle.storage import CachedStore, MemoryStore, SqliteStore, Store, current_tx
from organelle.storage._tx import TxHandle
from organelle.storage.postgres import PostgresStore
from organelle.testing.servers import PostgresServer

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    opened: Store = (
        MemoryStore() if request.param == "memory" else SqliteStore(str(tmp_path / "t.db"))
    )
    yield opened
    await opened.close()


async def test_on_end_is_told_whether_it_committed(store: Store) -> None:
    ends: list[tuple[str, bool]] = []
    async with store.transaction() as tx:
        tx.on_end(lambda ok: ends.append(("first", ok)))
        async with store.transaction() as inner:  # registered in a savepoint: the outer outcome
            inner.on_end(lambda ok: ends.append(("inner", ok)))
        joined = current_tx(store)
        assert joined is not None
        joined.on_end(lambda ok: ends.append(("joined", ok)))
    with pytest.raises(KeyError):
        async with store.transaction() as tx:
            tx.on_end(lambda ok: ends.append(("rolled", ok)))
            raise KeyError
    assert ends == [("first", True), ("inner", True), ("joined", True), ("rolled", False)]


async def test_the_cache_never_keeps_what_a_transaction_wrote_or_hid(store: Store) -> None:
    cache = CachedStore(store, ttl_s=60)
    await cache.put("k", "old")
    assert (await cache.get("k")).value == "old"  # type: ignore[union-attr]
    with pytest.raises(KeyError):
        async with cache.transaction() as tx:
            await cache.put("k", "rolled")  # joins the transaction
            assert (await cache.get("k")).value == "rolled"  # type: ignore[union-attr]
            assert (await tx.get("k")).value == "rolled"  # type: ignore[union-attr]
            raise KeyError
    assert (await cache.get("k")).value == "old"  # type: ignore[union-attr]
    outside = asyncio.Event()

    async def read_outside() -> None:
        await outside.wait()
        assert (await cache.get("k")).value == "old"  # type: ignore[union-attr] # caches "old"

    reader = asyncio.create_task(read_outside())
    async with store.transaction():  # opened under the cache: plain cache calls join it
        await cache.put("k", "new")
        outside.set()
        await reader
    assert (await cache.get("k")).value == "new"  # type: ignore[union-attr] # dropped at commit
    await cache.close()


async def test_closing_the_store_inside_a_transaction_ends_it(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "c.db"))
    await store.put("k", 1)
    with pytest.raises(StorageUnavailableError):
        async with store.transaction() as tx:
            await tx.put("k", 2)
            await asyncio.wait_for(store.close(), 10)  # does not wait for the block
            await tx.put("k", 3)
    reopened = SqliteStore(str(tmp_path / "c.db"))
    assert (await reopened.get("k")).value == 1  # type: ignore[union-attr]
    await reopened.close()


async def test_a_cancelled_transaction_rolls_back_and_frees_the_writer(store: Store) -> None:
    inside = asyncio.Event()

    async def stuck() -> None:
        async with store.transaction() as tx:
            await tx.put("k", "cancelled")
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(stuck())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(5):
        await store.put("other", 1)  # the lock (or the writer thread) is free again
    assert await store.get("k") is None


async def test_on_end_inside_a_rolled_back_savepoint_is_told_at_once(store: Store) -> None:
    ends: list[tuple[str, bool]] = []
    async with store.transaction():
        with pytest.raises(KeyError):
            async with store.transaction() as inner:
                inner.on_end(lambda ok: ends.append(("undone", ok)))
                raise KeyError
        assert ends == [("undone", False)]  # before the outer transaction ends
        async with store.transaction() as kept:
            kept.on_end(lambda ok: ends.append(("kept", ok)))
    assert ends == [("undone", False), ("kept", True)]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    opened: Store
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        opened = PostgresStore(server.dsn, table=f"late_{uuid.uuid4().hex[:10]}")
    elif request.param == "sqlite":
        opened = SqliteStore(str(tmp_path / "t.db"))
    else:
        opened = MemoryStore()
    yield opened
    await opened.close()


async def test_rows_written_at_commit_land_with_it_or_fail_it_if_taken(any_store: Store) -> None:
    store = any_store
    async with store.transaction() as tx:
        await tx.put("a", 1)
        assert isinstance(tx, TxHandle)
        assert tx.at_commit
        tx.write_at_commit({"row.1": 1}, ttl_s=60, new=True)
        tx.write_at_commit({"row.2": 2})  # another TTL: its own write, same commit
    assert [e.key for e in (await store.scan("row.")).items] == ["row.1", "row.2"]
    with pytest.raises(ConflictError) as caught:
        async with store.transaction() as tx:
            await tx.put("b", 2)
            assert isinstance(tx, TxHandle)
            tx.write_at_commit({"row.1": 1, "row.3": 3}, new=True)  # row.1 is live
    assert caught.value.details["keys"] == ["row.1"]
    assert await store.get("b") is None  # nothing of the failed commit stays
    assert await store.get("row.3") is None
    async with store.transaction() as tx:
        async with store.transaction() as inner:  # a savepoint: its rows would outlive it
            assert isinstance(inner, TxHandle)
            assert not inner.at_commit
        assert isinstance(tx, TxHandle)
        assert tx.at_commit
    assert not tx.at_commit  # ended


async def test_two_postgres_transactions_racing_for_one_new_key_cannot_both_commit(
    postgres_server: PostgresServer,
) -> None:
    store = PostgresStore(postgres_server.dsn, table=f"race_{uuid.uuid4().hex[:10]}")
    both_open = asyncio.Barrier(2)

    async def claim(n: int) -> None:
        async with store.transaction() as tx:
            await tx.put(f"effect.{n}", n)
            await both_open.wait()  # each read "absent" ahead; both are open now
            assert isinstance(tx, TxHandle)
            tx.write_at_commit({"inbox.same": n}, new=True)

    try:
        outcomes = await asyncio.gather(claim(1), claim(2), return_exceptions=True)
        assert sorted(type(o).__name__ for o in outcomes) == ["ConflictError", "NoneType"]
        winner = 1 if outcomes[0] is None else 2
        assert (await store.get("inbox.same")).value == winner  # type: ignore[union-attr]
        assert await store.get(f"effect.{3 - winner}") is None  # the loser left nothing
    finally:
        await store.close()
