"""A thread that owns one sqlite3 connection and runs work items in groups.

The event loop never touches sqlite3: it queues a function and awaits a
future. The thread drains everything queued since its last round and, when
the round holds writes, runs it in one ``BEGIN IMMEDIATE`` transaction with a
savepoint per item (so one failing item does not undo the others) and a
single ``COMMIT`` (so concurrent writers share one fsync: group commit). A
future resolves only after its round committed, which is what makes an
acknowledged write durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["SqliteWorker"]

Op = Callable[[sqlite3.Connection], Any]
_Item = tuple[Op, bool, asyncio.Future[Any]]
MAX_ROUND = 256


class SqliteWorker:
    """Runs ``Op`` callables on a private connection in a private thread.

    Args:
        connect: opens the connection, called in the worker thread.
        name: thread name, for debugging.
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection], name: str) -> None:
        self._connect = connect
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._loop = asyncio.get_running_loop()
        self._ready: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    async def started(self) -> None:
        """Wait until the connection is open (or raise why it could not be)."""
        await self._ready

    def submit(self, op: Op, *, write: bool) -> asyncio.Future[Any]:
        """Queue ``op``; the future gets its result once committed."""
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._queue.put((op, write, fut))
        return fut

    async def stop(self) -> None:
        """Finish queued work, close the connection and end the thread."""
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)

    def _post(self, fn: Callable[..., Any], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # loop already closed: nobody is waiting
            self._loop.call_soon_threadsafe(fn, *args)

    def _run(self) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:
            self._post(_fail, self._ready, exc)
            return
        self._post(_done, [(self._ready, None, None)])
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                batch = [item]
                stop = False
                while len(batch) < MAX_ROUND:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    batch.append(nxt)
                self._post(_done, self._round(conn, batch))
                if stop:
                    return
        finally:
            conn.close()

    @staticmethod
    def _round(
        conn: sqlite3.Connection, batch: list[_Item]
    ) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
        if not any(write for _, write, _ in batch):
            out: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
            for op, _, fut in batch:
                try:
                    out.append((fut, op(conn), None))
                except Exception as exc:
                    out.append((fut, None, exc))
            return out
        try:
            conn.execute("BEGIN IMMEDIATE")
        except Exception as exc:
            return [(fut, None, exc) for _, _, fut in batch]
        results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        for op, _, fut in batch:
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


def _done(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
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
