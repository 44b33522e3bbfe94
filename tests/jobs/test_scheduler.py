"""Cron scheduler: one fire per tick across instances, misfire skip and catch-up, injected clock."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from organelle.errors import ConfigError
from organelle.jobs import Schedule, Scheduler, tick_job_id
from organelle.jobs.sqlite import SqliteJobQueue

T0 = 1_800_000_000.0  # a minute boundary (divisible by 60)


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


async def fired(queue: SqliteJobQueue) -> Counter[float]:
    """Tick time (run_at) of every job in the queue, counted."""
    recs = await queue.scan("queued", limit=100_000) + await queue.scan("scheduled", limit=100_000)
    return Counter(r.run_at for r in recs)


async def test_two_schedulers_fire_each_tick_exactly_once(tmp_path: Path) -> None:
    clock = Clock()
    sched = Schedule(job="sweep", expr="* * * * *")
    qa = await SqliteJobQueue(tmp_path / "j.db", clock=clock).open()
    qb = await SqliteJobQueue(tmp_path / "j.db", clock=clock).open()  # a second node
    a = Scheduler(qa, [sched], now=clock)
    b = Scheduler(qb, [sched], now=clock)
    ticks = 300
    for step in range(ticks * 4):  # four looks per minute, in alternating order
        clock.t = T0 + step * 15 + 0.5
        first, second = (a, b) if step % 2 else (b, a)
        await first.tick()
        await second.tick()
    counts = await fired(qa)
    expected = {T0 + 60 * i for i in range(1, ticks)} | {T0 + 60 * ticks}
    assert set(counts) >= expected - {T0 + 60 * ticks}
    assert set(counts.values()) == {1}
    assert a.fired + b.fired >= 2 * len(counts)  # both tried; the queue kept one
    await qa.close()
    await qb.close()


async def test_misfire_skip_and_catch_up(tmp_path: Path) -> None:
    clock = Clock()
    q = await SqliteJobQueue(tmp_path / "j.db", clock=clock).open()
    skip = Schedule(job="skip", key="s", expr="* * * * *", misfire="skip")
    catch = Schedule(
        job="catch", key="c", expr="* * * * *", misfire="catch_up", misfire_window_s=300
    )
    s = Scheduler(q, [skip, catch], now=clock)
    clock.t = T0 + 1
    assert len(await s.tick()) == 5  # a fresh start catches up over its window: T0-240 … T0
    clock.t = T0 + 600.5  # ten minutes of downtime
    await s.tick()
    recs = await q.scan("queued", limit=1000)
    by_job = Counter(r.name for r in recs)
    assert by_job["catch"] == 5 + 5  # then within the 300 s window: T0+360 … T0+600
    assert by_job["skip"] == 1  # only the tick that is on time (T0+600)
    assert s.skipped == 9 + 5
    # a restarted scheduler re-enqueues the window: deduplicated, not doubled
    again = Scheduler(q, [catch], now=clock)
    await again.tick()
    assert Counter(r.name for r in await q.scan("queued", limit=1000))["catch"] == 10
    assert tick_job_id("c", T0 + 600) in {r.id for r in recs}
    await q.close()


async def test_time_zone_and_bad_expression(tmp_path: Path) -> None:
    clock = Clock(T0)
    q = await SqliteJobQueue(tmp_path / "j.db", clock=clock).open()
    s = Scheduler(q, [Schedule(job="daily", expr="0 9 * * *", tz="Europe/Paris")], now=clock)
    nxt = s.next_tick()
    assert nxt is not None
    assert nxt > T0
    with pytest.raises(ConfigError):
        Scheduler(q, [Schedule(job="x", expr="not cron")])
    await q.close()
