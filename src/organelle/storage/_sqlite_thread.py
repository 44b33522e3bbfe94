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

A *transaction* (``begin()``) takes the thread over when its turn comes: it
runs in a savepoint of the round's ``BEGIN IMMEDIATE`` and the thread serves
only its ``Lane`` — one operation at a time, as the event loop sends them
between its awaits — until the lane commits, rolls back or is aborted.
Everything else queued meanwhile waits in the main queue, as SQLite's single
writer demands anyway. The begin is not waited for, nor even sent: a lane
joins the queue with its first operation (one wake-up of the thread, not
two; a transaction that sends nothing costs the thread nothing).

Transactions commit in groups too: a lane's commit releases its savepoint,
and the thread goes on with whatever was queued meanwhile (plain writes,
further transactions) in the same physical transaction, for at most
``tx_group_s`` (``GROUP_S`` unless the owner widens it) or ``MAX_TXS``
transactions, then ``COMMIT`` s once. Every commit
future resolves only after that ``COMMIT``; when it fails, every participant
fails (nothing of the group is on disk). A lane that rolls back undoes only
its savepoint and is told at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, cast

__all__ = ["DURABLE", "READ", "WRITE", "Lane", "Op", "SqliteThread", "use_wal"]

Op = Callable[[sqlite3.Connection], Any]
_Item = tuple[Op, int, asyncio.Future[Any]]  # mode: READ, WRITE, DURABLE or _TX
_Result = tuple[asyncio.Future[Any], Any, BaseException | None]
MAX_ROUND = 512
MAX_TXS = 64  # transactions sharing one COMMIT, at most
GROUP_S = 0.002  # a round stops taking in more work after this long
STALL_S = 0.005  # a transaction that sends nothing this long waits for the next round
_STALLED = object()
READ, WRITE, DURABLE = 0, 1, 2
_TX, _COMMIT, _ROLLBACK = 3, 4, 5
BUSY_TIMEOUT_S = 10.0
HOT_S = 1.0  # poll at full speed for this long after another process last committed
IDLE_POLL_MAX_S = 0.025  # the slowest poll of a quiet queue
_NUDGE: Any = ("nudge",)


