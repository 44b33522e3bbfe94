"""Turning the accumulators and the kernel's own counters into metric families at scrape time."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from organelle.kernel._states import ModuleState

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from organelle.observability._tables import Histogram, Tables

__all__ = ["MetricsCollector"]


class MetricsCollector(Collector):
    """Builds metric families from the accumulators and the kernel's own counters."""

    def __init__(self, metrics: Tables) -> None:
        self.m = metrics

    def describe(self) -> list[Metric]:
        return []

    def _streams(self) -> Iterator[Metric]:
        """This node's ``@consume`` members: records by outcome, and records in flight."""
        members = self.m.kernel.consumers()
        outcomes = CounterMetricFamily(
            "organelle_stream_records",
            "Stream records this node's consumer group members handled, by outcome.",
            labels=["stream", "group", "outcome"],
        )
        running = GaugeMetricFamily(
            "organelle_stream_in_flight",
            "Stream records being handled now.",
            labels=["stream", "group"],
        )
        totals: dict[tuple[str, str, str], int] = {}
        flight: dict[tuple[str, str], int] = {}
        for s in members:
            for outcome in ("done", "failed", "dead", "lost", "duplicates"):
                key = (s.stream, s.group, outcome)
                totals[key] = totals.get(key, 0) + getattr(s, outcome)
            flight[(s.stream, s.group)] = flight.get((s.stream, s.group), 0) + s.in_flight
        for labels, value in sorted(totals.items()):
            outcomes.add_metric(list(labels), float(value))
        for labels2, value in sorted(flight.items()):
            running.add_metric(list(labels2), float(value))
        yield outcomes
        yield running
        # Sampled by Metrics.refresh; what KEDA's stream-lag trigger reads (docs/deploy.md).
        lag = GaugeMetricFamily(
            "organelle_stream_lag",
            "Records a consumer group has yet to handle (all partitions).",
            labels=["stream", "group"],
        )
        for labels3, behind in sorted(self.m.stream_lag.items()):
            lag.add_metric(list(labels3), float(behind))
        yield lag

    def collect(self) -> Iterator[Metric]:
        m = self.m
        yield from self._rpc()
        yield from self._events()
        states = GaugeMetricFamily(
            "organelle_module_state",
            "1 for the state each module is in.",
            labels=["module", "state"],
        )
        for name, info in m.kernel.modules().items():
            for state in ModuleState:
                states.add_metric([name, state.value], 1.0 if info.state is state else 0.0)
        yield states
        yield self._hist(
            "organelle_storage_op_duration_seconds", "Store operation latency.", "op", m.storage
        )
        yield self._counter(
            "organelle_storage_errors_total",
            "Store operations that raised.",
            ["op"],
            (((k,), v) for k, v in m.storage_errors.items()),
        )
        yield self._counter(
            "organelle_events_rejected_total",
            "Incoming events dropped by the transport, by reason (unsigned, bad_signature, …).",
            ["reason"],
            (((k,), v) for k, v in sorted(m.kernel.transport.rejected.items())),
        )
        for event in ("disconnects", "reconnects"):
            yield CounterMetricFamily(
                f"organelle_transport_{event}_total",
                f"Transport {event}.",
                value=m.transport[event],
            )
        yield self._counter(
            "organelle_jobs_total", "Job events by outcome.", ["job", "event"], m.jobs.items()
        )
        yield from self._streams()
        yield from self._policies()
        yield from self._routing()
        yield self._hist("organelle_job_duration_seconds", "Job run time.", "job", m.job_durations)
        depth = GaugeMetricFamily("organelle_job_queue_depth", "Jobs waiting.", labels=["queue"])
        for queue, value in m.queue_depth.items():
            depth.add_metric([queue], value)
        yield depth

    def _policies(self) -> Iterator[Metric]:
        """Call policies: breaker states and transitions, retries, refusals, fallbacks."""
        snap = self.m.kernel.policy_stats()
        state = GaugeMetricFamily(
            "organelle_breaker_state",
            "1 for the state each circuit breaker is in (key: target, module or target@node).",
            labels=["breaker", "state"],
        )
        changes = CounterMetricFamily(
            "organelle_breaker_transitions",
            "Circuit breaker state changes, by the state entered.",
            labels=["breaker", "state"],
        )
        for key, b in sorted(snap["breakers"].items()):
            for name in ("closed", "open", "half_open"):
                state.add_metric([key, name], 1.0 if b["state"] == name else 0.0)
                changes.add_metric([key, name], b["changes"][name])
        yield state
        yield changes
        for what, doc in (
            ("retries", "Calls retried by a policy."),
            ("retries_denied", "Retries a retry budget refused."),
            ("bulkhead_rejected", "Calls a bulkhead refused (full)."),
            ("rate_limited", "Calls a per-caller rate limit refused."),
            ("fallbacks", "Calls answered by a fallback."),
        ):
            yield self._counter(
                f"organelle_policy_{what}_total",
                doc,
                ["target"],
                (((k,), v) for k, v in sorted(snap[what].items())),
            )

    def _rpc(self) -> Iterator[Metric]:
        m = self.m
        m.sync_rpc()
        calls = CounterMetricFamily(
            "organelle_rpc_calls_total", "RPC calls served.", labels=["method"]
        )
        for method, hist in m.rpc.items():
            calls.add_metric([method], sum(hist.counts))
        yield calls
        yield self._counter(
            "organelle_rpc_errors_total",
            "RPC calls that raised, by error code.",
            ["method", "code"],
            m.rpc_errors.items(),
        )
        yield self._hist("organelle_rpc_duration_seconds", "RPC latency.", "method", m.rpc)

    def _routing(self) -> Iterator[Metric]:
        """Calls routed by ``[routing]`` tables: each version as primary or mirror (shadow)."""
        labels = ["module", "version", "role"]
        calls = CounterMetricFamily(
            "organelle_routing_calls", "Calls routed by version and role.", labels=labels
        )
        errors = CounterMetricFamily(
            "organelle_routing_errors",
            "Routed calls that raised, by version, role and error code.",
            labels=[*labels, "code"],
        )
        dropped = CounterMetricFamily(
            "organelle_routing_mirror_dropped",
            "Shadow copies not sent: max_in_flight were running.",
            labels=labels,
        )
        latency = GaugeMetricFamily(
            "organelle_routing_latency_seconds",
            "Latency of the last routed calls (p50, p99) by version and role.",
            labels=[*labels, "quantile"],
        )
        for s in self.m.kernel.routing_stats():
            key = [s.module, s.version, s.role]
            calls.add_metric(key, s.calls)
            for code, count in sorted(s.errors.items()):
                errors.add_metric([*key, code], count)
            if s.role == "mirror":
                dropped.add_metric(key, s.dropped)
            for q, value in (("0.5", s.p50_s), ("0.99", s.p99_s)):
                if value is not None:
                    latency.add_metric([*key, q], value)
        yield calls
        yield errors
        yield dropped
        yield latency

    def _events(self) -> Iterator[Metric]:
        m = self.m
        yield self._counter(
            "organelle_events_emitted_total",
            "Events emitted, by the subscription pattern they route to.",
            ["pattern"],
            (((k,), v) for k, v in m.emitted.items()),
        )
        deliveries = CounterMetricFamily(
            "organelle_event_deliveries_total",
            "Event deliveries by subscription and outcome.",
            labels=["module", "handler", "pattern", "outcome"],
        )
        for s in m.kernel.subscriptions():
            for outcome, value in (
                ("handled", s.delivered),
                ("failed", s.failed),
                ("skipped", s.skipped),
                ("duplicate", s.duplicates),
            ):
                deliveries.add_metric([s.module, s.handler, s.pattern, outcome], value)
        yield deliveries
        yield GaugeMetricFamily(
            "organelle_events_pending",
            "Events queued or being handled.",
            value=m.kernel._bus.pending,
        )

    def _counter(
        self, name: str, doc: str, labels: list[str], values: Iterable[tuple[Sequence[str], int]]
    ) -> Metric:
        family = CounterMetricFamily(name, doc, labels=labels)
        for key, value in values:
            family.add_metric(list(key), value)
        return family

    def _hist(self, name: str, doc: str, label: str, table: Mapping[str, Histogram]) -> Metric:
        family = HistogramMetricFamily(name, doc, labels=[label])
        for key, hist in table.items():
            family.add_metric([key], hist.cumulative(self.m.bounds), hist.sum)
        return family
