"""One member of a consumer group: a task per partition, one record in flight per partition.

Each task claims the group's next records of its partition (a batch under one
lease, so a busy partition costs one claim per batch, not per record), runs
the handler on each in order (within the lease), and commits each; a failure
is retried with backoff while the record keeps its place, and becomes a dead
letter after ``max_attempts``, so one bad record cannot stall its partition
forever. Several members (other
processes, other nodes on a shared log) split the partitions by lease: a
member whose lease lapsed is refused on commit and simply claims again.

Given a ``scope`` (the kernel's dedup inbox gives one: a Store transaction),
a run of a batch's records is handled inside one ``scope(deliveries)``
block, at most ``SCOPE_S`` long: the block ends first, then the group moves
past the run with one commit (of its last record: a commit moves the group
past every record before it too). A record whose handler fails ends the run early
(the records before it stay in the block); if the block itself fails, none
of its records moved, and the first counts a failed attempt.

Each outcome is counted in ``ConsumerStats`` and, when an ``observer`` is
given (the kernel's listeners), reported to it; an observer's error is
logged and never affects the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Literal

from organelle.errors import LeaseLostError, OrganelleError
from organelle.streams.base import Delivery, Start, StreamLog

__all__ = ["ConsumerStats", "GroupConsumer", "Outcome", "RecordObserver"]

log = logging.getLogger("organelle.streams")

Handler = Callable[[Delivery], Awaitable[None]]
Outcome = Literal["done", "failed", "dead", "lost"]
RecordObserver = Callable[[Outcome, Delivery, float, "str | None"], None]
"""Told of each record's outcome: ``(outcome, delivery, duration_s, error)``."""
Scope = Callable[[list[Delivery]], AbstractAsyncContextManager[object]]
"""Wraps a run of consecutive records of one batch (given the records it may get)."""
SCOPE_S = 0.01  # a scope takes in no more records after this long
IDLE_MIN_S = 0.005
IDLE_MAX_S = 0.25
ERROR_PAUSE_S = 0.5


@dataclass(slots=True)
class ConsumerStats:
    """Counters of one group member, readable from ``Kernel.consumers()``."""

    stream: str
    group: str
    module: str
    handler: str
    done: int = 0
    failed: int = 0
    dead: int = 0
    lost: int = 0
    duplicates: int = 0
    in_flight: int = 0
    last_error: dict[str, object] | None = field(default=None)


