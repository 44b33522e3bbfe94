"""The analytics plugin in a real kernel: counts, rollups into coarser buckets, retention, queries.

Times are injected (``at=``, ``rollup(now=)``), so nothing sleeps: the counts
go to yesterday's buckets and the rollups run "later" by passing ``now``.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from organelle_analytics import Analytics, Point

from organelle import Kernel
from organelle.errors import ConfigError, ValidationError
from organelle.testing.plugins import check_plugin

MIN, HOUR, DAY = 60, 3600, 86400
T0 = int(time.time() // DAY) * DAY - DAY  # yesterday, 00:00 UTC: inside the raw retention


def config(tmp_path: Path, storage: str = "memory://", **extra: Any) -> dict[str, Any]:
    return {
        "kernel": {"storage": storage, "jobs": f"sqlite:///{tmp_path}/jobs.db"},
        "modules": {"analytics": {"auto_rollup": False, **extra}},
    }


@pytest.fixture
async def kernel(tmp_path: Path) -> AsyncIterator[Kernel]:
    async with Kernel([Analytics], config(tmp_path)) as k:
        yield k


async def query(
    kernel: Kernel, resolution: str, since: int = T0, until: int = T0 + DAY
) -> list[Point]:
    points: list[Point] = await kernel.call(
        "analytics.query", name="orders", since=since, until=until, resolution=resolution
    )
    return points


async def test_counts_land_in_their_minute_and_every_resolution_sees_them(kernel: Kernel) -> None:
    for offset, value in [(10, 1), (50, 2), (70, 3), (HOUR + 5, 4)]:
        await kernel.call("analytics.count", name="orders", value=value, at=T0 + offset)
    await kernel.call("analytics.count", name="other", at=T0 + 10)
    assert await query(kernel, "1m") == [Point(T0, 3), Point(T0 + MIN, 3), Point(T0 + HOUR, 4)]
    # not rolled up yet: the coarser points are summed from the minutes on the fly
    assert await query(kernel, "1h") == [Point(T0, 6), Point(T0 + HOUR, 4)]
    assert await query(kernel, "1d") == [Point(T0, 10)]
    assert await query(kernel, "1m", since=T0 + MIN, until=T0 + HOUR) == [Point(T0 + MIN, 3)]
    assert sorted(await kernel.call("analytics.names")) == ["orders", "other"]


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_rollup_sums_into_hours_and_days_and_retention_keeps_the_sums(
    tmp_path: Path, backend: str
) -> None:
    rng = random.Random(16)  # noqa: S311 - test data, not secrets
    counts = [(rng.randrange(DAY), rng.randrange(1, 50)) for _ in range(300)]  # all yesterday
    hours: dict[int, int] = {}
    for offset, value in counts:
        hours[T0 + offset // HOUR * HOUR] = hours.get(T0 + offset // HOUR * HOUR, 0) + value
    storage = "memory://" if backend == "memory" else f"sqlite:///{tmp_path}/store.db"
    async with Kernel([Analytics], config(tmp_path, storage)) as k:
        for offset, value in counts:
            await k.call("analytics.count", name="orders", value=value, at=T0 + offset)
        done = await k.call("analytics.rollup", now=T0 + DAY + 600)
        assert done == {"written": len(hours) + 1, "deleted": 0}  # 24 hours and a day
        expected = [Point(t, v) for t, v in sorted(hours.items())]
        assert await query(k, "1h") == expected
        # two days on, the minutes are gone (they keep two days); the sums stay
        done = await k.call("analytics.rollup", now=T0 + 3 * DAY + 600)
        assert done["deleted"] == len({offset // MIN for offset, _ in counts})
        assert await query(k, "1m") == []
        assert await query(k, "1h") == expected
        assert await query(k, "1d") == [Point(T0, sum(v for _, v in counts))]


async def test_a_late_count_reaches_the_rolled_up_buckets_once(kernel: Kernel) -> None:
    await kernel.call("analytics.count", name="orders", value=2, at=T0 + 30)
    await kernel.call("analytics.rollup", now=T0 + DAY + 600)
    await kernel.call("analytics.count", name="orders", value=5, at=T0 + 40)  # after the rollup
    await kernel.call("analytics.rollup", now=T0 + DAY + 900)  # a second run changes nothing
    assert await query(kernel, "1m") == [Point(T0, 7)]
    assert await query(kernel, "1h") == [Point(T0, 7)]
    assert await query(kernel, "1d") == [Point(T0, 7)]


async def test_retention_deletes_old_buckets_at_every_resolution(tmp_path: Path) -> None:
    levels = [
        {"name": "1m", "step_s": MIN, "keep_s": 2 * HOUR},
        {"name": "1h", "step_s": HOUR, "keep_s": 2 * DAY},
        {"name": "1d", "step_s": DAY, "keep_s": 3 * DAY},
    ]
    now = time.time()
    async with Kernel([Analytics], config(tmp_path, resolutions=levels, lateness_s=0)) as k:
        # both counts in today's day bucket, also in the first hour after midnight UTC
        # (the days' retention below counts on one day bucket)
        today = now // DAY * DAY
        for at in (max(now - HOUR - 30, today + 1), max(now - 30, today + 2)):
            await k.call("analytics.count", name="orders", at=at)
        start = int(now - DAY)
        await k.call("analytics.rollup", now=now + 4 * HOUR)  # minutes older than 2 h go
        minutes = await query(k, "1m", since=start, until=int(now + DAY))
        assert minutes == []
        assert sum(p.value for p in await query(k, "1h", since=start, until=int(now + DAY))) == 2
        await k.call("analytics.rollup", now=now + 3 * DAY)  # the hours go
        assert await query(k, "1h", since=start, until=int(now + DAY)) == []
        assert sum(p.value for p in await query(k, "1d", since=start, until=int(now + DAY))) == 2
        await k.call("analytics.rollup", now=now + 5 * DAY)  # and the days
        assert await query(k, "1d", since=start, until=int(now + DAY)) == []


async def test_events_are_counted_by_the_configured_rules(tmp_path: Path) -> None:
    rules = [
        {"on": "order.placed", "name": "orders"},
        {"on": "order.placed", "name": "items", "value": "order.items"},
        {"on": "order.*", "name": "order-events"},
    ]
    async with Kernel([Analytics], config(tmp_path, counters=rules)) as k:
        before = int(time.time()) - MIN
        await k.emit("order.placed", {"order": {"items": 3}})
        await k.emit("order.placed", {"order": {"items": 4}})
        await k.emit("order.placed", {"order": {"items": "many"}})  # not an integer: skipped
        await k.emit("order.cancelled", {"order": {}})
        await k.drain()
        after = int(time.time()) + MIN

        async def total(name: str) -> int:
            points = await k.call("analytics.query", name=name, since=before, until=after)
            return sum(p.value for p in points)

        assert (await total("orders"), await total("items"), await total("order-events")) == (
            3,
            7,
            4,
        )


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("count", {"name": "a:b"}, "not a counter name"),
        ("count", {"name": "a", "at": T0 - 10 * DAY}, "older than resolution '1m' keeps"),
        ("count", {"name": "a", "at": -1.0}, "must be a Unix time"),
        ("query", {"name": "a", "since": T0, "until": T0, "resolution": "1m"}, "after since"),
        ("query", {"name": "a", "since": T0, "until": T0 + 1, "resolution": "1w"}, "no resolution"),
        ("query", {"name": "a", "since": 0, "until": T0, "resolution": "1m"}, "more than 100000"),
    ],
)
async def test_bad_input_is_a_validation_error(
    kernel: Kernel, method: str, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        await kernel.call(f"analytics.{method}", **params)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"resolutions": []}, "at least one"),
        (
            {
                "resolutions": [
                    {"name": "a", "step_s": 60, "keep_s": 9e9},
                    {"name": "b", "step_s": 90, "keep_s": 9},
                ]
            },
            "multiple",
        ),
        (
            {
                "resolutions": [
                    {"name": "a", "step_s": 60, "keep_s": 600},
                    {"name": "b", "step_s": 3600, "keep_s": 9},
                ]
            },
            "keeps 600s",
        ),
        ({"counters": [{"on": "x..y", "name": "n"}]}, "empty token"),
        ({"counters": [{"on": "x", "name": "a b"}]}, "counter name"),
    ],
)
def test_bad_config_refuses_the_load(tmp_path: Path, extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Kernel([Analytics], config(tmp_path, **extra))


async def test_the_plugin_keeps_to_its_manifest(tmp_path: Path) -> None:
    found = await check_plugin(Analytics, config=config(tmp_path))
    assert found.manifest.storage == ()
    assert found.warnings == ()
