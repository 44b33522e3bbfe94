"""Forecasts of a signal a little ahead, so capacity is added before the load arrives.

Two small models, both fed every sample and asked for the value ``horizon_s``
ahead (about the time a new replica takes to become ready):

* ``TrendForecast`` — Holt's linear trend (double exponential smoothing) on
  irregularly spaced samples: a rise that keeps rising is met early.
* ``SeasonalForecast`` — seasonal naive with a level correction: the value
  seen at the same phase of earlier periods (a day, say), shifted by how far
  today runs above or below those periods now. A daily peak is met before it
  starts, once one period has been seen.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from organelle.errors import ConfigError

__all__ = ["Forecaster", "SeasonalForecast", "TrendForecast"]


class Forecaster(Protocol):
    """Learns from samples of one signal and predicts it."""

    def observe(self, at: float, value: float) -> None:
        """Take the sample ``value`` taken at ``at`` (seconds, increasing)."""
        ...

    def predict(self, at: float) -> float | None:
        """The expected value at ``at``, or ``None`` while it knows too little."""
        ...


class TrendForecast:
    """Holt's linear trend: a smoothed level and a smoothed slope per second."""

    def __init__(self, *, alpha: float = 0.5, beta: float = 0.3) -> None:
        if not (0 < alpha <= 1 and 0 < beta <= 1):
            raise ConfigError("trend forecast: alpha and beta must be in (0, 1]")
        self.alpha = alpha
        self.beta = beta
        self._level: float | None = None
        self._slope = 0.0
        self._at = 0.0
        self._seen = 0

    def observe(self, at: float, value: float) -> None:
        """Update the level and the slope with one sample."""
        self._seen += 1
        if self._level is None:
            self._level, self._at = value, at
            return
        dt = at - self._at
        if dt <= 0:
            return
        expected = self._level + self._slope * dt
        level = self.alpha * value + (1 - self.alpha) * expected
        self._slope = self.beta * (level - self._level) / dt + (1 - self.beta) * self._slope
        self._level, self._at = level, at

    def predict(self, at: float) -> float | None:
        """Level plus slope times the time ahead; never below zero."""
        if self._level is None or self._seen < 2:  # noqa: PLR2004 - a slope needs two samples
            return None
        return max(0.0, self._level + self._slope * (at - self._at))


class SeasonalForecast:
    """The same phase of earlier periods, shifted by today's level.

    Args:
        period_s: the season's length (86 400 for a daily cycle).
        bucket_s: the phase resolution (samples in one bucket are averaged).
        periods: how many earlier periods are remembered.
    """

    def __init__(self, *, period_s: float, bucket_s: float, periods: int = 3) -> None:
        if period_s <= 0 or not 0 < bucket_s <= period_s or periods < 1:
            raise ConfigError("seasonal forecast: need 0 < bucket_s <= period_s and periods >= 1")
        self.period_s = period_s
        self.bucket_s = bucket_s
        # (period index, phase bucket) -> (sum, count), oldest periods dropped.
        self._cells: dict[tuple[int, int], tuple[float, int]] = {}
        self._periods: deque[int] = deque(maxlen=periods + 1)
        self._last: tuple[float, float] | None = None

    def _where(self, at: float) -> tuple[int, int]:
        return int(at // self.period_s), int((at % self.period_s) // self.bucket_s)

    def observe(self, at: float, value: float) -> None:
        """Add the sample to its period's phase bucket."""
        period, phase = self._where(at)
        if not self._periods or self._periods[-1] != period:
            self._periods.append(period)
            kept = set(self._periods)
            self._cells = {k: v for k, v in self._cells.items() if k[0] in kept}
        total, count = self._cells.get((period, phase), (0.0, 0))
        self._cells[(period, phase)] = (total + value, count + 1)
        self._last = (at, value)

    def _past(self, period: int, phase: int) -> float | None:
        seen = [
            total / count
            for (p, ph), (total, count) in self._cells.items()
            if ph == phase and p < period
        ]
        return sum(seen) / len(seen) if seen else None

    def predict(self, at: float) -> float | None:
        """Earlier periods at ``at``'s phase, plus (now - earlier periods at now's phase)."""
        if self._last is None:
            return None
        period, phase = self._where(at)
        ahead = self._past(period, phase)
        now_period, now_phase = self._where(self._last[0])
        then = self._past(now_period, now_phase)
        if ahead is None or then is None:
            return None
        return max(0.0, ahead + (self._last[1] - then))
