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

With ``lend``, the thread hands the round to the event loop once a
transaction's first operation has run: the loop runs that transaction's
later operations and its commit (a ``RELEASE``) on the connection itself,
then starts the transactions queued meanwhile (a ``SAVEPOINT`` each) and runs
theirs, one transaction at a time, until none is left, the group window
closes or ``MAX_TXS`` is reached; then it hands the round back and the
thread ``COMMIT`` s it (the fsync stays off the loop). Sixteen producers'
transactions then cost one trip to the thread and one fsync together, as
sixteen plain writes do.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast, overload

__all__ = ["DURABLE", "READ", "WRITE", "Lane", "Op", "SqliteThread", "Waiter", "use_wal"]


class Waiter(Protocol):
    """What hears an operation's outcome in the event loop (an ``asyncio.Future`` does)."""

    def done(self) -> bool: ...
    def set_result(self, result: Any, /) -> None: ...
    def set_exception(self, exception: BaseException, /) -> None: ...


_W = TypeVar("_W", bound=Waiter)
Op = Callable[[sqlite3.Connection], Any]
_Item = tuple[Op, int, asyncio.Future[Any]]  # mode: READ, WRITE, DURABLE or _TX
_Result = tuple[Waiter, Any, BaseException | None]
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
_POLL: Any = ("poll",)