class GroupConsumer:
    """Runs ``handler`` for one group of one stream, in order per partition."""

    def __init__(
        self,
        log_: StreamLog,
        *,
        stream: str,
        group: str,
        partitions: int,
        handler: Handler,
        stats: ConsumerStats,
        start: Start = "earliest",
        max_attempts: int = 5,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        lease_s: float = 30.0,
        batch: int = 32,
        observer: RecordObserver | None = None,
        scope: Scope | None = None,
    ) -> None:
        self.log = log_
        self.scope = scope
        self.batch = batch
        self.stream = stream
        self.group = group
        self.partitions = partitions
        self.handler = handler
        self.stats = stats
        self.start_at = start
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.lease_s = lease_s
        self.observer = observer
        self.owner = f"{os.uname().nodename}:{os.getpid()}:{id(self):x}"
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._stopping = False

    def start(self) -> None:
        """Start one task per partition."""
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run(p), name=f"organelle-consume-{self.group}-{self.stream}-{p}")
            for p in range(self.partitions)
        ]

    @property
    def stopping(self) -> bool:
        """Whether ``stop`` was called (records not started yet are given back)."""
        return self._stopping

    def wake(self) -> None:
        """Something was appended here: look now instead of after the idle pause."""
        self._wake.set()

    async def stop(self, timeout_s: float) -> None:
        """Let records in flight finish (up to ``timeout_s``), then cancel; never raises."""
        self._stopping = True
        self._wake.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _run(self, partition: int) -> None:
        idle = IDLE_MIN_S
        while not self._stopping:
            try:
                batch = await self.log.claim_batch(
                    self.group,
                    self.stream,
                    partition,
                    self.owner,
                    lease_s=self.lease_s,
                    start=self.start_at,
                    limit=self.batch,
                )
            except Exception as exc:  # the log is away: say so, pause, retry
                log.warning("claim on %s/%s failed: %s", self.stream, self.group, exc)
                await self._pause(ERROR_PAUSE_S)
                continue
            if not batch:
                await self._pause(idle)
                idle = min(idle * 2, IDLE_MAX_S)
                continue
            idle = IDLE_MIN_S
            if self.scope is not None:
                await self._run_scoped(batch, self.scope)
                continue
            for i, delivery in enumerate(batch):
                if self.stopping:  # give the rest back for another member
                    await self.log.release(delivery, self.owner, attempted=False)
                    break
                if not await self._handle(delivery) and i + 1 < len(batch):
                    break  # released for a retry, or the lease is gone: claim afresh

    async def _run_scoped(self, batch: list[Delivery], scope: Scope) -> None:
        """Handle ``batch`` in runs, each inside one ``scope`` block, positions after it."""
        rest = batch
        while rest:
            if self.stopping:  # give the rest back for another member
                await self.log.release(rest[0], self.owner, attempted=False)
                return
            done: list[tuple[Delivery, float]] = []
            started = time.monotonic()
            try:
                async with scope(rest):
                    failure = await self._run_in(rest, done)
            except asyncio.CancelledError:
                await self.log.release(rest[0], self.owner)
                raise
            except Exception as exc:  # nothing of the block happened: the first comes again
                await self._failed(rest[0], exc, time.monotonic() - started)
                return
            if done and not await self._commit_run(done):
                return
            if failure is not None:
                await self._failed(*failure)
                return
            rest = rest[len(done) :]

    async def _commit_run(self, done: list[tuple[Delivery, float]]) -> bool:
        """Move the group past a run of consecutive records: one commit, of its last."""
        stats = self.stats
        try:
            await self.log.commit(done[-1][0], self.owner)
        except LeaseLostError:  # another member runs them again (the inbox knows them)
            stats.lost += len(done)
            for delivery, took in done:
                self._tell("lost", delivery, took)
            return False
        except Exception as exc:  # not committed: the records come again
            log.warning("commit on %s/%s failed: %s", self.stream, self.group, exc)
            return False
        stats.done += len(done)
        for delivery, took in done:
            self._tell("done", delivery, took)
        return True

    async def _run_in(
        self, rest: list[Delivery], done: list[tuple[Delivery, float]]
    ) -> tuple[Delivery, BaseException, float] | None:
        """Handle records of ``rest`` in order into ``done``; the failure that stopped it.

        The run's time counts from its first record: entering the scope may
        have waited (for the Store's writer, say).
        """
        started = time.monotonic()
        for delivery in rest:
            if done and (self.stopping or time.monotonic() - started > SCOPE_S):
                return None
            took, exc = await self._attempt(delivery)
            if exc is not None:
                return delivery, exc, took
            done.append((delivery, took))
        return None

    async def _attempt(self, delivery: Delivery) -> tuple[float, BaseException | None]:
        """Run the handler on one record: how long it took and what it raised."""
        stats = self.stats
        stats.in_flight += 1
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.lease_s):
                await self.handler(delivery)
        except Exception as exc:  # any failure: retried, then dead
            return time.perf_counter() - started, exc
        finally:
            stats.in_flight -= 1
        return time.perf_counter() - started, None

    async def _pause(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    def _tell(
        self, outcome: Outcome, delivery: Delivery, took: float, error: str | None = None
    ) -> None:
        if self.observer is not None:
            try:
                self.observer(outcome, delivery, took, error)
            except Exception:
                log.exception("record observer failed on %s", outcome)

    async def _handle(self, delivery: Delivery) -> bool:
        """Run one record; ``True`` when the group moved past it under our lease."""
        stats = self.stats
        stats.in_flight += 1
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.lease_s):
                await self.handler(delivery)
        except asyncio.CancelledError:
            await self.log.release(delivery, self.owner)
            raise
        except Exception as exc:  # any failure: retried, then dead
            return await self._failed(delivery, exc, time.perf_counter() - started)
        finally:
            stats.in_flight -= 1
        return await self._commit(delivery, time.perf_counter() - started)

    async def _commit(self, delivery: Delivery, took: float) -> bool:
        """Move the group past a handled record; ``True`` if it did."""
        stats = self.stats
        try:
            await self.log.commit(delivery, self.owner)
        except LeaseLostError:
            stats.lost += 1  # another member took over; it runs the record again
            self._tell("lost", delivery, took)
            return False
        except Exception as exc:  # not committed: the record comes again
            log.warning("commit on %s/%s failed: %s", self.stream, self.group, exc)
            return False
        stats.done += 1
        self._tell("done", delivery, took)
        return True

    async def _failed(self, delivery: Delivery, exc: BaseException, took: float) -> bool:
        stats = self.stats
        stats.failed += 1
        error = exc.code if isinstance(exc, OrganelleError) else type(exc).__name__
        message = f"{error}: {exc}"
        rec = delivery.record
        stats.last_error = {
            "error": message,
            "partition": rec.partition,
            "offset": rec.offset,
            "attempt": delivery.attempt,
            "ts": time.time(),
        }
        self._tell("failed", delivery, took, message)  # then dead, when out of attempts
        if delivery.attempt >= self.max_attempts:
            log.error(
                "stream %s group %s: record %d/%d is a dead letter after %d attempts: %s",
                self.stream,
                self.group,
                rec.partition,
                rec.offset,
                delivery.attempt,
                message,
            )
            try:
                await self.log.dead(delivery, self.owner, message)
            except LeaseLostError:
                stats.lost += 1
                self._tell("lost", delivery, took, message)
                return False
            stats.dead += 1
            self._tell("dead", delivery, took, message)
            return True
        log.warning(
            "stream %s group %s: record %d/%d failed (attempt %d of %d): %s",
            self.stream,
            self.group,
            rec.partition,
            rec.offset,
            delivery.attempt,
            self.max_attempts,
            message,
        )
        delay = min(self.backoff_max_s, self.backoff_s * 2 ** (delivery.attempt - 1))
        await asyncio.sleep(delay)  # holding the lease keeps the record's place
        await self.log.release(delivery, self.owner)
        return False
