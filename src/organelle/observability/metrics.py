"""Prometheus metrics: a kernel listener keeping lean accumulators, exported at scrape time.

prometheus-client's ``Histogram.observe`` takes a lock and walks label
children on every call; on a local RPC of a couple of microseconds that is
most of the cost. So nothing is observed per call: the listener asks the
kernel for its lean per-method call counters (``call_buckets``: one
increment for a call that does not suspend), counts emits, jobs, store
operations and reconnects in plain dicts, and a custom ``Collector`` turns
all of it into metric families when ``/metrics`` is scraped
(bench/metrics_overhead.py measures it). Each kernel gets its own
``CollectorRegistry``, never the global default, so two kernels in one
process never mix.

Labels are bounded by construction: RPC methods are the registered
``module.method`` names, events are labelled by subscription pattern (not by
raw topic), errors by their stable ``code``, storage by operation name, jobs
by ``module.function``. No id ever becomes a label.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

from organelle.errors import ConfigError
from organelle.kernel import BaseListener
from organelle.observability._collect import MetricsCollector
from organelle.observability._tables import DEFAULT_BUCKETS, Histogram, Tables

if TYPE_CHECKING:
    from organelle.kernel import (
        ConnectionReport,
        EventReport,
        JobReport,
        Kernel,
        StoreReport,
    )

__all__ = ["CONTENT_TYPE", "DEFAULT_BUCKETS", "Histogram", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics(Tables, BaseListener):
    """The metrics of one kernel: a listener; ``render()`` returns the Prometheus text format.

    Example::

        metrics = Metrics(kernel)
        metrics.install()            # kernel.listen(metrics); before kernel.start()
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
        # The kernel counts RPC itself (one increment for a call that does not
        # suspend); on_call would take every call off the inline path.
        self.call_buckets: tuple[float, ...] | None = self.bounds
        self.registry.register(MetricsCollector(self))
        # process_cpu_seconds_total and memory: the scaling controller's CPU signal.
        if registry is None:
            ProcessCollector(registry=self.registry)

    def install(self) -> None:
        """Start listening to the kernel (``uninstall()`` stops)."""
        self.kernel.listen(self)

    def uninstall(self) -> None:
        """Stop listening; what was counted so far stays readable."""
        self.kernel.unlisten(self)

    # the listener -------------------------------------------------------------------
    def on_event(self, event: EventReport, /) -> None:
        """Count emits by the subscription pattern they route to (deliveries: bus counters)."""
        label = self.topic_label(event.topic)
        self.emitted[label] = self.emitted.get(label, 0) + 1

    def on_job(self, job: JobReport, /) -> None:
        """Count job events by job name; time attempts."""
        key = (job.job, job.stage)
        self.jobs[key] = self.jobs.get(key, 0) + 1
        if job.duration_s is not None:
            self.observe(self.job_durations, job.job, job.duration_s)

    def on_store(self, op: StoreReport, /) -> None:
        """Time Store operations by name; count the ones that raised."""
        if op.error is not None:
            self.storage_errors[op.op] = self.storage_errors.get(op.op, 0) + 1
        self.observe(self.storage, op.op, op.duration_s)

    def on_connection(self, change: ConnectionReport, /) -> None:
        """Count the transport's disconnects and reconnects."""
        key = "disconnects" if change.state == "disconnected" else "reconnects"
        self.transport[key] += 1

    # export ----------------------------------------------------------------------
    async def refresh(self) -> None:
        """Sample what needs an await (job queue depths, stream lag) before a scrape."""
        self.stream_lag = await self._stream_lag()
        try:
            jobs = self.kernel.jobs
        except ConfigError:  # no job queue on this node (or not started)
            return
        self.queue_depth = await jobs.backlog()

    async def _stream_lag(self) -> dict[tuple[str, str], int]:
        """Records each of this node's consumer groups has yet to handle, all partitions."""
        wanted = {(s.stream, s.group) for s in self.kernel.consumers()}
        if not wanted:
            return {}
        lag: dict[tuple[str, str], int] = dict.fromkeys(wanted, 0)
        for stream in sorted({s for s, _ in wanted}):
            info = await self.kernel.streams.info(stream)
            for g in info.groups:
                if (stream, g.group) in lag:
                    lag[(stream, g.group)] += g.lag
        return lag

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)
