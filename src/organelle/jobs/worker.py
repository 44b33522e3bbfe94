"""``Worker``: claims jobs from a ``JobQueue`` and runs their handlers.

One claim loop fills up to ``slots`` concurrent handler tasks, honouring each
job type's ``concurrency`` and ``rate``; a heartbeat task keeps every held
lease alive; each finished attempt is acked (``complete``) or failed with a
backoff retry, or dead-lettered after ``max_attempts``. Acks run after the
slot is freed, so the next claim and the previous acks share one commit.

``drain()`` is burst mode: run until nothing is runnable, then return — what
makes tests deterministic without sleeps. ``stop()`` lets in-flight jobs
finish within ``drain_timeout_s`` and hands the rest back to the queue at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol, Self

from organelle.errors import LeaseLostError
from organelle.jobs.base import AttemptError, JobQueue, JobSpec, Lease, Retry

__all__ = ["JobHandler", "JobObserver", "Worker", "WorkerStats", "current_job"]

log = logging.getLogger("organelle.jobs")

JobHandler = Callable[..., Awaitable[Any]]
current_job: ContextVar[Lease | None] = ContextVar("organelle_current_job", default=None)
"""The lease of the job the current task runs (id, attempt): use it for idempotency keys."""

CLAIM_ERROR_PAUSE_S = 0.2


class JobObserver(Protocol):
    """Told about each job's enqueue and outcome; ``job`` is the job name, never an id.

    The kernel passes one that reports to its listeners; a raising observer
    is logged and never affects the job.
    """

    def enqueued(self, job: str, meta: dict[str, str]) -> None:
        """A job passed its checks and is about to be stored.

        ``meta`` is what the job will carry to its run (``Lease.meta``): the
        observer may add to it (trace context).
        """
        ...

    def succeeded(self, job: str, duration_s: float) -> None:
        """An attempt finished and was acked."""
        ...

    def failed(self, job: str, duration_s: float) -> None:
        """An attempt raised or timed out (a retry or dead letter follows)."""
        ...

    def retried(self, job: str) -> None:
        """A failed attempt (or ``Retry``) was scheduled again."""
        ...

    def dead(self, job: str) -> None:
        """The job used up its attempts."""
        ...


def notify(observer: JobObserver | None, event: str, *args: Any) -> None:
    """Call ``observer.<event>(*args)``; an observer's error is logged, never raised."""
    if observer is not None:
        try:
            getattr(observer, event)(*args)
        except Exception:
            log.exception("job observer failed on %s", event)


@dataclass(slots=True)
class WorkerStats:
    """Counters since the worker was created."""

    started: int = 0
    succeeded: int = 0
    retried: int = 0
    dead: int = 0
    lost: int = 0
    released: int = 0


class _Limiter:
    """Per job type: running count against ``concurrency``, token bucket for ``rate``."""

    __slots__ = ("capacity", "concurrency", "rate", "running", "stamp", "tokens")

    def __init__(self, spec: JobSpec, now: float) -> None:
        self.concurrency = spec.concurrency
        self.rate = spec.rate
        self.capacity = max(1.0, spec.rate or 1.0)
        self.tokens = self.capacity
        self.stamp = now
        self.running = 0

    def room(self, now: float) -> tuple[int, float]:
        """How many may start now, and when to look again if none."""
        room = 1 << 30
        if self.concurrency is not None:
            room = self.concurrency - self.running
        if self.rate is not None:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            room = min(room, int(self.tokens))
            if room <= 0:
                return 0, (1 - self.tokens) / self.rate
        return max(0, room), 0.0