class _Poll:
    """How a watching thread polls for other processes' commits."""

    __slots__ = ("active", "interval", "version")

    def __init__(self, version: int, interval: float) -> None:
        self.version = version
        self.interval = interval
        self.active = time.monotonic()  # when another process last committed


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
        # Lending: one mutex for every lane's queue count and the lent round;
        # the lanes queued and not yet served (the loop may take them); the
        # round while the loop holds it; the way it comes back.
        self._mutex = threading.Lock()
        self._lanes: deque[Lane] = deque()
        self._lent: _Lent | None = None
        self._back: queue.SimpleQueue[_Handback] = queue.SimpleQueue()
        self._round_start = 0.0  # when the round being served began (monotonic)
        self._round_txs = 0  # transactions the round has served so far
        self._idle = False  # the thread waits for work: the loop may begin a round
        self._loop_took = False  # ... and did: the thread waits for it back
        self._idle_conn: sqlite3.Connection | None = None
        self._loop = asyncio.get_running_loop()
        self._ready: asyncio.Future[None] = self._loop.create_future()
        # The main queue's items carry a future; a lane's is never resolved (its
        # operations have their own): all lanes share this one.
        self._slot: asyncio.Future[Any] = self._loop.create_future()
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
        """Queue ``lane`` for its turn (done by its first item: one wake-up, not two).

        Called with ``_mutex`` held. A lent round may take the lane before the
        thread gets to its item (which it then skips, see ``_claim``).
        """
        self._lanes.append(lane)
        self._queue.put((cast("Op", lane.run), _TX, self._slot))

    def _claim(self, item: _Item) -> bool:
        """In the thread: take a queued transaction, unless the loop took it already."""
        lane = _lane_of(item)
        with self._mutex:
            if lane.taken:
                return False
            lane.taken = True
            if self._lanes and self._lanes[0] is lane:
                self._lanes.popleft()
            else:
                with contextlib.suppress(ValueError):
                    self._lanes.remove(lane)
        return True

    def _next_lane(self) -> Lane | None:
        """In the loop, ``_mutex`` held: the next queued transaction nobody took yet."""
        while self._lanes:
            lane = self._lanes.popleft()
            if not lane.taken:
                lane.taken = True
                return lane
        return None

    def _advance(self, lent: _Lent) -> None:
        """In the loop, ``_mutex`` held: the active lane ended; serve the next or hand back."""
        conn = lent.conn
        lent.active = None
        while lent.txs < MAX_TXS and time.monotonic() < lent.until and conn.in_transaction:
            lane = self._next_lane()
            if lane is None:
                break
            try:
                conn.execute("SAVEPOINT lane")
            except sqlite3.Error:  # the thread's next round serves it
                lane.taken = False
                self._lanes.appendleft(lane)
                break
            lane.clean = True
            lent.active = lane
            lent.txs += 1
            if not lane.drain(lent):
                return  # open: its coroutine sends the rest
            lent.active = None
        self._lent = None
        self._back.put(_Handback(lent.results, lent.txs, lent.started))
        if lent.idle:  # the thread sleeps on its queue (or waits for this already)
            self._queue.put(_NUDGE)

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
        poll = _Poll(conn.execute("PRAGMA data_version").fetchone()[0], self._poll_s)
        self._idle_conn = conn
        try:
            while True:
                self._set_idle(idle=True)
                try:
                    item: _Item | None = self._queue.get(
                        timeout=poll.interval if self._watching else None
                    )
                except queue.Empty:
                    item = _POLL  # time to poll, unless the loop took the round meanwhile
                back = self._set_idle(idle=False)
                if back is not None:  # the loop ran a round meanwhile: commit it
                    if self._serve(conn, _NUDGE if item is _POLL else item, back):
                        return
                    continue
                if item is _POLL:
                    self._poll(conn, poll)
                elif item is None or (item is not _NUDGE and self._serve(conn, item)):
                    return
        finally:
            conn.close()

    def _poll(self, conn: sqlite3.Connection, poll: _Poll) -> None:
        """Look for another process's commit; poll slower while there is none."""
        now = conn.execute("PRAGMA data_version").fetchone()[0]
        if now != poll.version:
            poll.version = now
            if self._on_change is not None and self._on_change():
                pass  # it queued work whose result tells the loop
            elif self._on_external is not None:
                self.post(self._on_external)
            poll.interval, poll.active = self._poll_s, time.monotonic()
        elif time.monotonic() - poll.active > HOT_S:
            poll.interval = min(poll.interval * 2, max(self._poll_s, IDLE_POLL_MAX_S))

    def _set_idle(self, *, idle: bool) -> _Handback | None:
        """In the thread: offer the connection to the loop while idle (``lend``), or take it back.

        Taking it back returns the round the loop began meanwhile (``_take_idle``),
        once the loop hands it over: the thread commits it.
        """
        with self._mutex:
            self._idle = idle and self.lend and not self._full_sync
            took, self._loop_took = self._loop_took, False
        return self._back.get() if took else None

    def _take_idle(self) -> _Lent | None:
        """In the loop, ``_mutex`` held: begin a round on the idle thread's connection.

        ``BEGIN IMMEDIATE`` without waiting (another process writing: ``None``,
        the thread's round then waits for it instead of the loop).
        """
        conn = self._idle_conn
        if conn is None:
            return None
        try:
            conn.execute("PRAGMA busy_timeout = 0")
            try:
                conn.execute("BEGIN IMMEDIATE")
            finally:
                conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")
        except sqlite3.Error:
            return None
        self._idle, self._loop_took = False, True
        # The thread sleeps on: waking it now would have it contend for the GIL
        # and the mutex while the loop works; the hand-back wakes it.
        self._lent = _Lent(conn, None, time.monotonic(), self._tx_group_s, 0, idle=True)
        return self._lent

    def _serve(
        self, conn: sqlite3.Connection, item: _Item | None, back: _Handback | None = None
    ) -> bool:
        """Run rounds until none is carried over; ``True``: time to stop."""
        carried, stop = self._round(conn, item, back)
        while carried is not None and not stop:
            carried, stop = self._round(conn, carried)
        return stop

    def _round(
        self, conn: sqlite3.Connection, item: _Item | None, back: _Handback | None = None
    ) -> tuple[_Item | None, bool]:
        """One physical transaction (or a read-only round).

        ``back``: the round the loop began and served, to go on with (``item``
        joins it; ``None`` is the stop signal). Returns a transaction to start
        the next round with (one that sent nothing for ``STALL_S`` while others
        waited for the commit) and whether to stop.
        """
        if back is None:
            assert item is not None  # noqa: S101 - the stop signal comes with a round only
            batch, held, stop = self._gather(item)
            if not self._open_round(conn, batch, held):
                return None, stop
            results: list[_Result] = []
            started, txs = time.monotonic(), 0
        else:
            batch, held, stop = self._gather(item) if item is not None else ([], None, True)
            results, started, txs = back.results, back.started, back.txs
        while True:
            results += _items(conn, batch)
            if held is not None:
                txs = self._serve_lane(conn, held, results, started, txs)
                if txs < 0:  # stalled: commit the round first
                    self.post(_done, _commit(conn, results))
                    return held, stop
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

    def _serve_lane(
        self,
        conn: sqlite3.Connection,
        held: _Item,
        results: list[_Result],
        started: float,
        txs: int,
    ) -> int:
        """Serve a transaction in the round; the round's transactions after it (-1: stalled)."""
        self._round_start, self._round_txs = started, txs + 1
        outcome = _lane_of(held).run(conn, wait_s=STALL_S if results else None)
        if outcome is _STALLED:
            return -1
        if isinstance(outcome, _Handback):  # the loop served more transactions
            results += outcome.results
            return outcome.txs
        if outcome is not None:
            results.append(cast("_Result", outcome))
        return txs + 1

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
            return [], first if self._claim(first) else None, False
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
                if not self._claim(nxt):
                    continue  # a lent round served it
                return batch, nxt, False
            batch.append(nxt)
        return batch, None, False


