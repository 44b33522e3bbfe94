"""Reading a target's load from its nodes' ``/metrics``: queue depth, stream lag, RPC p99, CPU.

Each node's ops server (``[kernel] ops_port``) serves organelle's metrics in
the Prometheus text format; ``OpsMetrics`` fetches them all, then:

* queue depth and stream lag are shared figures every node reports alike, so
  the ``max`` across nodes is taken per queue or consumer group, then summed;
* RPC p99 comes from the ``organelle_rpc_duration_seconds`` buckets added up
  across nodes, taken as the increase since the previous sample and
  interpolated within the bucket as Prometheus' ``histogram_quantile`` does;
* CPU is the increase of ``process_cpu_seconds_total`` per second, per node,
  as a fraction of ``cpu_cores``.

A node that does not answer is left out of that sample. Needs the ``ops``
extra (prometheus-client parses the text).
"""

from __future__ import annotations

import asyncio
import math
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from organelle.scaling._rules import Signals

__all__ = ["OpsMetrics", "quantile"]

QUEUE = "organelle_job_queue_depth"
LAG = "organelle_stream_lag"
RPC = "organelle_rpc_duration_seconds"
CPU = "process_cpu_seconds_total"


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of cumulative ``(upper bound, count)`` buckets, ``+Inf`` last.

    ``None`` when nothing was counted. Within a bucket the value is
    interpolated linearly; in the ``+Inf`` bucket it is the highest finite bound.
    """
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower


@dataclass(slots=True)
class _Node:
    cpu_s: float | None = None
    buckets: dict[float, float] = field(default_factory=dict)


@dataclass(slots=True)
class _Scrape:
    queues: dict[str, float] = field(default_factory=dict)
    lags: dict[tuple[str, str], float] = field(default_factory=dict)
    buckets: dict[float, float] = field(default_factory=dict)
    cpu_s: float | None = None


class OpsMetrics:
    """Samples one target's signals from its nodes' ``/metrics`` URLs.

    Args:
        urls: each node's ``http://host:ops_port/metrics``.
        modules: the target's modules: only their jobs (``module.job``) and
            RPC methods (``module.method``) count; empty: all.
        groups: the consumer groups whose lag counts (default: ``modules``,
            each ``@consume`` group's default name).
        cpu_cores: CPU one replica may use (its request), the 100 % of ``cpu``.
        timeout_s: per node and request.
    """

    def __init__(
        self,
        urls: Iterable[str],
        *,
        modules: Iterable[str] = (),
        groups: Iterable[str] | None = None,
        cpu_cores: float = 1.0,
        timeout_s: float = 2.0,
    ) -> None:
        self.urls = list(urls)
        self.modules = tuple(modules)
        self.groups = tuple(groups) if groups is not None else self.modules
        self.cpu_cores = cpu_cores
        self.timeout_s = timeout_s
        self._nodes: dict[str, _Node] = {}
        self._at: float | None = None

    def _mine(self, label: str) -> bool:
        return not self.modules or label.partition(".")[0] in self.modules

    async def sample(self, at: float) -> Signals:
        """One sample of every node; signals no node reported are ``None``."""
        texts = await asyncio.gather(
            *(asyncio.to_thread(_fetch, url, self.timeout_s) for url in self.urls),
            return_exceptions=True,
        )
        scraped = {
            u: self._parse(t) for u, t in zip(self.urls, texts, strict=True) if isinstance(t, str)
        }
        dt = at - self._at if self._at is not None else None
        self._at = at
        queues: dict[str, float] = {}
        lags: dict[tuple[str, str], float] = {}
        for s in scraped.values():
            for q, v in s.queues.items():
                queues[q] = max(queues.get(q, 0.0), v)
            for g, v in s.lags.items():
                lags[g] = max(lags.get(g, 0.0), v)
        return Signals(
            at=at,
            queue_depth=sum(queues.values()) if queues else None,
            stream_lag=sum(lags.values()) if lags else None,
            rpc_p99_s=self._p99(scraped),
            cpu=self._cpu(scraped, dt),
        )

    def _parse(self, text: str) -> _Scrape:
        from prometheus_client.parser import text_string_to_metric_families

        out = _Scrape()
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == QUEUE and self._mine(s.labels.get("queue", "")):
                    out.queues[s.labels["queue"]] = s.value
                elif s.name == LAG and s.labels.get("group") in self.groups:
                    out.lags[(s.labels["stream"], s.labels["group"])] = s.value
                elif s.name == f"{RPC}_bucket" and self._mine(s.labels.get("method", "")):
                    bound = float(s.labels["le"])
                    out.buckets[bound] = out.buckets.get(bound, 0.0) + s.value
                elif s.name == CPU:
                    out.cpu_s = s.value
        return out

    def _p99(self, scraped: dict[str, _Scrape]) -> float | None:
        merged: dict[float, float] = {}
        for url, s in scraped.items():
            node = self._nodes.setdefault(url, _Node())
            before, node.buckets = node.buckets, dict(s.buckets)
            reset = any(v < before.get(b, 0.0) for b, v in s.buckets.items())
            for bound, count in s.buckets.items():
                grew = count if reset else count - before.get(bound, 0.0)
                merged[bound] = merged.get(bound, 0.0) + grew
        return quantile(0.99, sorted(merged.items()))

    def _cpu(self, scraped: dict[str, _Scrape], dt: float | None) -> float | None:
        used, nodes = 0.0, 0
        for url, s in scraped.items():
            node = self._nodes.setdefault(url, _Node())
            before, node.cpu_s = node.cpu_s, s.cpu_s
            if s.cpu_s is None or before is None or dt is None or dt <= 0:
                continue
            used += max(0.0, s.cpu_s - before) / dt
            nodes += 1
        return used / nodes / self.cpu_cores if nodes else None


def _fetch(url: str, timeout_s: float) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - configured node URLs
        text: str = response.read().decode()
        return text