def use_wal(conn: sqlite3.Connection, wait_s: float = BUSY_TIMEOUT_S) -> None:
    """Put the file in WAL mode, waiting out other openers.

    Switching the journal mode takes an exclusive lock that SQLite does not wait
    for through ``busy_timeout``: several connections opening one new file at
    once get "database is locked". A file already in WAL needs no switch.
    """
    deadline = time.monotonic() + wait_s
    pause = 0.001
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() >= deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        else:
            return


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
        tx_group_s: how long a round that served a transaction takes in more
            (instead of ``GROUP_S``): each transaction costs the round a trip
            to the event loop, so under load a short window would commit two
            or three of them per fsync while more wait.
        on_change: called in the thread itself when a watching poll saw
            another process's commit, before ``on_external`` is posted; it may
            ``submit`` work, which then runs before the event loop hears of it.
        lend: let a transaction's later operations run in the event loop on
            this connection (``Lane``); it must be opened with
            ``check_same_thread=False``.
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
        tx_group_s: float = GROUP_S,
        on_change: Callable[[], bool] | None = None,
        lend: bool = False,
    ) -> None:
        self.lend = lend
        self._on_change = on_change
        self._busy_timeout_s = busy_timeout_s
        self._tx_group_s = tx_group_s
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

    def submit(
        self, op: Op, *, mode: int, fut: asyncio.Future[Any] | None = None
    ) -> asyncio.Future[Any]:
        """Queue ``op``; its future resolves after the round that ran it committed.

        A round holding a ``DURABLE`` op commits with ``synchronous=FULL`` (if the
        queue is in full mode); other write rounds skip their fsync: they become
        durable with the next full commit, and losing them to power loss only
        makes a job run again. ``fut``: a future made earlier in the event
        loop (so the thread itself can queue work, see ``on_change``).
        """
        if fut is None:
            fut = self._loop.create_future()
        self._queue.put((op, mode, fut))
        return fut

    def begin(self) -> Lane:
        """A transaction; it is queued with its first operation, which waits for its turn.

        Whoever calls this must end the lane (``commit``, ``rollback`` or
        ``abort``), or the thread serves it for ever.
        """
        return Lane(self)

    def _enqueue_lane(self, lane: Lane) -> None:
        """Queue ``lane`` for its turn (done by its first item: one wake-up, not two)."""
        self._queue.put((cast("Op", lane.run), _TX, lane.slot))

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
                        if self._on_change is not None and self._on_change():
                            pass  # it queued work whose result tells the loop
                        elif self._on_external is not None:
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
        """Run rounds until none is carried over; ``True``: time to stop."""
        carried: _Item | None = item
        stop = False
        while carried is not None and not stop:
            carried, stop = self._round(conn, carried)
        return stop

    def _round(self, conn: sqlite3.Connection, item: _Item) -> tuple[_Item | None, bool]:
        """One physical transaction (or a read-only round).

        Returns a transaction to start the next round with (one that sent
        nothing for ``STALL_S`` while others waited for the commit) and
        whether to stop.
        """
        batch, held, stop = self._gather(item)
        if not self._open_round(conn, batch, held):
            return None, stop
        results: list[_Result] = []
        started, txs = time.monotonic(), 0
        while True:
            results += _items(conn, batch)
            if held is not None:
                outcome = _lane_of(held).run(conn, wait_s=STALL_S if results else None)
                if outcome is _STALLED:
                    self.post(_done, _commit(conn, results))
                    return held, stop
                if outcome is not None:
                    results.append(cast("_Result", outcome))
                txs += 1
            if stop or not self._extend(conn, started, txs):
                break
            nxt = self._queue.get_nowait() if not self._queue.empty() else _NUDGE
            if nxt is _NUDGE:
                break
            if nxt is None:
                stop = True
                break
            batch, held, stop = self._gather(nxt)
        self.post(_done, _commit(conn, results))
        return None, stop

    def _open_round(self, conn: sqlite3.Connection, batch: list[_Item], held: _Item | None) -> bool:
        """``BEGIN`` the round; ``False`` when it was done without one (or could not begin)."""
        if held is None and not any(mode != READ for _, mode, _ in batch):
            self.post(_done, _reads(conn, batch))
            return False
        self._set_sync(conn, batch, tx=held is not None)
        try:
            _begin(conn, self._busy_timeout_s)
        except Exception as exc:
            self.post(_done, [(fut, None, exc) for _, _, fut in batch])
            if held is not None:
                _lane_of(held).fail(exc)
            return False
        if len(batch) == 1 and held is None:  # no neighbour to protect: no savepoint
            self.post(_done, _single(conn, batch[0]))
            return False
        return True

    def _extend(self, conn: sqlite3.Connection, started: float, txs: int) -> bool:
        """Whether this round may take in more work before its ``COMMIT``."""
        if not conn.in_transaction:  # SQLite rolled it back (I/O error, full disk)
            return False
        window = self._tx_group_s if txs else GROUP_S
        if txs >= MAX_TXS or time.monotonic() - started > window:
            return False
        return not (self._full_sync and not self._sync_full)  # no DURABLE item may join

    def _set_sync(self, conn: sqlite3.Connection, batch: list[_Item], *, tx: bool) -> None:
        if not self._full_sync:
            return
        want = tx or any(mode == DURABLE for _, mode, _ in batch)
        if want != self._sync_full:
            conn.execute(f"PRAGMA synchronous = {'FULL' if want else 'NORMAL'}")
            self._sync_full = want

    def _gather(self, first: _Item) -> tuple[list[_Item], _Item | None, bool]:
        """This round's batch, the transaction that ends it (if any), and whether to stop."""
        if first is _NUDGE:
            return [], None, False
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


def _lane_of(item: _Item) -> Lane:
    lane = item[0].__self__  # type: ignore[attr-defined]
    assert isinstance(lane, Lane)  # noqa: S101 - only Lane.serve is queued as _TX
    return lane


