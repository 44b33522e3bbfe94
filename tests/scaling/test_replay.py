"""A recorded workload trace replayed through the controller module: its decisions hold up.

``workload-trace.csv``: two days of one worker group's load at five-minute
samples. The checks are properties of good decisions, computed from the trace
itself — bounds, steps, cooldowns, capacity at the peaks, back to the floor
at night, a burst met at once, and a seasonal forecast that scales out for
day two's peak earlier than the rules alone.
"""

from __future__ import annotations

import csv
import math
from itertools import pairwise
from pathlib import Path
from typing import Any

from organelle import Kernel, Module, on
from organelle.scaling import DECIDED, Decision, MemoryScaler, ScalingController, Signals

TRACE = Path(__file__).with_name("workload-trace.csv")
TARGET = "shop-workers"
STEP, LOW, HIGH = 4, 1, 20
UP_COOLDOWN_S, DOWN_COOLDOWN_S = 300, 1800
QUEUE_PER_REPLICA, LAG_PER_REPLICA = 100, 1000


def load_trace() -> list[Signals]:
    with TRACE.open(encoding="utf-8") as f:
        rows = csv.DictReader(line for line in f if not line.startswith("#"))
        return [
            Signals(at=float(r["at_s"]), queue_depth=float(r["queue_depth"]),
                    stream_lag=float(r["stream_lag"]), rpc_p99_s=float(r["rpc_p99_s"]),
                    cpu=float(r["cpu"]))
            for r in rows
        ]  # fmt: skip


class Replay:
    """A source that answers each sample time with the trace's row for it."""

    def __init__(self, rows: list[Signals]) -> None:
        self.rows = {s.at: s for s in rows}

    async def sample(self, at: float) -> Signals:
        return self.rows[at]


class Recorder(Module):
    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    @on(DECIDED)
    async def decided(self, decision: dict[str, Any]) -> None:
        self.seen.append(decision)


def config(forecast: dict[str, Any] | None) -> dict[str, Any]:
    target: dict[str, Any] = {
        "name": TARGET,
        "min_replicas": LOW,
        "max_replicas": HIGH,
        "step": STEP,
        "up_cooldown_s": UP_COOLDOWN_S,
        "down_cooldown_s": DOWN_COOLDOWN_S,
        "rules": [
            {"metric": "queue_depth", "up_above": QUEUE_PER_REPLICA, "down_below": 50},
            {"metric": "stream_lag", "up_above": LAG_PER_REPLICA, "down_below": 500},
            {"metric": "rpc_p99_s", "up_above": 0.5, "down_below": 0.25},
        ],
    }
    if forecast is not None:
        target["forecast"] = forecast
    return {
        "kernel": {"storage": "memory://"},
        "modules": {"scaling": {"interval_s": 3600, "scaler": "memory", "targets": [target]}},
    }


async def replay(
    rows: list[Signals], forecast: dict[str, Any] | None = None
) -> tuple[list[Decision], list[dict[str, Any]], MemoryScaler]:
    scaler = MemoryScaler({TARGET: LOW})
    controller = ScalingController(scaler=scaler, sources={TARGET: Replay(rows)})
    recorder = Recorder()
    decisions: list[Decision] = []
    async with Kernel([controller, recorder], config(forecast)) as kernel:
        for row in rows:  # bounded: one round per trace row
            decisions += await controller.tick(at=row.at)
        await kernel.drain()
    return decisions, recorder.seen, scaler


def needed(s: Signals) -> int:
    assert s.queue_depth is not None
    assert s.stream_lag is not None
    want = max(
        math.ceil(s.queue_depth / QUEUE_PER_REPLICA), math.ceil(s.stream_lag / LAG_PER_REPLICA)
    )
    return min(HIGH, max(LOW, want))


async def test_the_decisions_on_a_recorded_trace_hold_up() -> None:
    rows = load_trace()
    decisions, events, scaler = await replay(rows)
    assert len(decisions) == len(rows)
    changes = [d for d in decisions if d.changed]
    assert changes  # the trace has peaks: something must happen
    # Bounds and step.
    for d in decisions:
        assert LOW <= d.desired <= HIGH
        assert abs(d.desired - d.current) <= STEP
    # Cooldowns: no change sooner after the previous one than its direction allows.
    for before, after in pairwise(changes):
        wait = UP_COOLDOWN_S if after.desired > after.current else DOWN_COOLDOWN_S
        assert after.at - before.at >= wait, (before, after)
    # Responsive: whenever load per replica is over a threshold and nothing holds it back,
    # the count goes up at that very sample.
    last_change = -math.inf
    for row, d in zip(rows, decisions, strict=True):
        assert row.queue_depth is not None
        assert row.stream_lag is not None
        over = (row.queue_depth / d.current > QUEUE_PER_REPLICA
                or row.stream_lag / d.current > LAG_PER_REPLICA)  # fmt: skip
        if over and d.current < HIGH and row.at - last_change >= UP_COOLDOWN_S:
            assert d.desired > d.current, d
        if d.changed:
            last_change = row.at
    # Capacity at each day's noon, and the floor again in the small hours.
    by_at = {d.at: d for d in decisions}
    for day in (0, 1):
        noon = by_at[day * 86400 + 12 * 3600]
        assert noon.desired >= needed(next(r for r in rows if r.at == noon.at))
    assert by_at[86400 + 3 * 3600].desired == LOW
    # Day two's evening burst of jobs is met at the first sample that shows it.
    burst = next(r for r in rows if r.at >= 86400 + 20 * 3600)
    assert by_at[burst.at].desired > by_at[burst.at].current
    # Every change is announced once, in order, and went to the scaler.
    assert [(e["at"], e["current"], e["desired"]) for e in events] == [
        (d.at, d.current, d.desired) for d in changes
    ]
    assert all(e["target"] == TARGET and not e["dry_run"] for e in events)
    assert scaler.history == [(TARGET, d.desired) for d in changes]


async def test_a_seasonal_forecast_scales_out_before_day_twos_peak() -> None:
    rows = load_trace()
    plain, _, _ = await replay(rows)
    seasonal = {"model": "seasonal", "horizon_s": 1800, "period_s": 86400, "bucket_s": 300}
    ahead, _, _ = await replay(rows, seasonal)
    day = 86400

    def first_up(decisions: list[Decision]) -> float:
        return next(d.at for d in decisions if d.at >= day and d.desired > d.current)

    # Day one: nothing to learn from yet, so the same decisions.
    assert [(d.at, d.desired) for d in ahead if d.at < day] == [
        (d.at, d.desired) for d in plain if d.at < day
    ]
    # Day two: the morning ramp starts earlier, and the count is higher while load rises.
    assert first_up(ahead) < first_up(plain)
    morning = [
        (a, p)
        for a, p in zip(ahead, plain, strict=True)
        if day + 7 * 3600 <= a.at < day + 10 * 3600
    ]
    assert all(a.desired >= p.desired for a, p in morning)
    assert any(a.desired > p.desired for a, p in morning)
