"""The charts' memory: a ring of samples taken every ``refresh_s`` while the gateway runs.

Counters the kernel keeps are totals since they were switched on, so a chart
of "now" needs the difference between two moments: each sample keeps the
totals it read and reports the rate and the p50 / p99 of the calls *between*
it and the previous sample (estimated from the histogram buckets' growth).
Queue depth and stream lag are read as they are at that moment: one grouped
count of the job queue, one ``info`` per stream this node consumes (each
under a short timeout; on NATS those are network reads).

Nothing leaves the process and nothing survives a restart: it is a window
for an operator looking now, not a metrics store (``docs/observability.md``
has the Prometheus exporter for that).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import msgspec

from organelle.dashboard._quantile import quantile
from organelle.errors import ConfigError

if TYPE_CHECKING:
    from organelle.kernel import Kernel

__all__ = ["History", "HistoryView", "Sample"]

log = logging.getLogger("organelle.dashboard")
READ_TIMEOUT_S = 2.0


class Sample(msgspec.Struct, kw_only=True, frozen=True):
    """One point of the charts; ``None``: not measured (no queue, first sample, a read failed)."""

    t: float
    """Wall-clock seconds."""
    rpc_rate: float | None
    """RPC calls served per second since the previous sample."""
    error_rate: float | None
    p50_ms: float | None
    """Of the calls since the previous sample whose handler suspended."""
    p99_ms: float | None
    queue_depth: int | None
    """Due jobs waiting for a worker (every job name)."""
    stream_lag: int | None
    """Records behind, summed over the groups of the streams this node consumes."""


class HistoryView(msgspec.Struct, kw_only=True, frozen=True):
    """``GET <path>/api/history``: the samples kept, oldest first."""

    period_s: float
    size: int
    samples: list[Sample]


class _Totals:
    """What the previous sample read, to take differences from."""

    __slots__ = ("calls", "counts", "errors", "t")

    def __init__(self, t: float, calls: int, errors: int, counts: list[int]) -> None:
        self.t = t
        self.calls = calls
        self.errors = errors
        self.counts = counts


class History:
    """Samples one kernel every ``period_s`` into a ring of ``size`` points."""

    def __init__(self, kernel: Kernel, *, period_s: float, size: int) -> None:
        self.kernel = kernel
        self.period_s = period_s
        self.samples: deque[Sample] = deque(maxlen=size)
        self._last: _Totals | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Sample in the background from now on (idempotent)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="organelle-dashboard-history"
            )

    async def close(self) -> None:
        """Stop sampling; what was taken stays readable."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def view(self) -> HistoryView:
        """The ring as it is now."""
        return HistoryView(
            period_s=self.period_s, size=self.samples.maxlen or 0, samples=list(self.samples)
        )

    async def _run(self) -> None:
        while True:
            try:
                self.samples.append(await self.sample())
            except Exception:  # a bad read costs one point, never the sampler
                log.debug("dashboard sample failed", exc_info=True)
            await asyncio.sleep(self.period_s)

    async def sample(self) -> Sample:
        """Read the kernel now and append nothing (``_run`` appends)."""
        now = time.time()
        rate, errors, p50, p99 = self._calls(now)
        return Sample(
            t=round(now, 3),
            rpc_rate=rate,
            error_rate=errors,
            p50_ms=p50,
            p99_ms=p99,
            queue_depth=await _quietly(self._depth()),
            stream_lag=await _quietly(self._lag()),
        )

    def _calls(self, now: float) -> tuple[float | None, float | None, float | None, float | None]:
        table = self.kernel.call_stats or {}
        calls = sum(s.calls for s in table.values())
        errors = sum(sum(s.errors.values()) for s in table.values())
        bounds: tuple[float, ...] = ()
        counts: list[int] = []
        for stats in table.values():  # every method has the same buckets: add them up
            bounds = tuple(stats.bounds)
            if len(counts) < len(stats.counts):
                counts += [0] * (len(stats.counts) - len(counts))
            for i, n in enumerate(stats.counts):
                counts[i] += n
        last, self._last = self._last, _Totals(now, calls, errors, counts)
        if last is None or now <= last.t:
            return None, None, None, None
        dt = now - last.t
        grown = [c - (last.counts[i] if i < len(last.counts) else 0) for i, c in enumerate(counts)]
        p50 = quantile(0.5, bounds, grown) if bounds else None
        p99 = quantile(0.99, bounds, grown) if bounds else None
        return (
            round(max(calls - last.calls, 0) / dt, 3),
            round(max(errors - last.errors, 0) / dt, 3),
            None if p50 is None else round(p50 * 1000, 3),
            None if p99 is None else round(p99 * 1000, 3),
        )

    async def _depth(self) -> int | None:
        try:
            queue = self.kernel.jobs.queue
        except ConfigError:
            return None
        async with asyncio.timeout(READ_TIMEOUT_S):
            return sum(int(n) for n in (await queue.backlog()).values())

    async def _lag(self) -> int | None:
        streams = sorted({c.stream for c in self.kernel.consumers()})
        if not streams:
            return None
        log_ = self.kernel.streams
        total = 0
        async with asyncio.timeout(READ_TIMEOUT_S):
            for stream in streams:
                info = await log_.info(stream)
                total += sum(g.lag for g in info.groups)
        return total


async def _quietly(read: Coroutine[Any, Any, int | None]) -> int | None:
    """A read that failed or timed out is a gap in its chart, not a lost sample."""
    try:
        return await read
    except Exception:  # the log or queue is away: show the gap
        log.debug("dashboard read failed", exc_info=True)
        return None
