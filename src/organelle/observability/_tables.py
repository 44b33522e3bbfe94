"""The accumulators behind ``Metrics``: plain ints and sums, read at scrape time.

Kept apart from the wiring (``metrics.py``) so the Prometheus collector and the
timed store type against the tables, not against the object that installs them.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

if TYPE_CHECKING:
    from organelle.kernel import Kernel

__all__ = ["DEFAULT_BUCKETS", "Histogram", "Tables"]

DEFAULT_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
)  # fmt: skip
_UNROUTED = "(unrouted)"
_MAX_TOPICS = 4096


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


class Tables:
    """The metric accumulators of one kernel."""

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
        self.stream_lag: dict[tuple[str, str], int] = {}
        self.transport = {"disconnects": 0, "reconnects": 0}
        self._labels: dict[str, str] = {}
        self.registry = registry or CollectorRegistry(auto_describe=False)

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