def _lane_of(item: _Item) -> Lane:
    lane = item[0].__self__  # type: ignore[attr-defined]
    assert isinstance(lane, Lane)  # noqa: S101 - only Lane.serve is queued as _TX
    return lane


class Lane:
    """The queue of one open transaction: its operations, then its commit or rollback.

    Once the thread has run the lane's first operation inside the round's
    transaction (and nothing else of the lane is queued), it lends the round
    to the event loop (``_Lent``) and waits for it back: the lane's later
    operations and its commit then run at once in the loop (``_inline``),
    and so do the transactions queued meanwhile, one after the other
    (``SqliteThread._advance``). Only the first operation of a round and the
    round's ``COMMIT`` (the fsync) go to the thread.
    """

    def __init__(self, thread: SqliteThread) -> None:
        self._thread = thread
        self._queue: queue.SimpleQueue[_LaneItem | None] = queue.SimpleQueue()
        self._queued = False  # queued on the thread with its first item
        self.taken = False  # served by the thread or a lent round (``_mutex``)
        self._unread = 0  # items put and not yet taken (``_mutex``)
        # Nothing written inside the lane's savepoint yet: a write needs no
        # savepoint of its own (``ROLLBACK TO lane`` undoes it alone).
        self.clean = False

    def _put(self, item: _LaneItem | None) -> None:
        """Queue ``item`` for the thread (or the lent round); ``_mutex`` held."""
        self._unread += 1
        self._queue.put(item)
        if not self._queued:
            self._queued = True
            self._thread._enqueue_lane(self)

    @overload
    def submit(self, op: Op, *, mode: int, before: tuple[str, ...] = ()) -> asyncio.Future[Any]: ...
    @overload
    def submit(self, op: Op, *, mode: int, before: tuple[str, ...] = (), into: _W) -> _W: ...
    def submit(
        self, op: Op, *, mode: int, before: tuple[str, ...] = (), into: Waiter | None = None
    ) -> Waiter:
        """Run ``op`` inside the transaction (``WRITE``: in a savepoint of its own).

        ``before``: statements to run first, outside that savepoint (the
        transaction's own ``SAVEPOINT`` / ``RELEASE`` marks, sent lazily).
        ``into``: what hears the outcome instead of a new future (returned).
        """
        fut = self._thread._loop.create_future() if into is None else into
        self._send((op, mode, fut, before))
        return fut

    def _send(self, item: _LaneItem | None) -> None:
        thread = self._thread
        with thread._mutex:
            lent = thread._lent
            if lent is None and not self._queued and thread._idle:
                lent = self._begin_idle()
            if lent is None or lent.active is not self or self._unread:
                self._put(item)
            elif self._inline(lent, item):
                thread._advance(lent)

    def _begin_idle(self) -> _Lent | None:
        """``_mutex`` held: begin a round in the loop for this lane's first item."""
        lent = self._thread._take_idle()
        if lent is None:
            return None
        try:
            lent.conn.execute("SAVEPOINT lane")
        except sqlite3.Error:  # not expected after a BEGIN; the thread serves the lane
            self._thread._advance(lent)  # hands the (empty) round back
            return None
        self._queued = self.taken = self.clean = True
        lent.active, lent.txs = self, 1
        return lent

    def drain(self, lent: _Lent) -> bool:
        """In the loop, ``_mutex`` held: run what was queued; ``True`` if the lane ended."""
        while self._unread:
            self._unread -= 1
            if self._inline(lent, self._queue.get_nowait()):
                return True
        return False

    def _inline(self, lent: _Lent, item: _LaneItem | None) -> bool:
        """In the loop, ``_mutex`` held: run ``item`` on the lent round; ``True``: lane ended."""
        conn = lent.conn
        if item is None:  # aborted
            _undo(conn, "lane")
            return True
        if not conn.in_transaction:  # SQLite rolled the round back (I/O error, full disk)
            lost = sqlite3.OperationalError("the transaction was rolled back by SQLite")
            return _refuse(_post_now, item, lost)
        if item[1] in {_COMMIT, _ROLLBACK}:
            done = _finish(conn, item, _done)
            if done is not None:
                lent.results.append(done)  # told after the round's COMMIT
            return True
        _done([_op(conn, item, self)])
        return False

    def _tell(self, results: list[_Result]) -> None:
        self._thread.post(_done, results)

    def _next(self, conn: sqlite3.Connection, result: _Result) -> _LaneItem | _Handback | None:
        """In the thread: post ``result``; lend the round, or take the lane's next item.

        Lent first: the operation the loop sends on hearing of the result finds it lent.
        """
        thread = self._thread
        with thread._mutex:
            lend = thread.lend and not self._unread
            if lend:
                thread._lent = _Lent(
                    conn, self, thread._round_start, thread._tx_group_s, thread._round_txs
                )
        thread.post(_done, [result])
        if lend:
            return thread._back.get()
        item = self._queue.get()
        with thread._mutex:
            self._unread -= 1
        return item

    def _first(self, wait_s: float | None) -> _LaneItem | None:
        item = self._queue.get(timeout=wait_s)
        with self._thread._mutex:
            self._unread -= 1
        return item

    def commit(self, before: tuple[str, ...] = (), last: Op | None = None) -> asyncio.Future[Any]:
        """Commit; the future resolves after the round's ``COMMIT`` (fails if it did).

        ``last``: a write to run first, inside the transaction; the future
        resolves to the changes it returns (its result is ``(_, changes)``).
        """
        return self.submit(last or _nothing, mode=_COMMIT, before=before)

    def commit_into(
        self, waiter: Waiter, before: tuple[str, ...] = (), last: Op | None = None
    ) -> None:
        """``commit``, its outcome told to ``waiter`` (in the loop) instead of a new future.

        ``waiter`` runs inside the loop callback that resolves the round's
        futures: it must not raise.
        """
        self.submit(last or _nothing, mode=_COMMIT, before=before, into=waiter)

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
            self._send(None)

    def run(self, conn: sqlite3.Connection, *, wait_s: float | None) -> _Result | object | None:
        """In the thread, inside the round's transaction: serve the lane until it ends.

        Returns its commit future's result, to post once the round commits
        (``None`` when it rolled back: already told), the ``_Handback`` of
        the round it lent to the loop, or ``_STALLED`` when
        ``wait_s`` passed before its first item (it waits for another
        transaction, maybe one of this round: commit the round first).
        """
        try:
            first = self._first(wait_s)
        except queue.Empty:
            return _STALLED
        conn.execute("SAVEPOINT lane")
        self.clean = True
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
            if item[1] in {_COMMIT, _ROLLBACK}:
                return _finish(conn, item, self._tell)
            nxt = self._next(conn, _op(conn, item, self))
            if isinstance(nxt, _Handback):
                return nxt
            item = nxt

    def fail(self, exc: BaseException) -> None:
        """In the thread: the transaction could not begin; fail each operation until it ends."""
        post = self._thread.post
        while True:
            item = self._first(None)
            if item is None or _refuse(post, item, exc):
                return


