"""Forecasts: a trend met early, a seasonal peak met before it starts."""

from __future__ import annotations

import pytest

from organelle.errors import ConfigError
from organelle.scaling import SeasonalForecast, TrendForecast


def test_trend_follows_a_steady_rise() -> None:
    model = TrendForecast(alpha=0.5, beta=0.5)
    assert model.predict(0) is None
    for t in range(0, 600, 15):
        model.observe(t, 10.0 * t)  # +10 per second
    predicted = model.predict(585 + 60)
    assert predicted is not None
    assert predicted == pytest.approx(10.0 * 645, rel=0.02)


def test_trend_never_predicts_below_zero() -> None:
    model = TrendForecast()
    for t, v in ((0, 100.0), (10, 50.0), (20, 0.0)):
        model.observe(t, v)
    assert model.predict(1000) == 0.0


def test_seasonal_predicts_the_same_phase_shifted_by_todays_level() -> None:
    model = SeasonalForecast(period_s=100, bucket_s=10)
    for t in range(100):  # period 0: 0 until 50, then 100
        model.observe(t, 100.0 if t >= 50 else 0.0)
    assert model.predict(140) is None  # "now" (period 0) has no earlier period to compare with
    for t in range(100, 140):  # period 1 runs 5 higher
        model.observe(t, 5.0)
    assert model.predict(139 + 20) == pytest.approx(105.0)  # phase 50-59: the peak, +5
    assert model.predict(139 + 5) == pytest.approx(5.0)


def test_seasonal_knows_nothing_in_its_first_period() -> None:
    model = SeasonalForecast(period_s=100, bucket_s=10)
    for t in range(50):
        model.observe(t, 1.0)
    assert model.predict(60) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"period_s": 0, "bucket_s": 1},
        {"period_s": 10, "bucket_s": 20},
        {"period_s": 10, "bucket_s": 1, "periods": 0},
    ],
)
def test_seasonal_rejects_bad_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        SeasonalForecast(**kwargs)  # type: ignore[arg-type]


def test_trend_rejects_bad_settings() -> None:
    with pytest.raises(ConfigError):
        TrendForecast(alpha=0)
