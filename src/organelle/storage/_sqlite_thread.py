"""The thread that owns one SQLite connection and commits in groups.

Used by the SQLite Store and the SQLite job queue alike: the event loop never
touches sqlite3, it queues a function and awaits a future. Everything queued
since the last round (writes from many coroutines; for jobs, enqueues, a claim
and a batch of completes) runs in ONE ``BEGIN IMMEDIATE`` transaction with a
savepoint per item (one failing item does not undo the others) and a single
``COMMIT``: with ``synchronous=FULL`` that is one fsync for the whole group,
and no future resolves before its commit, so an acknowledged write is on
disk. While idle and asked to, the thread
polls ``PRAGMA data_version`` (a shared-memory read, no I/O) to notice commits
by other processes and wake the workers of this one: every ``poll_s`` while
other processes keep committing, backing off to ``IDLE_POLL_MAX_S`` after
``HOT_S`` without a foreign commit, so an idle worker costs a few dozen
wakeups a second, not thousands. (Work from this process wakes its workers
directly and needs no poll.)

A *transaction* (``begin()``) takes the thread over: queued behind the work
before it, it opens ``BEGIN IMMEDIATE`` and then serves only its own
``Lane`` — one operation at a time, each in a savepoint, as the event loop
sends them between its awaits — until the lane commits, rolls back or is
aborted. Everything else queued meanwhile waits in the main queue and runs
after it, as SQLite's single writer demands anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["DURABLE", "READ", "WRITE", "Lane", "Op", "SqliteThread"]

Op = Callable[[sqlite3.Connection], Any]
_Item = tuple[Op, int, asyncio.Future[Any]]  # mode: READ, WRITE, DURABLE or _TX
_Result = tuple[asyncio.Future[Any], Any, BaseException | None]
MAX_ROUND = 512
READ, WRITE, DURABLE = 0, 1, 2
_TX, _COMMIT, _ROLLBACK = 3, 4, 5
BUSY_TIMEOUT_S = 10.0
HOT_S = 1.0  # poll at full speed for this long after another process last committed
IDLE_POLL_MAX_S = 0.025  # the slowest poll of a quiet queue
_NUDGE: Any = ("nudge",)


class SqliteThread:
    """Runs ``Op`` callables on a private connection, grouped into transactions.

    Args:
        connect: opens the connection (called in the thread).
        name: thread name.
        on_external: called in the event loop when another process committed
            (only while ``watch(on=True)``; jobs use it, the Store does not).
        poll_s: how often a busy, watching thread checks for foreign commits.
        full_sync: switch ``synchronous`` between FULL (rounds holding a
            ``DURABLE`` op) and NORMAL (the rest); else leave it as connected.
        busy_timeout_s: how long ``BEGIN IMMEDIATE`` retries while another
            process holds the write lock.
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        name: str,
        *,
        on_external: Callable[[], None] | None = None,
        poll_s: float = 0.00025,
        full_sync: bool = False,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
    ) -> None:
        self._busy_timeout_s = busy_timeout_s
        self._full_sync = full_sync
        self._sync_full = full_sync
        self._connect = connect
        self._on_external = on_external
        self._poll_s = poll_s
        self._watching = False
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._loop = asyncio.get_running_loop()
        self._ready: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def watch(self, *, on: bool) -> None:
        """Poll for other processes' commits while ``on`` (an idle worker is waiting)."""
        self._watching = on
        if on:  # the thread may sleep without a timeout: nudge it into polling mode
            self._queue.put(_NUDGE)

    async def started(self) -> None:
        """Wait until the connection is open (or raise why it could not be)."""
        await self._ready

    def submit(self, op: Op, *, mode: int) -> asyncio.Future[Any]:
        """Queue ``op``; its future resolves after the round that ran it committed.

        A round holding a ``DURABLE`` op commits with ``synchronous=FULL`` (if the
        queue is in full mode); other write rounds skip their fsync: they become
        durable with the next full commit, and losing them to power loss only
        makes a job run again.
        """
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._queue.put((op, mode, fut))
        return fut

    def begin(self) -> tuple[asyncio.Future[None], Lane]:
        """Queue a transaction; the future resolves once it holds the thread and the write lock.

        Whoever calls this must end the lane (``commit``, ``rollback`` or
        ``abort``), or the thread serves it for ever.
        """
        lane = Lane(self)
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._queue.put((lane.serve, _TX, fut))
        return fut, lane

    async def stop(self) -> None:
        """Finish what is queued, close the connection, end the thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            await asyncio.to_thread(self._thread.join)

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Call ``fn(*args)`` in the event loop (from the thread)."""
        with contextlib.suppress(RuntimeError):  # loop closed: nobody waits any more
            self._loop.call_soon_threadsafe(fn, *args)

    def _run(self) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:
            self.post(_fail, self._ready, exc)
            return
        self.post(_done, [(self._ready, None, None)])
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        interval = self._poll_s
        active = time.monotonic()
        try:
            while True:
                try:
                    item = self._queue.get(timeout=interval if self._watching else None)
                except queue.Empty:
                    now = conn.execute("PRAGMA data_version").fetchone()[0]
                    if now != version:
                        version = now
                        if self._on_external is not None:
                            self.post(self._on_external)
                        interval, active = self._poll_s, time.monotonic()
                    elif time.monotonic() - active > HOT_S:
                        interval = min(interval * 2, max(self._poll_s, IDLE_POLL_MAX_S))
                    continue
                if item is None:
                    return
                if item is not _NUDGE and self._serve(conn, item):
                    return
        finally:
            conn.close()

    def _serve(self, conn: sqlite3.Connection, item: _Item) -> bool:
        """Run one round (and the transaction that ends it); ``True``: time to stop."""
        batch, held, stop = self._gather(item)
        if batch:
            self._set_sync(conn, batch)
            self.post(_done, _round(conn, batch, self._busy_timeout_s))
        if held is not None:
            self._transaction(conn, held)
        return stop

    def _set_sync(self, conn: sqlite3.Connection, batch: list[_Item]) -> None:
        if not self._full_sync:
            return
        want = any(mode == DURABLE for _, mode, _ in batch)
        if want != self._sync_full:
            conn.execute(f"PRAGMA synchronous = {'FULL' if want else 'NORMAL'}")
            self._sync_full = want

    def _gather(self, first: _Item) -> tuple[list[_Item], _Item | None, bool]:
        """This round's batch, the transaction that ends it (if any), and whether to stop."""
        if first[1] == _TX:
            return [], first, False
        batch = [first]
        while len(batch) < MAX_ROUND:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                return batch, None, True
            if nxt is _NUDGE:
                continue
            if nxt[1] == _TX:
                return batch, nxt, False
            batch.append(nxt)
        return batch, None, False

    def _transaction(self, conn: sqlite3.Connection, item: _Item) -> None:
        serve, _, fut = item
        if self._full_sync and not self._sync_full:
            conn.execute("PRAGMA synchronous = FULL")
            self._sync_full = True
        try:
            _begin(conn, self._busy_timeout_s)
        except Exception as exc:
            self.post(_done, [(fut, None, exc)])
            return
        self.post(_done, [(fut, None, None)])
        serve(conn)