_LaneItem = tuple[Op, int, Waiter, tuple[str, ...]]


class _Lent:
    """A round the event loop holds: its connection and what it served."""

    __slots__ = ("active", "conn", "idle", "results", "started", "txs", "until")

    def __init__(
        self,
        conn: sqlite3.Connection,
        active: Lane | None,
        started: float,
        window: float,
        txs: int,
        *,
        idle: bool = False,
    ) -> None:
        self.conn = conn
        self.idle = idle  # begun by the loop on the idle thread's connection
        self.active = active  # the transaction being served
        self.started = started
        self.until = started + window  # no transaction starts after this (the group window)
        self.txs = txs  # transactions in the round so far
        self.results: list[_Result] = []  # commits to tell after the round's COMMIT


class _Handback:
    """The round given back to the thread: the commits it owes, its transactions, its start."""

    __slots__ = ("results", "started", "txs")

    def __init__(self, results: list[_Result], txs: int, started: float) -> None:
        self.results = results
        self.txs = txs
        self.started = started


def _post_now(fn: Callable[..., Any], *args: Any) -> None:
    fn(*args)  # already in the loop


def _refuse(post: Callable[..., None], item: _LaneItem, exc: BaseException) -> bool:
    """Fail one lane item (a rollback succeeds); ``True`` when it ended the lane."""
    _, mode, fut, _ = item
    post(_done, [(fut, None, None if mode == _ROLLBACK else exc)])
    return mode in {_COMMIT, _ROLLBACK}


