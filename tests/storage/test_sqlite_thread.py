"""The SQLite writer thread: transactions that share one COMMIT, and what each still owns."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from organelle.storage import SqliteStore
from organelle.storage._sqlite_thread import SqliteThread

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = await SqliteStore(str(tmp_path / "g.db")).open()
    yield opened
    await opened.close()


async def test_concurrent_transactions_commit_each_or_roll_back_alone(store: SqliteStore) -> None:
    async def one(n: int) -> int:
        async with store.transaction() as tx:
            await tx.put(f"k.{n}", n)
            await store.incr("count")  # joins this task's transaction
            if n % 5 == 0:
                raise KeyError(n)
        return n

    outcomes = await asyncio.gather(*(one(n) for n in range(40)), return_exceptions=True)
    committed = [o for o in outcomes if isinstance(o, int)]
    assert len(committed) == 32
    assert all(isinstance(o, KeyError) for o in outcomes if not isinstance(o, int))
    got = await store.get_many([f"k.{n}" for n in range(40)])
    assert sorted(got) == sorted(f"k.{n}" for n in committed)
    assert (await store.get("count")).value == 32  # type: ignore[union-attr]
    # Every write has its own revision, though they shared commits.
    revisions = [e.revision for e in got.values()]
    assert len(set(revisions)) == len(revisions)


async def test_a_transaction_waiting_for_another_ones_commit_does_not_hold_it(
    store: SqliteStore,
) -> None:
    first_done = asyncio.Event()

    async def first() -> None:
        async with store.transaction() as tx:
            await tx.put("a", 1)
            await asyncio.sleep(0.01)  # the second one queues meanwhile
        first_done.set()

    async def second() -> None:
        await asyncio.sleep(0.005)
        async with store.transaction() as tx:
            await first_done.wait()  # nothing sent yet: it must not stall the first commit
            assert (await tx.get("a")).value == 1  # type: ignore[union-attr]
            await tx.put("b", 2)

    await asyncio.wait_for(asyncio.gather(first(), second()), 10)
    assert (await store.get("b")).value == 2  # type: ignore[union-attr]


async def test_savepoints_with_nothing_inside_cost_nothing_and_keep_their_meaning(
    store: SqliteStore,
) -> None:
    async with store.transaction() as tx:
        await tx.put("outer", 1)
        async with store.transaction():  # never sent: nothing ran inside
            pass
        with pytest.raises(KeyError):
            async with store.transaction():
                await tx.put("undone", 1)
                async with store.transaction():
                    await tx.put("undone-too", 1)
                raise KeyError
        async with store.transaction():
            await tx.put("kept", 1)
    got = await store.get_many(["outer", "undone", "undone-too", "kept"])
    assert sorted(got) == ["kept", "outer"]


async def test_a_failed_round_fails_every_participant(tmp_path: Path) -> None:
    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(str(tmp_path / "f.db"), isolation_level=None)
        conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
        conn.execute("CREATE TABLE d (k INTEGER REFERENCES t(k) DEFERRABLE INITIALLY DEFERRED)")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    # The plain write must share the round however slow the loop is (a loaded machine).
    thread = SqliteThread(connect, "sqlite-test", tx_group_s=30.0)
    await thread.started()
    try:
        lane = thread.begin()
        inside = lane.submit(lambda c: c.execute("INSERT INTO t VALUES (1)"), mode=1)
        # A plain write queued with it: the deferred foreign key fails the COMMIT.
        plain = thread.submit(lambda c: c.execute("INSERT INTO d VALUES (99)"), mode=1)
        await inside
        commit = lane.commit()
        results = await asyncio.gather(commit, plain, return_exceptions=True)
        assert all(isinstance(r, sqlite3.IntegrityError) for r in results)
        rows = await thread.submit(lambda c: c.execute("SELECT * FROM t").fetchall(), mode=0)
        assert rows == []  # nothing of the round is on disk
    finally:
        await thread.stop()


async def test_a_transactions_later_operations_run_in_the_loop(store: SqliteStore) -> None:
    """After its first operation the writer lends its connection: no trip, same meaning."""
    writer = store._writer
    assert writer is not None
    seen: list[bool] = []
    real_begin = writer.begin

    def watched_begin() -> Any:
        lane = real_begin()
        real_submit = lane.submit

        def submit(op: Any, **kw: Any) -> Any:
            fut = real_submit(op, **kw)
            seen.append(fut.done())  # done on return: it ran here, in the loop
            return fut

        lane.submit = submit  # type: ignore[method-assign]
        return lane

    writer.begin = watched_begin  # type: ignore[method-assign]
    async with store.transaction() as tx:
        await tx.put("a", 1)
        await tx.put("b", 2)
        assert await store.incr("n") == 1
        assert (await tx.get("a")).value == 1  # type: ignore[union-attr]
    assert seen[0] is False  # the first goes to the thread, which opens the round
    assert True in seen[1:]
    assert (await store.get("b")).value == 2  # type: ignore[union-attr]

    with pytest.raises(KeyError):
        async with store.transaction() as tx:
            await tx.put("c", 3)
            await tx.put("d", 4)  # in the loop, and undone with the rest
            raise KeyError
    assert await store.get_many(["c", "d"]) == {}


async def test_plain_writes_wait_while_a_lent_transaction_is_open(store: SqliteStore) -> None:
    """The thread holds the write lock for the lane: a plain write lands after its commit."""
    order: list[str] = []
    go = asyncio.Event()

    async def put_outside() -> None:
        await go.wait()
        await store.put("y", 1)

    plain = asyncio.ensure_future(put_outside())  # made here: not inside the transaction
    async with store.transaction() as tx:
        await tx.put("x", 1)
        go.set()
        await asyncio.sleep(0.02)
        assert not plain.done()  # queued behind the open transaction
        for n in range(20):
            await tx.put(f"x.{n}", n)  # lent: run in the loop meanwhile
        order.append("tx")
    await plain
    order.append("plain")
    assert order == ["tx", "plain"]
    got = await store.get_many([f"x.{n}" for n in range(20)])
    assert len(got) == 20
    assert (await store.get("y")).revision > (await store.get("x.19")).revision  # type: ignore[union-attr]