class Lane:
    """The queue of one open transaction: its operations, then its commit or rollback."""

    def __init__(self, thread: SqliteThread) -> None:
        self._thread = thread
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()

    def submit(self, op: Op, *, mode: int) -> asyncio.Future[Any]:
        """Run ``op`` inside the transaction (``WRITE``: in a savepoint of its own)."""
        fut: asyncio.Future[Any] = self._thread._loop.create_future()
        self._queue.put((op, mode, fut))
        return fut

    def commit(self) -> asyncio.Future[Any]:
        """Commit; the future fails (after a rollback) if the commit did."""
        return self.submit(_nothing, mode=_COMMIT)

    def rollback(self) -> asyncio.Future[Any]:
        """Roll back."""
        return self.submit(_nothing, mode=_ROLLBACK)

    def abort(self) -> None:
        """Roll back without waiting (the store is closing, or the opener gave up)."""
        self._queue.put(None)

    def serve(self, conn: sqlite3.Connection) -> None:
        """In the thread: run the lane's items until it ends."""
        post = self._thread.post
        while True:
            item = self._queue.get()
            if item is None:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                return
            op, mode, fut = item
            if mode in {_COMMIT, _ROLLBACK}:
                post(_done, [_end(conn, fut, commit=mode == _COMMIT)])
                return
            if mode != WRITE:
                try:
                    post(_done, [(fut, op(conn), None)])
                except Exception as exc:
                    post(_done, [(fut, None, exc)])
                continue
            conn.execute("SAVEPOINT op")
            try:
                result = op(conn)
            except Exception as exc:
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
                post(_done, [(fut, None, exc)])
            else:
                conn.execute("RELEASE op")
                post(_done, [(fut, result, None)])


def _nothing(_conn: sqlite3.Connection) -> None:
    return None


def _end(conn: sqlite3.Connection, fut: asyncio.Future[Any], *, commit: bool) -> _Result:
    try:
        conn.execute("COMMIT" if commit else "ROLLBACK")
    except Exception as exc:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        return fut, None, exc
    return fut, None, None


def _round(conn: sqlite3.Connection, batch: list[_Item], busy_timeout_s: float) -> list[_Result]:
    if not any(mode != READ for _, mode, _ in batch):
        out: list[_Result] = []
        for op, _, fut in batch:
            try:
                out.append((fut, op(conn), None))
            except Exception as exc:
                out.append((fut, None, exc))
        return out
    try:
        _begin(conn, busy_timeout_s)
    except Exception as exc:
        return [(fut, None, exc) for _, _, fut in batch]
    results: list[_Result] = []
    single = len(batch) == 1
    for op, _, fut in batch:
        if single:  # no neighbour to protect: skip the savepoint
            try:
                results.append((fut, op(conn), None))
            except Exception as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                return [(fut, None, exc)]
            continue
        conn.execute("SAVEPOINT op")
        try:
            results.append((fut, op(conn), None))
        except Exception as exc:
            conn.execute("ROLLBACK TO op")
            results.append((fut, None, exc))
        conn.execute("RELEASE op")
    try:
        conn.execute("COMMIT")
    except Exception as exc:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        return [(fut, None, err or exc) for fut, _, err in results]
    return results


def _begin(conn: sqlite3.Connection, busy_timeout_s: float) -> None:
    """``BEGIN IMMEDIATE``, retried every 0.2 ms while another process writes.

    SQLite's own busy handler sleeps 1, 2, 5, 10… ms between tries, which is
    most of the time lost when a producer and a worker process share a file.
    """
    deadline = time.monotonic() + busy_timeout_s
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(0.0002)
        else:
            return


def _done(results: list[_Result]) -> None:
    for fut, value, exc in results:
        if fut.done():  # the caller was cancelled
            continue
        if exc is None:
            fut.set_result(value)
        else:
            fut.set_exception(exc)


def _fail(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
