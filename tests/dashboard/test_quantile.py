"""Percentile estimates from histogram buckets, as Prometheus' histogram_quantile computes them."""

from __future__ import annotations

import pytest

from organelle.dashboard._quantile import quantile
from organelle.kernel._routes import CallStats

BOUNDS = (0.001, 0.01, 0.1)


def test_no_samples_no_estimate() -> None:
    assert quantile(0.5, BOUNDS, [0, 0, 0, 0]) is None
    assert quantile(0.5, (), [3]) is None


def test_linear_within_the_bucket_holding_the_rank() -> None:
    # 10 samples in (1ms, 10ms]: the median is halfway through that bucket.
    assert quantile(0.5, BOUNDS, [0, 10, 0, 0]) == pytest.approx(0.0055)
    # 50 below 1ms, 50 in (10ms, 100ms]: p50 is the top of the first, p99 near the top.
    assert quantile(0.5, BOUNDS, [50, 0, 50, 0]) == pytest.approx(0.001)
    assert quantile(0.99, BOUNDS, [50, 0, 50, 0]) == pytest.approx(0.01 + 0.09 * 49 / 50)
    assert quantile(0.0, BOUNDS, [0, 4, 0, 0]) == pytest.approx(0.001)
    assert quantile(1.0, BOUNDS, [0, 4, 0, 0]) == pytest.approx(0.01)


def test_the_open_bucket_answers_with_the_largest_bound() -> None:
    assert quantile(0.99, BOUNDS, [1, 0, 0, 99]) == 0.1
    assert quantile(2.0, BOUNDS, [1, 0, 0, 0]) == pytest.approx(0.001)  # q clamped to 1


def test_agrees_with_the_kernel_s_own_bucketing() -> None:
    stats = CallStats(BOUNDS)
    for seconds in (0.002, 0.003, 0.004, 0.05):
        stats.timed(seconds)
    p50 = quantile(0.5, stats.bounds, stats.counts)
    assert p50 is not None
    assert 0.001 < p50 <= 0.01
    assert quantile(0.99, stats.bounds, stats.counts) == pytest.approx(0.01 + 0.09 * 0.96)
