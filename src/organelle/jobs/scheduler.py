"""``Scheduler``: cron schedules that enqueue a job per tick, once per cluster.

No leader, no lock: each tick's job id is derived from (schedule key, tick
time), so every scheduler instance enqueues *the same* job and the queue keeps
one. The same trick makes catch-up safe after downtime: the scheduler simply
re-enqueues every tick of the misfire window and the queue drops those that
already fired. Time comes from an injected ``now()`` so tests drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from organelle.errors import ConfigError
from organelle.jobs.base import JobQueue, NewJob

__all__ = ["Schedule", "Scheduler", "tick_job_id"]

log = logging.getLogger("organelle.jobs")

SKIP_GRACE_S = 1.0
"""With ``misfire="skip"``, a tick is still on time if seen within this many seconds."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """One cron schedule.

    Args:
        job: the job name each tick enqueues.
        expr: cron expression (croniter syntax, 5 or 6 fields).
        tz: time zone the expression is read in.
        key: stable schedule identity in tick ids (defaults to ``job``).
        params: the job's params.
        misfire: ``"skip"`` ticks missed by more than ``SKIP_GRACE_S``, or
            ``"catch_up"`` those within ``misfire_window_s``.
        misfire_window_s: how far back catch-up reaches.
        max_attempts: attempts of each tick's job.
        lease_s: lease of each tick's job.
    """

    job: str
    expr: str
    tz: str = "UTC"
    key: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    misfire: Literal["skip", "catch_up"] = "skip"
    misfire_window_s: float = 60.0
    max_attempts: int = 3
    lease_s: float = 30.0
    priority: int = 0


def tick_job_id(key: str, tick: float) -> str:
    """The deterministic job id of one tick of one schedule."""
    digest = hashlib.sha256(f"{key}@{tick:.3f}".encode()).hexdigest()[:24]
    return f"cron-{digest}"


class _Cron:
    def __init__(self, schedule: Schedule) -> None:
        try:
            from croniter import croniter  # type: ignore[import-untyped]
        except ImportError as exc:  # pragma: no cover - dependency missing
            raise ConfigError("cron schedules need `pip install croniter`") from exc
        if not croniter.is_valid(schedule.expr):
            raise ConfigError(f"schedule {schedule.job!r}: bad cron expression {schedule.expr!r}")
        self.schedule = schedule
        self.key = schedule.key or schedule.job
        self.tz = ZoneInfo(schedule.tz)
        self._croniter = croniter

    def ticks_between(self, start: float, end: float) -> list[float]:
        """Tick times t with start < t <= end (bounded to 10,000)."""
        it = self._croniter(self.schedule.expr, datetime.fromtimestamp(start, self.tz))
        out: list[float] = []
        while len(out) < 10_000:  # noqa: PLR2004 - a hard bound on catch-up work
            t = float(it.get_next(float))
            if t > end:
                break
            out.append(t)
        return out

    def next_after(self, t: float) -> float:
        it = self._croniter(self.schedule.expr, datetime.fromtimestamp(t, self.tz))
        return float(it.get_next(float))


class Scheduler:
    """Fires each schedule's ticks into a queue; safe to run on every node.

    Args:
        queue: where tick jobs go.
        schedules: the schedules.
        now: wall-clock seconds (inject a fake clock in tests).
        sleep: how to wait (tests pass a no-op and call ``tick()`` themselves).
    """

    def __init__(
        self,
        queue: JobQueue,
        schedules: Sequence[Schedule],
        *,
        now: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.queue = queue
        self.now = now
        self._sleep = sleep
        self._crons = [_Cron(s) for s in schedules]
        self._seen: dict[str, float] = {}
        self.fired = 0
        self.skipped = 0
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    @property
    def jobs(self) -> list[str]:
        """The job of every schedule, in order."""
        return [c.schedule.job for c in self._crons]

    def add(self, schedule: Schedule) -> None:
        """Fire ``schedule`` too, from now on (a module with ``@cron`` was added)."""
        self._crons.append(_Cron(schedule))
        self._changed.set()

    def remove(self, jobs: Sequence[str]) -> None:
        """Stop firing the schedules of ``jobs``; ticks already enqueued wait for a worker."""
        gone = set(jobs)
        self._crons = [c for c in self._crons if c.schedule.job not in gone]
        self._changed.set()

    async def tick(self) -> list[str]:
        """Enqueue every tick due since the last call; return the tick job ids."""
        now = self.now()
        jobs: list[NewJob] = []
        for cron in self._crons:
            sch = cron.schedule
            window = sch.misfire_window_s if sch.misfire == "catch_up" else SKIP_GRACE_S
            start = self._seen.get(cron.key)
            if start is None:  # first look: a fresh start reaches back over the window
                start = now - window
            for t in cron.ticks_between(start, now):
                if now - t > window:
                    self.skipped += 1
                    log.warning("schedule %s: tick %s missed and skipped", cron.key, t)
                    continue
                jobs.append(
                    NewJob(
                        name=sch.job,
                        params=dict(sch.params),
                        id=tick_job_id(cron.key, t),
                        run_at=t,
                        priority=sch.priority,
                        max_attempts=sch.max_attempts,
                        lease_s=sch.lease_s,
                    )
                )
            self._seen[cron.key] = now
        if not jobs:
            return []
        ids = await self.queue.enqueue(jobs)
        self.fired += len(ids)
        return ids

    def next_tick(self) -> float | None:
        """When the next tick of any schedule is due."""
        now = self.now()
        return min((c.next_after(now) for c in self._crons), default=None)

    async def run(self) -> None:
        """Fire ticks forever; enqueue failures are logged and retried next round."""
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("scheduler tick failed; retrying")
            nxt = self.next_tick()
            delay = 60.0 if nxt is None else max(0.0, nxt - self.now())
            await self._pause(min(delay, 60.0) + 0.001)

    async def _pause(self, delay_s: float) -> None:
        """Sleep until the next tick, or until the schedules change."""
        self._changed.clear()
        sleep = asyncio.ensure_future(self._sleep(delay_s))
        changed = asyncio.ensure_future(self._changed.wait())
        try:
            await asyncio.wait((sleep, changed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleep.cancel()
            changed.cancel()

    async def start(self) -> None:
        """Run in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        """Stop the background loop."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
