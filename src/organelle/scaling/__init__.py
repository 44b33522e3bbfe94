"""Scaling: a controller module that sets replica counts from the cluster's load.

Rules (thresholds per replica, a step, cooldowns, a range) and an optional
forecast (trend or seasonal) turn queue depth, stream lag, RPC p99 and CPU —
read from the nodes' ``/metrics`` — into a replica count; a ``Scaler`` sets
it (``KubernetesScaler``: a Deployment's scale subresource). Each change is
the event ``scaling.decided``. See docs/scaling.md.
"""

from organelle.scaling._forecast import Forecaster, SeasonalForecast, TrendForecast
from organelle.scaling._onnx import OnnxForecast
from organelle.scaling._rules import Decision, Metric, Rules, ScalingPolicy, ScalingRule, Signals
from organelle.scaling._source import OpsMetrics, quantile
from organelle.scaling._target import ForecastSpec, Source, Target
from organelle.scaling.base import MemoryScaler, Scaler
from organelle.scaling.module import DECIDED, ScalingController

__all__ = [
    "DECIDED",
    "Decision",
    "ForecastSpec",
    "Forecaster",
    "MemoryScaler",
    "Metric",
    "OnnxForecast",
    "OpsMetrics",
    "Rules",
    "Scaler",
    "ScalingController",
    "ScalingPolicy",
    "ScalingRule",
    "SeasonalForecast",
    "Signals",
    "Source",
    "Target",
    "TrendForecast",
    "quantile",
]
