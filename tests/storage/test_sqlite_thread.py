"""The SQLite writer thread: transactions that share one COMMIT, and what each still owns."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import threading
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
    """The writer lends its connection to a transaction: no trip, same meaning."""
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
    # the first begins the round in the loop when the thread is idle (else the thread
    # opens it); the rest run in the loop either way; the commit waits for the COMMIT
    assert all(seen[1:-1])
    assert seen[-1] is False
    # once the thread waits idle, a transaction's first operation begins the round here
    for _ in range(500):
        if writer._idle:
            break
        await asyncio.sleep(0.01)
    seen.clear()
    async with store.transaction() as tx:
        await tx.put("e", 5)
    assert seen == [True, False]
    assert (await store.get("e")).value == 5  # type: ignore[union-attr]
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


def _lending(path: Path, commits: list[str]) -> SqliteThread:
    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        conn.execute("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY)")
        conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
        return conn

    # a wide window: how slow the loop is on a loaded machine must not split the round
    return SqliteThread(connect, "sqlite-lend-test", tx_group_s=30.0, lend=True)


def _insert(k: int, where: list[str] | None = None) -> Any:
    def op(c: sqlite3.Connection) -> int:
        if where is not None:
            where.append(threading.current_thread().name)
        return c.execute("INSERT INTO t VALUES (?)", (k,)).rowcount

    return op


async def test_a_lent_round_serves_the_queued_transactions_under_one_commit(
    tmp_path: Path,
) -> None:
    """The loop runs the transactions queued behind the first; the thread COMMITs once."""
    commits: list[str] = []
    where: list[str] = []
    thread = _lending(tmp_path / "l.db", commits)
    await thread.started()

    def fails(_conn: sqlite3.Connection) -> Any:
        raise sqlite3.IntegrityError("refused at commit")

    async def one(k: int) -> int:
        lane = thread.begin()
        assert await lane.submit(_insert(k, where), mode=1) == 1
        assert await lane.submit(_insert(1000 + k, where), mode=1) == 1
        if k % 4 == 1:  # rolled back: only its own rows go
            await lane.rollback()
            return -1
        if k % 4 == 2:  # its last write fails at the commit: it alone fails
            await lane.commit((), fails)
            return -2
        if k % 4 == 3:  # a failed operation inside leaves the rest of it
            with pytest.raises(sqlite3.IntegrityError):
                await lane.submit(_insert(k), mode=1)
        await lane.commit()
        return k

    try:
        outcomes = await asyncio.gather(*(one(k) for k in range(16)), return_exceptions=True)
        kept = sorted(k for k in outcomes if isinstance(k, int) and k >= 0)
        assert kept == [k for k in range(16) if k % 4 in (0, 3)]
        assert sum(isinstance(o, sqlite3.IntegrityError) for o in outcomes) == 4
        assert commits == ["COMMIT"]  # sixteen transactions, one round
        # the thread ran the first transaction's first write; the loop everything else
        assert len(where) == 32
        assert where.count("sqlite-lend-test") == 1
        rows = await thread.submit(lambda c: c.execute("SELECT k FROM t").fetchall(), mode=0)
        assert sorted(k for (k,) in rows) == kept + [1000 + k for k in kept]
    finally:
        await thread.stop()
    check = sqlite3.connect(str(tmp_path / "l.db"))  # on disk, seen from outside
    assert check.execute("SELECT count(*) FROM t").fetchone()[0] == 2 * len(kept)
    check.close()


async def test_a_lent_round_ends_at_max_txs_and_the_rest_go_to_the_next(tmp_path: Path) -> None:
    from organelle.storage._sqlite_thread import MAX_TXS

    commits: list[str] = []
    thread = _lending(tmp_path / "m.db", commits)
    await thread.started()

    async def one(k: int) -> None:
        lane = thread.begin()
        await lane.submit(_insert(k), mode=1)
        await lane.commit()

    try:
        n = MAX_TXS + 36
        await asyncio.wait_for(asyncio.gather(*(one(k) for k in range(n))), 20)
        assert 2 <= len(commits) <= 4
        got = await thread.submit(lambda c: c.execute("SELECT count(*) FROM t").fetchone(), mode=0)
        assert got[0] == n
    finally:
        await thread.stop()


async def test_an_aborted_transaction_waiting_in_a_lent_round_is_undone(tmp_path: Path) -> None:
    commits: list[str] = []
    thread = _lending(tmp_path / "a.db", commits)
    await thread.started()
    try:
        first, waiting = thread.begin(), thread.begin()
        one = first.submit(_insert(1), mode=1)
        queued = waiting.submit(_insert(2), mode=1)  # behind the first
        await one
        waiting.abort()  # the store closing: it never answers
        await first.commit()
        await asyncio.sleep(0)
        assert not queued.done() or queued.result() == 1
        rows = await thread.submit(lambda c: c.execute("SELECT k FROM t").fetchall(), mode=0)
        assert rows == [(1,)]
    finally:
        await thread.stop()


async def test_transactions_and_plain_writes_mixed_keep_their_meaning(store: SqliteStore) -> None:
    """Rounds begun by the loop, lent by the thread and served by it, all at once."""
    rng = random.Random(7)
    committed: list[int] = []

    async def tx(n: int, pause: bool, fail: bool, nested: bool) -> None:
        with contextlib.suppress(ValueError):
            async with store.transaction() as t:
                await t.put(f"t.{n}", n)
                await store.incr("count")
                if nested:
                    with contextlib.suppress(KeyError):
                        async with store.transaction():
                            await t.put(f"undone.{n}", n)
                            raise KeyError(n)
                if pause:
                    await asyncio.sleep(0)  # others queue behind it meanwhile
                await t.put(f"t2.{n}", n)
                if fail:
                    raise ValueError(n)
            committed.append(n)

    async def plain(n: int) -> None:
        await store.put(f"p.{n}", n)

    jobs = []
    plains: list[int] = []
    for n in range(300):
        if rng.random() < 0.3:
            plains.append(n)
            jobs.append(plain(n))
        else:
            jobs.append(tx(n, rng.random() < 0.5, rng.random() < 0.2, rng.random() < 0.2))
    await asyncio.wait_for(asyncio.gather(*jobs), 30)
    assert (await store.get("count")).value == len(committed)  # type: ignore[union-attr]
    every = range(300)
    assert await store.get_many([f"undone.{n}" for n in every]) == {}
    assert sorted(await store.get_many([f"t.{n}" for n in every])) == sorted(
        f"t.{n}" for n in committed
    )
    assert sorted(await store.get_many([f"t2.{n}" for n in every])) == sorted(
        f"t2.{n}" for n in committed
    )
    assert sorted(await store.get_many([f"p.{n}" for n in every])) == sorted(
        f"p.{n}" for n in plains
    )
