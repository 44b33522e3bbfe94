"""The claim an idle SQLite worker would make next, run by the writer thread itself.

A worker on another process than its producers learns of a new job when the
writer thread's ``PRAGMA data_version`` poll sees the producer's commit. The
plain path then hops to the event loop (wake the worker), back to the thread
(its claim) and to the loop again (the leases): two thread switches of the
job's pickup latency spent before the claim even starts. Instead, while the
worker waits, the thread holds the claim the worker made last (the one that
came up empty) and queues it the moment it sees a commit; the leases wait
here and the worker's next ``claim`` takes them without a round trip.

The leases land in the loop callback that resolves the claim (``_Landing``)
and wake the worker through ``Wake``, which resolves the very future the
worker's wait awaits: no loop turn is spent between the claim's commit and
the worker's resuming but the thread-to-loop hop itself.

Only a worker that claimed one set of names since it last waited is armed
(one with per-name limits claims name by name, and those claims are left alone). The
leases are ordinary claims: a worker that stops without taking them hands
them back on ``close``, or they return when their lease runs out.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable

from organelle.jobs.base import Lease
from organelle.storage._sqlite_thread import WRITE, SqliteThread

__all__ = ["Prefetch", "Wake"]

log = logging.getLogger("organelle.jobs")

ClaimOp = Callable[[sqlite3.Connection], list[Lease]]


class Wake:
    """The flag a waiting worker sleeps on: ``asyncio.Event`` less two loop turns.

    ``asyncio.wait_for`` (Python 3.11) runs ``Event.wait()`` as a task of its
    own, so a ``set`` reached the waiter two loop turns later (the task, then
    its done callback); here ``set`` resolves the very future it awaits.
    """

    __slots__ = ("_flag", "_waiters")

    def __init__(self) -> None:
        self._flag = False
        self._waiters: list[asyncio.Future[None]] = []

    def set(self) -> None:
        """Raise the flag and wake every waiter (in the event loop)."""
        self._flag = True
        for waiter in self._waiters:
            _resolve(waiter)

    def clear(self) -> None:
        """Lower the flag."""
        self._flag = False

    def is_set(self) -> bool:
        """Whether ``set`` was called since the last ``clear``."""
        return self._flag

    async def wait(self, timeout_s: float) -> None:
        """Return once the flag is set, or after ``timeout_s``."""
        if self._flag:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(timeout_s, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiters.remove(waiter)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Prefetch:
    """One armed claim at a time, and the leases it brought."""

    def __init__(self, wake: Wake) -> None:
        self._wake = wake
        self._armed: tuple[SqliteThread, ClaimOp, _Landing] | None = None
        self._leases: list[Lease] = []
        self.used = False  # armed at least once: close() must look for leases

    def arm(self, thread: SqliteThread, op: ClaimOp) -> None:
        """In the loop: hold ``op`` for the thread's next sighting of a foreign commit."""
        landing = _Landing(self, asyncio.get_running_loop())
        self.used = True
        self._armed = (thread, op, landing)

    def disarm(self) -> None:
        """In the loop: the worker woke; a claim already queued still lands here."""
        self._armed = None

    def fire(self) -> bool:
        """In the writer thread: queue the armed claim (at most once); ``True`` if it did."""
        armed, self._armed = self._armed, None
        if armed is None:
            return False
        thread, op, landing = armed
        thread.submit(op, mode=WRITE, fut=landing)
        return True

    def landed(self, leases: list[Lease] | None, exc: BaseException | None) -> None:
        """In the loop, once the claim committed: keep its leases and wake the worker.

        The worker wakes whatever came back: with no lease it looks again
        itself (the commit may have been a job due later: a new next_due).
        """
        if exc is not None:  # the worker's own claim will meet the same trouble and say so
            log.debug("prefetched claim failed: %r", exc)
        elif leases:
            self._leases += leases
        self._wake.set()

    def take(self, names: list[str], limit: int) -> list[Lease]:
        """Up to ``limit`` prefetched leases of ``names``; the rest stay."""
        if not self._leases:
            return []
        wanted = set(names)
        took: list[Lease] = []
        kept: list[Lease] = []
        for lease in self._leases:
            (took if lease.name in wanted and len(took) < limit else kept).append(lease)
        self._leases = kept
        return took

    def drop(self) -> list[Lease]:
        """All leases still held (the queue is closing: they go back)."""
        leases, self._leases = self._leases, []
        return leases


class _Landing(asyncio.Future[list[Lease]]):
    """The armed claim's future: its leases land as the writer's result resolves it.

    A done callback would run one loop turn later; this is the pickup's
    critical path, so the leases are kept and the worker woken at once.
    """

    def __init__(self, prefetch: Prefetch, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self._prefetch = prefetch

    def set_result(self, result: list[Lease], /) -> None:
        super().set_result(result)
        self._prefetch.landed(result, None)

    def set_exception(self, exception: type | BaseException, /) -> None:
        super().set_exception(exception)
        # retrieved here (logged by ``landed``), so not reported again at garbage collection
        self._prefetch.landed(None, self.exception())
