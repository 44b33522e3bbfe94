"""Rules: thresholds per replica, hysteresis, step, range, cooldowns, forecasts that only raise."""

from __future__ import annotations

import pytest

from organelle.errors import ConfigError
from organelle.scaling import Rules, ScalingPolicy, ScalingRule, Signals


def test_a_total_is_divided_by_the_replicas_and_sized_back_to_the_threshold() -> None:
    rule = ScalingRule(metric="queue_depth", up_above=100, down_below=40)
    assert rule.wanted(450, 2) == (5, "up")  # 225 per replica: 5 bring it to 90
    assert rule.wanted(150, 2) == (2, "hold")  # 75 per replica: between the thresholds
    assert rule.wanted(50, 4) == (1, "down")  # 12.5 per replica: one would do
    assert rule.wanted(201, 2) == (3, "up")  # just over: at least one more


def test_an_average_is_compared_as_it_is() -> None:
    rule = ScalingRule(metric="cpu", up_above=0.7, down_below=0.3)
    assert rule.wanted(0.9, 4) == (6, "up")  # 4 x 0.9 / 0.7 = 5.14 -> 6
    assert rule.wanted(0.2, 4) == (2, "down")  # 4 x 0.2 / 0.7 = 1.14 -> 2


def test_any_rule_asking_for_more_wins_and_fewer_needs_every_rule() -> None:
    rules = Rules(
        "w",
        [ScalingRule(metric="queue_depth", up_above=100, down_below=40),
         ScalingRule(metric="cpu", up_above=0.7, down_below=0.3)],
        ScalingPolicy(min_replicas=1, max_replicas=20, step=10, up_cooldown_s=0, down_cooldown_s=0),
    )  # fmt: skip
    up = rules.decide(Signals(at=0, queue_depth=10, cpu=0.95), 4)
    assert (up.desired, up.reason) == (6, "cpu above 0.7 per replica")
    held = rules.decide(Signals(at=1, queue_depth=10, cpu=0.5), 6)
    assert (held.desired, held.reason) == (6, "within thresholds")
    down = rules.decide(Signals(at=2, queue_depth=10, cpu=0.1), 6)
    assert down.desired == 1
    assert down.signals == {"queue_depth": 10, "cpu": 0.1}


def test_step_and_range_cut_the_change() -> None:
    rules = Rules(
        "w", [ScalingRule(metric="queue_depth", up_above=10)], ScalingPolicy(max_replicas=6, step=2)
    )
    first = rules.decide(Signals(at=0, queue_depth=1000), 1)
    assert first.desired == 3
    assert "wanted 100; step 2, range 1-6" in first.reason
    rules.policy = ScalingPolicy(max_replicas=6, step=10, up_cooldown_s=0)
    assert rules.decide(Signals(at=1, queue_depth=1000), 3).desired == 6
    floor = Rules(
        "w",
        [ScalingRule(metric="queue_depth", up_above=10, down_below=5)],
        ScalingPolicy(min_replicas=2),
    )
    assert floor.decide(Signals(at=0, queue_depth=0), 3).desired == 2


def test_cooldowns_hold_the_count_after_a_change() -> None:
    policy = ScalingPolicy(max_replicas=50, step=50, up_cooldown_s=60, down_cooldown_s=300)
    rules = Rules("w", [ScalingRule(metric="queue_depth", up_above=10, down_below=5)], policy)
    assert rules.decide(Signals(at=0, queue_depth=40), 2).desired == 4
    held = rules.decide(Signals(at=30, queue_depth=80), 4)
    assert held.desired == 4
    assert held.reason.endswith("cooling down 30s more")
    assert rules.decide(Signals(at=60, queue_depth=80), 4).desired == 8
    assert rules.decide(Signals(at=200, queue_depth=0), 8).desired == 8  # down waits longer
    assert rules.decide(Signals(at=360, queue_depth=0), 8).desired == 1


def test_a_forecast_raises_a_signal_but_never_lowers_it() -> None:
    rules = Rules("w", [ScalingRule(metric="queue_depth", up_above=100, down_below=40)],
                  ScalingPolicy(max_replicas=10, up_cooldown_s=0, down_cooldown_s=0))  # fmt: skip
    ahead = rules.decide(Signals(at=0, queue_depth=50), 1, forecast=Signals(at=0, queue_depth=300))
    assert ahead.desired == 3
    assert ahead.signals == {"queue_depth": 300}
    calm = rules.decide(Signals(at=1, queue_depth=250), 3, forecast=Signals(at=1, queue_depth=0))
    assert calm.desired == 3


def test_no_signal_holds() -> None:
    rules = Rules("w", [ScalingRule(metric="stream_lag", up_above=100)])
    decision = rules.decide(Signals(at=0, queue_depth=5000), 3)
    assert (decision.desired, decision.reason, decision.changed) == (3, "no signal", False)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ScalingRule(metric="cpu", up_above=0.5, down_below=0.5),
        lambda: ScalingRule(metric="cpu", up_above=0),
        lambda: ScalingPolicy(min_replicas=5, max_replicas=2),
        lambda: ScalingPolicy(step=0),
        lambda: ScalingPolicy(up_cooldown_s=-1),
        lambda: Rules("w", []),
    ],
)
def test_misuse_is_refused(make: object) -> None:
    with pytest.raises(ConfigError):
        make()  # type: ignore[operator]
