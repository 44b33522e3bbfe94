"""The claim an idle SQLite worker would make next, run by the writer thread itself.

A worker on another process than its producers learns of a new job when the
writer thread's ``PRAGMA data_version`` poll sees the producer's commit. The
plain path then hops to the event loop (wake the worker), back to the thread
(its claim) and to the loop again (the leases): two thread switches of the
job's pickup latency spent before the claim even starts. Instead, while the
worker waits, the thread holds the claim the worker made last (the one that
came up empty) and queues it the moment it sees a commit; the leases wait
here and the worker's next ``claim`` takes them without a round trip.

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
from typing import Any

from organelle.jobs.base import Lease
from organelle.storage._sqlite_thread import WRITE, SqliteThread

__all__ = ["Prefetch"]

log = logging.getLogger("organelle.jobs")

ClaimOp = Callable[[sqlite3.Connection], list[Lease]]


class Prefetch:
    """One armed claim at a time, and the leases it brought."""

    def __init__(self, wake: asyncio.Event) -> None:
        self._wake = wake
        self._armed: tuple[SqliteThread, ClaimOp, asyncio.Future[Any]] | None = None
        self._leases: list[Lease] = []
        self.used = False  # armed at least once: close() must look for leases

    def arm(self, thread: SqliteThread, op: ClaimOp) -> None:
        """In the loop: hold ``op`` for the thread's next sighting of a foreign commit."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(self._landed)
        self.used = True
        self._armed = (thread, op, fut)

    def disarm(self) -> None:
        """In the loop: the worker woke; a claim already queued still lands here."""
        self._armed = None

    def fire(self) -> bool:
        """In the writer thread: queue the armed claim (at most once); ``True`` if it did."""
        armed, self._armed = self._armed, None
        if armed is None:
            return False
        thread, op, fut = armed
        thread.submit(op, mode=WRITE, fut=fut)
        return True

    def _landed(self, fut: asyncio.Future[Any]) -> None:
        # The worker wakes whatever came back: with no lease it looks again
        # itself (the commit may have been a job due later: a new next_due).
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:  # the worker's own claim will meet the same trouble and say so
            log.debug("prefetched claim failed: %r", exc)
        else:
            self._leases += fut.result()
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
