"""Prometheus metrics: lean accumulators on the hot path, exported at scrape time.

prometheus-client's ``Histogram.observe`` takes a lock and walks label
children on every call; on a local RPC of a couple of microseconds that is
most of the cost. So the middleware only bumps plain ints in a per-method
slot (one ``bisect`` for the bucket), and a custom ``Collector`` turns the
slots into metric families when ``/metrics`` is scraped (bench/metrics_overhead.py
measures both ways). Each kernel gets its own ``CollectorRegistry``, never the
global default, so two kernels in one process never mix.

Labels are bounded by construction: RPC methods are the registered
``module.method`` names, events are labelled by subscription pattern (not by
raw topic), errors by their stable ``code``, storage by operation name, jobs
by ``module.function``. No id ever becomes a label.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest

from organelle.errors import OrganelleError
from organelle.kernel._dispatch import CallNext, Invocation
from organelle.observability._collect import MetricsCollector
from organelle.observability._tables import DEFAULT_BUCKETS, Histogram, Tables
from organelle.observability.hooks import hooks_for

if TYPE_CHECKING:
    from organelle.kernel import Kernel
    from organelle.storage import Store

__all__ = ["CONTENT_TYPE", "DEFAULT_BUCKETS", "Histogram", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_perf = time.perf_counter


def _other_code(exc: BaseException) -> str:
    # Non-organelle exceptions reach callers as InternalError; cancellation is not an error code.
    return "organelle.internal" if isinstance(exc, Exception) else "cancelled"


class Metrics(Tables):
    """The metrics of one kernel.

    ``install()`` adds the middleware, a kernel-event tap and the storage and
    jobs/transport hooks; ``render()`` returns the Prometheus text format.

    Example::

        metrics = Metrics(kernel)
        metrics.install()            # before kernel.start()
        text = metrics.render()
    """

    def __init__(
        self,
        kernel: Kernel,
        *,
        buckets: tuple[float, ...] = DEFAULT_BUCKETS,
        registry: CollectorRegistry | None = None,
    ) -> None:
        super().__init__(kernel, buckets=buckets, registry=registry)
        self.registry.register(MetricsCollector(self))

    def install(self) -> None:
        """Hook into the kernel: dispatch middleware, event tap, storage wrapper, job hooks."""
        from organelle.observability._store import TimedStore

        kernel = self.kernel
        # The kernel counts RPC itself (one increment for a call that does not
        # suspend); timing middleware would take every call off the inline path.
        kernel.enable_call_stats(self.bounds)
        kernel.tap(">", _EmitCounter(self))
        hooks = hooks_for(kernel)
        hooks.jobs = _JobEvents(self)
        hooks.transport = _TransportEvents(self)

        def wrap(store: Store) -> Store:
            return TimedStore(store, self)

        kernel.wrap_store = wrap

    # middleware: the only per-call cost -------------------------------------------
    def __call__(self, inv: Invocation, call_next: CallNext, /) -> Awaitable[Any]:
        """Time RPC calls; event deliveries pass straight through (counted by the bus)."""
        if inv.kind == "rpc":
            return self._timed(inv, call_next)
        return call_next(inv)

    async def _timed(self, inv: Invocation, call_next: CallNext) -> Any:
        started = _perf()
        try:
            return await call_next(inv)
        except BaseException as exc:
            code = exc.code if isinstance(exc, OrganelleError) else _other_code(exc)
            key = (inv.target, code)
            self.rpc_errors[key] = self.rpc_errors.get(key, 0) + 1
            raise
        finally:
            elapsed = _perf() - started
            hist = self.rpc.get(inv.target)
            if hist is None:
                hist = self.rpc[inv.target] = Histogram(len(self.bounds))
            hist.counts[bisect_left(self.bounds, elapsed)] += 1
            hist.sum += elapsed

    # export ----------------------------------------------------------------------
    async def refresh(self) -> None:
        """Sample what needs an await (job queue depths) before a scrape."""
        probe = hooks_for(self.kernel).backlog
        if probe is not None:
            self.queue_depth = dict(await probe())

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


class _EmitCounter(list[tuple[str, Any]]):
    """A kernel tap that counts emits by pattern instead of recording them."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.metrics = metrics

    def append(self, item: tuple[str, Any]) -> None:
        topic = item[0]
        if topic.startswith("kernel."):
            return  # lifecycle and config events: module states are read at scrape time
        label = self.metrics.topic_label(topic)
        emitted = self.metrics.emitted
        emitted[label] = emitted.get(label, 0) + 1


class _JobEvents:
    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def _bump(self, job: str, event: str) -> None:
        self.m.jobs[job, event] = self.m.jobs.get((job, event), 0) + 1

    def enqueued(self, job: str) -> None:
        self._bump(job, "enqueued")

    def succeeded(self, job: str, duration_s: float) -> None:
        self._bump(job, "succeeded")
        self.m.observe(self.m.job_durations, job, duration_s)

    def failed(self, job: str, duration_s: float) -> None:
        self._bump(job, "failed")
        self.m.observe(self.m.job_durations, job, duration_s)

    def retried(self, job: str) -> None:
        self._bump(job, "retried")

    def dead(self, job: str) -> None:
        self._bump(job, "dead")


class _TransportEvents:
    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def disconnected(self) -> None:
        self.m.transport["disconnects"] += 1

    def reconnected(self) -> None:
        self.m.transport["reconnects"] += 1
