"""``ScalingController``: the module that reads the cluster's load and sets replica counts.

One instance in the cluster decides (``@leader``): every ``interval_s`` it
samples each target's nodes, lets the rules (and the forecast) decide, sets
the count through the scaler, and emits ``scaling.decided`` for each change.
The recent decisions, changes or not, are kept for ``decisions()``. See
docs/scaling.md.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any, Literal

from pydantic import BaseModel, Field

from organelle.locks import leader
from organelle.module import Module, rpc
from organelle.scaling._rules import Decision, Metric, ScalingPolicy, ScalingRule
from organelle.scaling._source import OpsMetrics
from organelle.scaling._target import ForecastSpec, Source, Target
from organelle.scaling.base import MemoryScaler, Scaler

__all__ = ["DECIDED", "ScalingController"]

DECIDED = "scaling.decided"
_FORECAST_DEFAULT: tuple[Metric, ...] = ("queue_depth", "stream_lag")


class RuleConfig(BaseModel):
    """``[[modules.scaling.targets.rules]]``."""

    metric: Metric
    up_above: float = Field(gt=0)
    down_below: float = Field(default=0.0, ge=0)


class ForecastConfig(BaseModel):
    """``[modules.scaling.targets.forecast]``."""

    model: Literal["trend", "seasonal", "onnx"] = "trend"
    horizon_s: float = Field(default=60.0, ge=0)
    metrics: list[Metric] = Field(default_factory=lambda: list(_FORECAST_DEFAULT))
    period_s: float = Field(default=86_400.0, gt=0)
    bucket_s: float = Field(default=300.0, gt=0)
    path: str = ""
    """``onnx``: the model's file (``docs/scaling.md``: its input and output)."""
    window: int = Field(default=12, ge=1)
    step_s: float = Field(default=15.0, gt=0)


class TargetConfig(BaseModel):
    """``[[modules.scaling.targets]]``: one Deployment and how it scales."""

    name: str
    metrics: list[str] = Field(default_factory=list)
    modules: list[str] = Field(default_factory=list)
    groups: list[str] | None = None
    cpu_cores: float = Field(default=1.0, gt=0)
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=10, ge=1)
    step: int = Field(default=4, ge=1)
    up_cooldown_s: float = Field(default=60.0, ge=0)
    down_cooldown_s: float = Field(default=300.0, ge=0)
    rules: list[RuleConfig] = Field(min_length=1)
    forecast: ForecastConfig | None = None


class KubernetesConfig(BaseModel):
    """``[modules.scaling.kubernetes]``: defaults are the pod's service account."""

    api: str | None = None
    namespace: str | None = None
    token_file: str | None = None
    ca_file: str | None = None


class ScalingConfig(BaseModel):
    """``[modules.scaling]``."""

    interval_s: float = Field(default=15.0, gt=0)
    scaler: Literal["kubernetes", "memory"] = "kubernetes"
    kubernetes: KubernetesConfig = Field(default_factory=KubernetesConfig)
    dry_run: bool = False
    keep: int = Field(default=200, ge=1)
    targets: list[TargetConfig] = Field(default_factory=list)


class ScalingController(Module):
    """Decides replica counts from queue depth, stream lag, RPC p99 and CPU.

    Args:
        scaler: used instead of the configured one (a ``MemoryScaler`` in tests).
        sources: per target name, used instead of scraping its ``metrics`` URLs.
        clock: the time samples are stamped with (seconds).
    """

    name = "scaling"
    version = "0.1.0"
    Config = ScalingConfig
    config: ScalingConfig

    def __init__(
        self,
        *,
        scaler: Scaler | None = None,
        sources: Mapping[str, Source] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._given_scaler = scaler
        self._sources = dict(sources or {})
        self.clock = clock
        self.targets: dict[str, Target] = {}
        self.scaler: Scaler = scaler or MemoryScaler()
        self.recent: deque[Decision] = deque(maxlen=200)

    async def on_start(self) -> None:
        """Build the targets and the scaler from the config."""
        cfg = self.config
        self.recent = deque(maxlen=cfg.keep)
        self.scaler = self._given_scaler or _scaler(cfg)
        self.targets = {t.name: self._target(t) for t in cfg.targets}

    def _target(self, t: TargetConfig) -> Target:
        source = self._sources.get(t.name) or OpsMetrics(
            t.metrics, modules=t.modules, groups=t.groups, cpu_cores=t.cpu_cores
        )
        policy = ScalingPolicy(
            min_replicas=t.min_replicas,
            max_replicas=t.max_replicas,
            step=t.step,
            up_cooldown_s=t.up_cooldown_s,
            down_cooldown_s=t.down_cooldown_s,
        )
        rules = [
            ScalingRule(metric=r.metric, up_above=r.up_above, down_below=r.down_below)
            for r in t.rules
        ]
        forecast = None
        if t.forecast is not None:
            f = t.forecast
            forecast = ForecastSpec(
                model=f.model,
                horizon_s=f.horizon_s,
                metrics=tuple(f.metrics),
                period_s=f.period_s,
                bucket_s=f.bucket_s,
                path=f.path,
                window=f.window,
                step_s=f.step_s,
            )
        return Target(t.name, rules, policy=policy, source=source, forecast=forecast)

    @leader(ttl_s=10)
    async def control(self) -> None:
        """The loop, on one instance in the cluster: a round every ``interval_s``."""
        while True:
            await asyncio.sleep(self.config.interval_s)
            await self.tick()

    async def tick(self, at: float | None = None) -> list[Decision]:
        """One round over every target; a target that fails is logged and skipped."""
        now = self.clock() if at is None else at
        made = []
        for target in self.targets.values():
            try:
                made.append(await self.decide(target, now))
            except Exception:
                self.log.exception("scaling %s failed this round", target.name)
        return made

    async def decide(self, target: Target, at: float) -> Decision:
        """Sample, decide, scale (unless ``dry_run``) and announce one target."""
        if target.source is None:
            raise RuntimeError(f"scaling target {target.name!r} has no source")
        signals = await target.source.sample(at)
        current = await self.scaler.replicas(target.name)
        decision = target.plan(signals, current)
        self.recent.append(decision)
        if decision.changed:
            if not self.config.dry_run:
                await self.scaler.scale(target.name, decision.desired)
            self.log.info(
                "%s: %d -> %d replicas (%s)",
                target.name,
                decision.current,
                decision.desired,
                decision.reason,
            )
            await self.emit(DECIDED, {**asdict(decision), "dry_run": self.config.dry_run})
        return decision

    @rpc
    async def decisions(self, target: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The latest decisions, newest last (``target``: only that one's)."""
        found = [asdict(d) for d in self.recent if target is None or d.target == target]
        return found[-limit:] if limit > 0 else []


def _scaler(cfg: ScalingConfig) -> Scaler:
    if cfg.scaler == "memory":
        return MemoryScaler({t.name: t.min_replicas for t in cfg.targets})
    from organelle.scaling.kubernetes import KubernetesScaler

    k = cfg.kubernetes
    return KubernetesScaler(
        api=k.api, namespace=k.namespace, token_file=k.token_file, ca_file=k.ca_file
    )
