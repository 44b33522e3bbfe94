"""One scaled target: where its load is read, its rules and its forecasts, put together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from organelle.errors import ConfigError
from organelle.scaling._forecast import Forecaster, SeasonalForecast, TrendForecast
from organelle.scaling._onnx import OnnxForecast
from organelle.scaling._rules import Decision, Metric, Rules, ScalingPolicy, ScalingRule, Signals

__all__ = ["ForecastSpec", "Source", "Target"]


class Source(Protocol):
    """Where a target's load is read (``OpsMetrics``, or a recorded trace)."""

    async def sample(self, at: float) -> Signals:
        """One sample of the signals at ``at``."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ForecastSpec:
    """Which model forecasts which signals, how far ahead.

    Attributes:
        model: ``trend`` (Holt), ``seasonal`` (same phase of earlier periods) or
            ``onnx`` (a trained model's file, run with onnxruntime; see ``OnnxForecast``).
        horizon_s: how far ahead the rules look (about a replica's start-up time).
        metrics: the signals forecast.
        period_s: the seasonal model's period.
        bucket_s: the seasonal model's phase resolution.
        path: the onnx model's file.
        window: the samples the onnx model takes.
        step_s: the spacing of those samples.
    """

    model: Literal["trend", "seasonal", "onnx"] = "trend"
    horizon_s: float = 60.0
    metrics: tuple[Metric, ...] = ("queue_depth", "stream_lag")
    period_s: float = 86_400.0
    bucket_s: float = 300.0
    path: str = ""
    window: int = 12
    step_s: float = 15.0

    def build(self) -> Forecaster:
        """A fresh model.

        Raises:
            ConfigError: an onnx model without a path, or one that cannot be loaded.
        """
        if self.model == "onnx":
            if not self.path:
                raise ConfigError("forecast: model 'onnx' needs a path to the .onnx file")
            return OnnxForecast(self.path, window=self.window, step_s=self.step_s)
        if self.model == "seasonal":
            return SeasonalForecast(period_s=self.period_s, bucket_s=self.bucket_s)
        return TrendForecast()


class Target:
    """Rules, forecasts and a source for one Deployment (or whatever the scaler names)."""

    def __init__(
        self,
        name: str,
        rules: list[ScalingRule],
        *,
        policy: ScalingPolicy | None = None,
        source: Source | None = None,
        forecast: ForecastSpec | None = None,
    ) -> None:
        self.name = name
        self.rules = Rules(name, rules, policy)
        self.source = source
        self.forecast = forecast
        self._models = {m: forecast.build() for m in forecast.metrics} if forecast else {}
        self._horizon_s = forecast.horizon_s if forecast else 0.0

    def plan(self, signals: Signals, current: int) -> Decision:
        """Feed the forecasts, then decide with the signals now and ``horizon_s`` ahead."""
        ahead: dict[str, float] = {}
        for metric, model in self._models.items():
            value = signals.get(metric)
            if value is not None:
                model.observe(signals.at, value)
            predicted = model.predict(signals.at + self._horizon_s)
            if predicted is not None:
                ahead[metric] = predicted
        forecast = Signals(at=signals.at, **ahead) if ahead else None
        return self.rules.decide(signals, current, forecast=forecast)
