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

from organelle._dispatch import CallNext, Invocation
from organelle.errors import OrganelleError
from organelle.observability._collect import MetricsCollector
from organelle.observability.hooks import hooks_for

if TYPE_CHECKING:
    from organelle.kernel import Kernel
    from organelle.storage import Store

__all__ = ["CONTENT_TYPE", "DEFAULT_BUCKETS", "Histogram", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
)  # fmt: skip
_UNROUTED = "(unrouted)"
_MAX_TOPICS = 4096
_perf = time.perf_counter


def _other_code(exc: BaseException) -> str:
    # Non-organelle exceptions reach callers as InternalError; cancellation is not an error code.
    return "organelle.internal" if isinstance(exc, Exception) else "cancelled"


class Histogram:
    """Bucket counts and a sum, no lock: updated from the event loop's thread only."""

    __slots__ = ("counts", "sum")

    def __init__(self, size: int) -> None:
        self.counts = [0] * (size + 1)  # the last slot is +Inf
        self.sum = 0.0

    def cumulative(self, bounds: tuple[float, ...]) -> list[tuple[str, float]]:
        """Prometheus buckets: ``(le, observations <= le)``."""
        out: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*map(repr, bounds), "+Inf"), self.counts, strict=True):
            total += count
            out.append((bound, total))
        return out


class Metrics:
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
        self.kernel = kernel
        self.bounds = tuple(sorted(buckets))
        self.rpc: dict[str, Histogram] = {}
        self.rpc_errors: dict[tuple[str, str], int] = {}
        self.emitted: dict[str, int] = {}
        self.storage: dict[str, Histogram] = {}
        self.storage_errors: dict[str, int] = {}
        self.jobs: dict[tuple[str, str], int] = {}
        self.job_durations: dict[str, Histogram] = {}
        self.queue_depth: dict[str, int] = {}
        self.transport = {"disconnects": 0, "reconnects": 0}
        self._labels: dict[str, str] = {}
        self.registry = registry or CollectorRegistry(auto_describe=False)
        self.registry.register(MetricsCollector(self))

    def install(self) -> None:
        """Hook into the kernel: dispatch middleware, event tap, storage wrapper, job hooks."""
        from organelle.observability._store import TimedStore

        kernel = self.kernel
        # The kernel counts RPC itself (one increment for a call that does not
        # suspend); timing middleware would take every call off the inline path.
        kernel.enable_call_stats(self.bounds)
        kernel.tap(">", _Tap(self))
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

    def observe(self, table: dict[str, Histogram], label: str, seconds: float) -> None:
        """Add one observation to a histogram table (storage ops, job runs)."""
        hist = table.get(label)
        if hist is None:
            hist = table[label] = Histogram(len(self.bounds))
        hist.counts[bisect_left(self.bounds, seconds)] += 1
        hist.sum += seconds

    def topic_label(self, topic: str) -> str:
        """The bounded label of a topic: the subscription pattern it routes to."""
        label = self._labels.get(topic)
        if label is None:
            patterns = sorted({s.pattern for s in self.kernel._bus.route(topic)})
            label = patterns[0] if patterns else _UNROUTED
            if len(self._labels) >= _MAX_TOPICS:
                self._labels.clear()
            self._labels[topic] = label
        return label

    def sync_rpc(self) -> None:
        """Copy the kernel's RPC counters into the histogram tables (at scrape time)."""
        for target, st in (self.kernel.call_stats or {}).items():
            hist = self.rpc.get(target)
            if hist is None:
                hist = self.rpc[target] = Histogram(len(self.bounds))
            hist.counts = list(st.counts)
            # Calls that finished without suspending took ~1 µs: the first bucket.
            hist.counts[0] += st.calls - sum(st.counts) - st.pending
            hist.sum = st.sum
            for code, count in st.errors.items():
                self.rpc_errors[target, code] = count

    # export ----------------------------------------------------------------------
    async def refresh(self) -> None:
        """Sample what needs an await (job queue depths) before a scrape."""
        probe = hooks_for(self.kernel).backlog
        if probe is not None:
            self.queue_depth = dict(await probe())

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


class _Tap(list[tuple[str, Any]]):
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