class Worker:
    """Runs the handlers of the job types it knows.

    Args:
        queue: where jobs come from.
        handlers: job name → ``async def fn(**params)``.
        specs: job name → ``JobSpec`` (timeout, backoff, concurrency, rate).
        slots: how many handlers run at once in total.
        poll_s: the longest idle sleep between looks at the queue.
        clock: wall-clock seconds, shared with the queue in tests.
        observer: told of every outcome (succeeded / failed / retried / dead).
    """

    def __init__(
        self,
        queue: JobQueue,
        handlers: Mapping[str, JobHandler],
        *,
        specs: Mapping[str, JobSpec] | None = None,
        slots: int = 10,
        poll_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        observer: JobObserver | None = None,
    ) -> None:
        if slots < 1:
            raise ValueError("slots must be >= 1")
        self.queue = queue
        self.handlers = dict(handlers)
        self.specs = dict(specs or {})
        self.slots = slots
        self.poll_s = poll_s
        self.clock = clock
        self.stats = WorkerStats()
        self.observer = observer
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not crypto
        self._default = JobSpec()
        now = clock()
        self._limits = {n: _Limiter(self._spec(n), now) for n in self.handlers}
        self._limited: list[str] = []
        self._free_names: list[str] = []
        self._paused: set[str] = set()
        self._index()
        self._running: dict[str, tuple[Lease, asyncio.Task[None]]] = {}
        self._acking: set[asyncio.Task[None]] = set()
        self._claiming = 0  # claims awaiting the queue: their jobs are in no other count
        self._lost: set[str] = set()
        self._slot = asyncio.Event()
        self._stop = asyncio.Event()
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._beat_task: asyncio.Task[None] | None = None
        self._beat_wake = asyncio.Event()
        self._beat_at: dict[str, float] = {}
        self._min_lease = self._default.lease_s

    def _spec(self, name: str) -> JobSpec:
        return self.specs.get(name, self._default)

    def _index(self) -> None:
        paused = self._paused
        self._limited = [
            n
            for n, lim in self._limits.items()
            if (lim.concurrency or lim.rate) and n not in paused
        ]
        self._free_names = [n for n in self.handlers if n not in self._limited and n not in paused]

    @property
    def paused(self) -> frozenset[str]:
        """Job names this worker does not claim now (``pause``); their jobs wait in the queue."""
        return frozenset(self._paused)

    def pause(self, names: Iterable[str] | None = None) -> frozenset[str]:
        """Stop claiming jobs named ``names`` (default: every job this worker knows).

        Runs in flight finish; the paused jobs wait in the queue, neither run
        nor failed, until ``resume``. Names not known yet are paused too, so a
        module added later starts paused. Returns the paused names.
        """
        self._paused.update(self.handlers if names is None else names)
        self._index()
        return self.paused

    def resume(self, names: Iterable[str] | None = None) -> frozenset[str]:
        """Claim ``names`` again (default: every paused name); return what stays paused."""
        if names is None:
            self._paused.clear()
        else:
            self._paused.difference_update(names)
        self._index()
        self._slot.set()  # an idle claim loop looks again now
        return self.paused

    def add(self, name: str, handler: JobHandler, spec: JobSpec | None = None) -> None:
        """Start taking jobs named ``name`` (a module was added at run time)."""
        self.handlers[name] = handler
        if spec is not None:
            self.specs[name] = spec
        self._limits[name] = _Limiter(self._spec(name), self.clock())
        self._index()
        self._slot.set()  # an idle claim loop looks again now

    def remove(self, names: list[str]) -> list[asyncio.Task[None]]:
        """Stop taking jobs named ``names``; return the runs of them still in flight.

        Jobs of those names wait in the queue from now on: neither run, failed
        nor dead-lettered here. A lease claimed in the same instant is released.
        """
        for name in names:
            self.handlers.pop(name, None)
            self._limits.pop(name, None)
        self._index()
        gone = set(names)
        return [task for lease, task in self._running.values() if lease.name in gone]

    @property
    def in_flight(self) -> int:
        """Handlers running now."""
        return len(self._running)

    @property
    def busy(self) -> bool:
        """Claiming, running or recording an outcome: a job of this worker may still change."""
        return bool(self._claiming or self._running or self._acking)

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Start claiming in the background."""
        if self._loop_task is None:
            self._stopping = False
            self._stop.clear()
            self._loop_task = asyncio.create_task(self._claim_loop(burst=False))
            self._ensure_heartbeat()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def drain(self, timeout_s: float = 60.0) -> None:
        """Burst mode: run jobs until none is runnable and none is in flight.

        Jobs scheduled later (delays, backoff) are left for later. Raises
        ``TimeoutError`` if the queue does not run dry within ``timeout_s``.
        """
        if self._loop_task is not None:
            raise RuntimeError("drain() runs a stopped worker; this one is started")
        self._ensure_heartbeat()
        try:
            async with asyncio.timeout(timeout_s):
                await self._claim_loop(burst=True)
        finally:
            await self._cancel_heartbeat()

    async def stop(self, drain_timeout_s: float = 10.0) -> None:
        """Finish in-flight jobs within ``drain_timeout_s``; release the rest at once."""
        self._stopping = True
        self._stop.set()
        self._slot.set()  # a claim loop waiting for a free slot ends now, not when a job does
        if self._loop_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        tasks = [task for _, task in self._running.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=max(0.0, drain_timeout_s))
        leftover = list(self._running.values())
        for _, task in leftover:
            task.cancel()
        if leftover:
            await asyncio.wait([task for _, task in leftover])
        if self._acking:
            await asyncio.wait(list(self._acking))
        await self._cancel_heartbeat()

    # -- claim loop --------------------------------------------------------

    async def _claim_loop(self, *, burst: bool) -> None:
        while not self._stopping:
            # handlers come and go with modules; paused names wait in the queue
            all_names = [n for n in self.handlers if n not in self._paused]
            free = self.slots - len(self._running)
            if free <= 0:
                self._slot.clear()
                await self._slot.wait()
                await asyncio.sleep(0)  # let the other finishing jobs free their slots too
                continue
            leases, limit_wait = await self._take(free)
            if leases is None:
                await asyncio.sleep(CLAIM_ERROR_PAUSE_S)
                continue
            if self._stop.is_set():
                return
            if leases:
                # the handlers just launched start before the next claim goes out
                # (a thread-backed queue's claim would compete with them for the GIL)
                await asyncio.sleep(0)
                continue
            idle = not self._running and not self._acking
            due = await self.queue.next_due(all_names) if all_names else None
            now = self.clock()
            if burst and idle and (due is None or due > now):
                return
            timeout = self.poll_s
            if due is not None:
                timeout = min(timeout, max(0.0, due - now))
            if limit_wait:
                timeout = min(timeout, limit_wait)
            await self._idle_wait(max(timeout, 0.001))

    async def _take(self, free: int) -> tuple[list[Lease] | None, float]:
        """Claim up to ``free`` jobs and launch them; ``None`` when the claim failed."""
        self._claiming += 1
        try:
            try:
                leases, wait = await self._claim(free)
            except Exception:
                log.exception("job claim failed; retrying")
                return None, 0.0
            if self._stop.is_set():
                await self._release(leases)
                return [], wait
            for lease in leases:
                self._launch(lease)
            return leases, wait
        finally:
            self._claiming -= 1

    async def _claim(self, free: int) -> tuple[list[Lease], float]:
        now = self.clock()
        calls = []
        wait = 0.0
        if self._free_names:
            calls.append(self.queue.claim(names=self._free_names, limit=free))
        for name in self._limited:
            room, retry_in = self._limits[name].room(now)
            if room > 0:
                calls.append(self.queue.claim(names=[name], limit=min(room, free)))
            elif retry_in:
                wait = retry_in if not wait else min(wait, retry_in)
        if not calls:
            return [], wait
        if len(calls) == 1:
            return await calls[0], wait
        got = await asyncio.gather(*calls)
        leases = [lease for batch in got for lease in batch]
        return leases, wait

    async def _idle_wait(self, timeout_s: float) -> None:
        self._slot.clear()
        waiters = [
            asyncio.ensure_future(self.queue.wait(timeout_s)),
            asyncio.ensure_future(self._slot.wait()),
            asyncio.ensure_future(self._stop.wait()),
        ]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    def _launch(self, lease: Lease) -> None:
        if lease.name not in self.handlers or lease.name in self._paused:
            # its module left (or it was paused) after the claim: the job waits
            task = asyncio.create_task(self._release([lease]))
            self._acking.add(task)
            task.add_done_callback(self._acking.discard)
            return
        limiter = self._limits.get(lease.name)
        if limiter is not None:
            limiter.running += 1
            if limiter.rate is not None:
                limiter.tokens -= 1
        self.stats.started += 1
        if lease.lease_s < self._min_lease:
            self._min_lease = lease.lease_s
            self._beat_wake.set()
        task = asyncio.create_task(self._run(lease))
        self._running[lease.job_id] = (lease, task)

    # -- one attempt -------------------------------------------------------

    async def _run(self, lease: Lease) -> None:
        spec = self._spec(lease.name)
        started = self.clock()
        began = time.perf_counter()
        token = current_job.set(lease)
        outcome: tuple[str, Any] = ("ok", None)
        try:
            handler = self.handlers[lease.name]
            if spec.timeout_s is not None:
                async with asyncio.timeout(spec.timeout_s):
                    result = await handler(**lease.params)
            else:
                result = await handler(**lease.params)
            outcome = ("ok", result)
        except Retry as signal:
            outcome = ("retry", signal)
        except asyncio.CancelledError:
            outcome = ("cancelled", None)
        except Exception as exc:
            outcome = ("error", exc)
        finally:
            current_job.reset(token)
            self._finish_slot(lease)
        kind, value = outcome
        took = time.perf_counter() - began
        if kind == "cancelled":
            if lease.job_id in self._lost:
                self._lost.discard(lease.job_id)
            else:
                await self._release([lease])
            return
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 - always inside a task
        self._acking.add(task)
        try:
            await self._settle(lease, spec, kind, value, started, took)
        except LeaseLostError:
            self.stats.lost += 1
            log.warning(
                "job %s attempt %d: lease lost, result dropped", lease.job_id, lease.attempt
            )
        except Exception:
            log.exception("job %s: could not record the outcome; it will run again", lease.job_id)
        finally:
            self._acking.discard(task)
            self._slot.set()

    def _finish_slot(self, lease: Lease) -> None:
        self._running.pop(lease.job_id, None)
        self._beat_at.pop(lease.job_id, None)
        limiter = self._limits.get(lease.name)
        if limiter is not None:
            limiter.running -= 1
        self._slot.set()

    async def _settle(  # noqa: PLR0917 - one attempt's whole outcome
        self, lease: Lease, spec: JobSpec, kind: str, value: Any, started: float, took: float
    ) -> None:
        if kind == "ok":
            await self.queue.complete(lease, value)
            self.stats.succeeded += 1
            notify(self.observer, "succeeded", lease.name, took)
            return
        now = self.clock()
        if kind == "retry":
            delay = value.delay_s
            error = AttemptError(
                attempt=lease.attempt,
                type="Retry",
                message=str(value),
                started_at=started,
                failed_at=now,
            )
        else:
            delay = None
            exc: BaseException = value
            error = AttemptError(
                attempt=lease.attempt,
                type=type(exc).__name__,
                message=str(exc),
                traceback="".join(traceback.format_exception(exc)),
                started_at=started,
                failed_at=now,
            )
        retry_at = None
        if lease.attempt < lease.max_attempts:
            if delay is None:
                delay = spec.backoff.delay_s(lease.attempt, self._rng)
            retry_at = now + max(0.0, delay)
        state = await self.queue.fail(lease, error, retry_at=retry_at)
        if kind != "retry":
            notify(self.observer, "failed", lease.name, took)
        if state == "dead":
            self.stats.dead += 1
            notify(self.observer, "dead", lease.name)
            log.error(
                "job %s (%s) attempt %d/%d failed: %s: %s; dead",
                lease.job_id,
                lease.name,
                lease.attempt,
                lease.max_attempts,
                error.type,
                error.message[:500],
            )
        else:
            self.stats.retried += 1
            notify(self.observer, "retried", lease.name)
            log.warning(
                "job %s (%s) attempt %d/%d failed: %s: %s; retry in %.3gs",
                lease.job_id,
                lease.name,
                lease.attempt,
                lease.max_attempts,
                error.type,
                error.message[:500],
                (retry_at or now) - now,
            )

    async def _release(self, leases: list[Lease]) -> None:
        if not leases:
            return
        try:
            await self.queue.release(leases)
            self.stats.released += len(leases)
        except Exception:
            log.exception("could not release %d jobs; they return after their lease", len(leases))

    # -- heartbeat ---------------------------------------------------------

    def _ensure_heartbeat(self) -> None:
        if self._beat_task is None:
            self._beat_task = asyncio.create_task(self._heartbeat())

    async def _cancel_heartbeat(self) -> None:
        task, self._beat_task = self._beat_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _heartbeat(self) -> None:
        # Each lease is extended once a third of it has passed since its last
        # extension; the tick follows the shortest lease seen, and a launch
        # with a shorter lease wakes the sleeper at once.
        while True:
            tick = min(1.0, self._min_lease / 6)
            self._beat_wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._beat_wake.wait(), tick)
            now = self.clock()
            due = [
                lease
                for lease, _ in self._running.values()
                if now - self._beat_at.get(lease.job_id, lease.claimed_at) >= lease.lease_s / 3
            ]
            if not due:
                continue
            try:
                lost = await self.queue.heartbeat(due)
            except Exception:
                log.exception("job heartbeat failed")
                continue
            lost_ids = {lease.job_id for lease in lost}
            for lease in due:
                if lease.job_id not in lost_ids:
                    self._beat_at[lease.job_id] = now
            for lease in lost:
                entry = self._running.get(lease.job_id)
                if entry is not None and entry[0].token == lease.token:
                    self.stats.lost += 1
                    self._lost.add(lease.job_id)
                    entry[1].cancel()
