"""Percentiles from a bucketed histogram, estimated as Prometheus' ``histogram_quantile`` does.

The kernel keeps counts per bucket, not samples (that is what makes counting
cheap), so a percentile can only be estimated: linearly within the bucket
that holds the rank. A rank in the open-ended last bucket answers with the
largest finite bound, an honest "at least this".
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["quantile"]


def quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float | None:
    """The estimated ``q``-quantile (0..1) in seconds, or ``None`` with no samples.

    Args:
        q: which quantile, e.g. 0.99.
        bounds: the buckets' upper bounds in seconds, ascending.
        counts: samples per bucket, one more than ``bounds`` (the last is +Inf).
    """
    total = sum(counts)
    if total == 0 or not bounds:
        return None
    rank = min(max(q, 0.0), 1.0) * total
    seen = 0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            if i >= len(bounds):
                return float(bounds[-1])
            lower = float(bounds[i - 1]) if i else 0.0
            upper = float(bounds[i])
            return lower + (upper - lower) * max(rank - seen, 0.0) / count
        seen += count
    return float(bounds[-1])
