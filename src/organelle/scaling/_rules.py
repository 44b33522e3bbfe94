"""Deciding a replica count: thresholds per metric, a step, cooldowns, a floor and a ceiling.

Each rule reads one signal and a per-replica threshold. Above ``up_above`` it
asks for enough replicas to bring the load per replica back to
``up_above`` (the HPA's proportional formula); below ``down_below`` it would
accept as few as that same formula gives; in between it holds. The gap
between the two thresholds is the hysteresis that keeps a steady load from
flapping. One rule asking for more wins; the count drops only when every
rule agrees it may. The change is then cut to ``step`` and to
``min_replicas``..``max_replicas``, and none is made within the cooldown of
the previous one (a longer one for scaling down: adding capacity late costs
more than removing it late).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from organelle.errors import ConfigError

__all__ = ["METRICS", "Decision", "Metric", "Rules", "ScalingPolicy", "ScalingRule", "Signals"]

Metric = Literal["queue_depth", "stream_lag", "rpc_p99_s", "cpu"]
METRICS: tuple[Metric, ...] = ("queue_depth", "stream_lag", "rpc_p99_s", "cpu")
# Totals shared by the replicas (work waiting) are divided by the replica count;
# the others are already per replica (an average utilisation, a latency).
_TOTALS: frozenset[str] = frozenset({"queue_depth", "stream_lag"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Signals:
    """One sample of the cluster's load (``None``: not measured this time).

    Attributes:
        at: when it was taken (seconds, any monotonic clock the caller keeps).
        queue_depth: jobs waiting, all queues the target serves.
        stream_lag: records its consumer groups have yet to handle.
        rpc_p99_s: 99th percentile of RPC latency since the previous sample.
        cpu: average CPU use per replica, as a fraction of ``cpu_cores``.
    """

    at: float
    queue_depth: float | None = None
    stream_lag: float | None = None
    rpc_p99_s: float | None = None
    cpu: float | None = None

    def get(self, metric: Metric) -> float | None:
        """The value of ``metric``."""
        value: float | None = getattr(self, metric)
        return value


@dataclass(frozen=True, slots=True, kw_only=True)
class ScalingRule:
    """Scale on one metric: up above ``up_above`` per replica, down below ``down_below``."""

    metric: Metric
    up_above: float
    down_below: float = 0.0

    def __post_init__(self) -> None:
        if self.up_above <= 0 or not 0 <= self.down_below < self.up_above:
            raise ConfigError(
                f"scaling rule on {self.metric}: need 0 <= down_below ({self.down_below}) "
                f"< up_above ({self.up_above})"
            )

    def wanted(self, value: float, replicas: int) -> tuple[int, Literal["up", "down", "hold"]]:
        """The replicas this rule asks for at ``value`` with ``replicas`` running."""
        current = max(replicas, 1)
        load = value / current if self.metric in _TOTALS else value
        sized = math.ceil(current * load / self.up_above - 1e-9)
        if load > self.up_above:
            return max(sized, current + 1), "up"
        if load < self.down_below:
            return min(sized, current), "down"
        return current, "hold"


@dataclass(frozen=True, slots=True, kw_only=True)
class ScalingPolicy:
    """Bounds and pacing of one target's replica count."""

    min_replicas: int = 1
    max_replicas: int = 10
    step: int = 4
    up_cooldown_s: float = 60.0
    down_cooldown_s: float = 300.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ConfigError(
                f"scaling: need 0 <= min_replicas ({self.min_replicas}) "
                f"<= max_replicas ({self.max_replicas}), max_replicas >= 1"
            )
        if self.step < 1:
            raise ConfigError("scaling: step must be at least 1")
        if self.up_cooldown_s < 0 or self.down_cooldown_s < 0:
            raise ConfigError("scaling: cooldowns must not be negative")


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """What the rules decided at one sample (emitted as ``scaling.decided`` when it changes)."""

    target: str
    at: float
    current: int
    desired: int
    reason: str
    signals: dict[str, float] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        """Whether the count changes."""
        return self.desired != self.current


class Rules:
    """The decision state of one target: its rules, its policy and when it last changed."""

    def __init__(
        self, target: str, rules: list[ScalingRule], policy: ScalingPolicy | None = None
    ) -> None:
        if not rules:
            raise ConfigError(f"scaling target {target!r}: no rule")
        self.target = target
        self.rules = list(rules)
        self.policy = policy or ScalingPolicy()
        self.last_change_at: float | None = None

    def decide(
        self, signals: Signals, current: int, *, forecast: Signals | None = None
    ) -> Decision:
        """The replica count for ``signals`` (with ``forecast``: the larger of now and then).

        A forecast only ever raises a signal: it scales out ahead of a
        predicted rise, never in ahead of a predicted fall.
        """
        values = _merged(signals, forecast)
        asks = [(rule, *rule.wanted(values[rule.metric], current)) for rule in self.rules
                if rule.metric in values]  # fmt: skip
        desired, why = self._combine(asks, current)
        desired, why = self._bounded(desired, current, why, signals.at)
        if desired != current:
            self.last_change_at = signals.at
        return Decision(
            target=self.target,
            at=signals.at,
            current=current,
            desired=desired,
            reason=why,
            signals=values,
        )

    def _combine(
        self, asks: Sequence[tuple[ScalingRule, int, str]], current: int
    ) -> tuple[int, str]:
        ups = [(n, r) for r, n, d in asks if d == "up"]
        if ups:
            n, rule = max(ups, key=lambda a: a[0])
            return n, f"{rule.metric} above {rule.up_above:g} per replica"
        if asks and all(d == "down" for _, _, d in asks):
            n = max(n for _, n, _ in asks)
            return n, "every metric below its scale-down threshold"
        if not asks:
            return current, "no signal"
        return current, "within thresholds"

    def _bounded(self, desired: int, current: int, why: str, now: float) -> tuple[int, str]:
        p = self.policy
        stepped = max(current - p.step, min(current + p.step, desired))
        bounded = max(p.min_replicas, min(p.max_replicas, stepped))
        if bounded != desired:
            why += f" (wanted {desired}; step {p.step}, range {p.min_replicas}-{p.max_replicas})"
        if bounded == current or self.last_change_at is None:
            return bounded, why
        cooldown = p.up_cooldown_s if bounded > current else p.down_cooldown_s
        left = self.last_change_at + cooldown - now
        if left > 0:
            return current, f"{why}; cooling down {left:.0f}s more"
        return bounded, why


def _merged(signals: Signals, forecast: Signals | None) -> dict[str, float]:
    values: dict[str, float] = {}
    for metric in METRICS:
        now = signals.get(metric)
        ahead = forecast.get(metric) if forecast is not None else None
        if now is None and ahead is None:
            continue
        values[metric] = max(v for v in (now, ahead) if v is not None)
    return values