def _finish(
    conn: sqlite3.Connection, item: _LaneItem, tell: Callable[[list[_Result]], None]
) -> _Result | None:
    """End a lane with its commit or rollback item.

    Returns the commit's result, to tell once the round has committed, or
    ``None`` when there is nothing to wait for (a rollback, a failed commit:
    the lane's savepoint is undone and ``tell`` says so now).
    """
    fut = item[2]
    done: _Result = (fut, None, None)
    if item[1] == _COMMIT:
        done = _last(conn, item)
        if done[2] is None:
            try:
                conn.execute("RELEASE lane")
            except sqlite3.Error as exc:
                done = (fut, None, exc)
            else:
                return done
    _undo(conn, "lane")  # nothing of it stays
    tell([done])
    return None


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


def _op(conn: sqlite3.Connection, item: _LaneItem, lane: Lane) -> _Result:
    """One operation of a lane (a write in a savepoint: its own, or the lane's when it is first)."""
    op, mode, fut, before = item
    if before:
        lane.clean = False  # a savepoint of the caller's is open, or was released into the lane
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
    if not lane.clean:
        return _saved(conn, op, fut)
    try:  # the lane's savepoint holds nothing else: undoing it undoes this write alone
        result = op(conn)
    except Exception as exc:
        with contextlib.suppress(sqlite3.Error):  # gone with a rollback SQLite did itself
            conn.execute("ROLLBACK TO lane")  # it stays open, empty
        return fut, None, exc
    lane.clean = False
    return fut, result, None


def _saved(conn: sqlite3.Connection, op: Op, fut: Waiter) -> _Result:
    """A write of a lane in a savepoint of its own."""
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
    failed: BaseException | None = None
    for fut, value, exc in results:
        if fut.done():  # the caller was cancelled
            continue
        try:
            if exc is None:
                fut.set_result(value)
            else:
                fut.set_exception(exc)
        except BaseException as err:  # a Waiter that raised must not strand the others
            failed = failed or err
    if failed is not None:
        raise failed


def _fail(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