class Lane:
    """The queue of one open transaction: its operations, then its commit or rollback.

    Once the thread serves the lane (its first operation ran inside the
    round's transaction) and waits for the next item with nothing queued,
    the connection is idle and the write lock held: an operation then runs
    at once in the event loop (``_inline``), under a mutex the thread takes
    back before it touches the connection again. A transaction's later
    operations (a handler's ``incr`` under the inbox, the writes after the
    first) then cost no trip to the thread and back, only the statements;
    its first operation and its commit (the fsync) still go to the thread.
    """

    def __init__(self, thread: SqliteThread) -> None:
        self._thread = thread
        self._queue: queue.SimpleQueue[_LaneItem | None] = queue.SimpleQueue()
        # The main queue's items carry a future; a lane's is never resolved (its
        # operations have their own).
        self.slot: asyncio.Future[Any] = thread._loop.create_future()
        self._queued = False  # queued on the thread with its first item
        self._mutex = threading.Lock()
        self._conn: sqlite3.Connection | None = None  # set while the thread waits, idle
        self._unread = 0  # items put and not yet taken by the thread

    def _put(self, item: _LaneItem | None) -> None:
        with self._mutex:
            self._unread += 1
        self._queue.put(item)
        if not self._queued:
            self._queued = True
            self._thread._enqueue_lane(self)

    def submit(self, op: Op, *, mode: int, before: tuple[str, ...] = ()) -> asyncio.Future[Any]:
        """Run ``op`` inside the transaction (``WRITE``: in a savepoint of its own).

        ``before``: statements to run first, outside that savepoint (the
        transaction's own ``SAVEPOINT`` / ``RELEASE`` marks, sent lazily).
        """
        fut: asyncio.Future[Any] = self._thread._loop.create_future()
        item = (op, mode, fut, before)
        if self._conn is None or mode in {_COMMIT, _ROLLBACK} or not self._inline(item):
            self._put(item)
        return fut

    def _inline(self, item: _LaneItem) -> bool:
        """In the loop: run ``item`` here if the thread waits idle in this lane."""
        with self._mutex:
            conn = self._conn
            if conn is None or self._unread or not conn.in_transaction:
                return False  # the thread's turn (or SQLite rolled back: it says so)
            try:
                result = _op(conn, item)
            except sqlite3.Error as exc:  # its savepoint could not open
                result = (item[2], None, exc)
        _done([result])
        return True

    def _next(self, conn: sqlite3.Connection, result: _Result) -> _LaneItem | None:
        """In the thread: post ``result``, lend the connection until the next item comes.

        Lent first: the operation the loop sends on hearing of the result finds it lent.
        """
        if self._thread.lend:
            with self._mutex:
                self._conn = conn
        self._thread.post(_done, [result])
        item = self._queue.get()
        with self._mutex:  # waits for an operation the loop is running
            self._conn = None
            self._unread -= 1
        return item

    def _first(self, wait_s: float | None) -> _LaneItem | None:
        item = self._queue.get(timeout=wait_s)
        with self._mutex:
            self._unread -= 1
        return item

    def commit(self, before: tuple[str, ...] = (), last: Op | None = None) -> asyncio.Future[Any]:
        """Commit; the future resolves after the round's ``COMMIT`` (fails if it did).

        ``last``: a write to run first, inside the transaction; the future
        resolves to the changes it returns (its result is ``(_, changes)``).
        """
        return self.submit(last or _nothing, mode=_COMMIT, before=before)

    def rollback(self) -> asyncio.Future[Any]:
        """Roll back (nothing to undo, no trip, when nothing was sent)."""
        if not self._queued:
            fut: asyncio.Future[Any] = self._thread._loop.create_future()
            fut.set_result(None)
            return fut
        return self.submit(_nothing, mode=_ROLLBACK)

    def abort(self) -> None:
        """Roll back without waiting (the store is closing, or the opener gave up)."""
        if self._queued:
            with self._mutex:
                self._unread += 1
            self._queue.put(None)

    def run(self, conn: sqlite3.Connection, *, wait_s: float | None) -> _Result | object | None:
        """In the thread, inside the round's transaction: serve the lane until it ends.

        Returns its commit future's result, to post once the round commits
        (``None`` when it rolled back: already told), or ``_STALLED`` when
        ``wait_s`` passed before its first item (it waits for another
        transaction, maybe one of this round: commit the round first).
        """
        try:
            first = self._first(wait_s)
        except queue.Empty:
            return _STALLED
        conn.execute("SAVEPOINT lane")
        item: _LaneItem | None = first
        while True:
            if item is None:
                _undo(conn, "lane")
                return None
            if not conn.in_transaction:  # SQLite rolled the round back (I/O error, full disk)
                lost = sqlite3.OperationalError("the transaction was rolled back by SQLite")
                if not _refuse(self._thread.post, item, lost):
                    self.fail(lost)
                return None
            mode, fut = item[1], item[2]
            if mode == _COMMIT:
                done = _last(conn, item)
                if done[2] is None:
                    conn.execute("RELEASE lane")
                    return done
                _undo(conn, "lane")  # told it failed: nothing of it stays
                self._thread.post(_done, [done])
                return None
            if mode == _ROLLBACK:
                _undo(conn, "lane")
                self._thread.post(_done, [(fut, None, None)])
                return None
            item = self._next(conn, _op(conn, item))

    def fail(self, exc: BaseException) -> None:
        """In the thread: the transaction could not begin; fail each operation until it ends."""
        post = self._thread.post
        while True:
            item = self._first(None)
            if item is None or _refuse(post, item, exc):
                return


_LaneItem = tuple[Op, int, asyncio.Future[Any], tuple[str, ...]]


def _refuse(post: Callable[..., None], item: _LaneItem, exc: BaseException) -> bool:
    """Fail one lane item (a rollback succeeds); ``True`` when it ended the lane."""
    _, mode, fut, _ = item
    post(_done, [(fut, None, None if mode == _ROLLBACK else exc)])
    return mode in {_COMMIT, _ROLLBACK}


def _last(conn: sqlite3.Connection, item: _LaneItem) -> _Result:
    """A commit item's savepoint statements and last write: its result or its error."""
    op, _, fut, before = item
    try:
        for sql in before:
            conn.execute(sql)
        out = op(conn)
    except Exception as exc:  # a lost savepoint, a failed write: the commit fails
        return fut, None, exc
    return fut, None if out is None else out[1], None


def _op(conn: sqlite3.Connection, item: _LaneItem) -> _Result:
    """One operation of a lane (a write in a savepoint of its own)."""
    op, mode, fut, before = item
    try:
        for sql in before:
            conn.execute(sql)
    except Exception as exc:  # a lost savepoint: the op must not run out of place
        return fut, None, exc
    if mode != WRITE:
        try:
            return fut, op(conn), None
        except Exception as exc:
            return fut, None, exc
    conn.execute("SAVEPOINT op")
    try:
        result = op(conn)
    except Exception as exc:
        _undo(conn, "op")
        return fut, None, exc
    conn.execute("RELEASE op")
    return fut, result, None


def _nothing(_conn: sqlite3.Connection) -> None:
    return None


def _undo(conn: sqlite3.Connection, name: str) -> None:
    with contextlib.suppress(sqlite3.Error):  # gone with a rollback SQLite did itself
        conn.execute(f"ROLLBACK TO {name}")
        conn.execute(f"RELEASE {name}")


def _reads(conn: sqlite3.Connection, batch: list[_Item]) -> list[_Result]:
    out: list[_Result] = []
    for op, _, fut in batch:
        try:
            out.append((fut, op(conn), None))
        except Exception as exc:
            out.append((fut, None, exc))
    return out


def _single(conn: sqlite3.Connection, item: _Item) -> list[_Result]:
    op, _, fut = item
    try:
        result = op(conn)
    except Exception as exc:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        return [(fut, None, exc)]
    return _commit(conn, [(fut, result, None)])


def _items(conn: sqlite3.Connection, batch: list[_Item]) -> list[_Result]:
    """Run plain items inside the open transaction, each in a savepoint."""
    results: list[_Result] = []
    for op, _, fut in batch:
        if not conn.in_transaction:  # SQLite rolled the round back: run nothing out of it
            lost = sqlite3.OperationalError("the transaction was rolled back by SQLite")
            results.append((fut, None, lost))
            continue
        conn.execute("SAVEPOINT op")
        try:
            results.append((fut, op(conn), None))
        except Exception as exc:
            _undo(conn, "op")
            results.append((fut, None, exc))
        else:
            conn.execute("RELEASE op")
    return results


def _commit(conn: sqlite3.Connection, results: list[_Result]) -> list[_Result]:
    """``COMMIT`` the round; on failure every participant fails with it."""
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
