"""Worker behaviour on the in-memory queue: limits, timeouts, backoff, stop, fencing."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from organelle.errors import ConfigError, ValidationError
from organelle.jobs import Backoff, JobQueue, JobSpec, JobsService, Retry, current_job, open_queue
from organelle.jobs.memory import MemoryJobQueue

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def jobs() -> AsyncIterator[JobsService]:
    q = await MemoryJobQueue().open()
    yield JobsService(q)
    await q.close()


async def test_concurrency_limit_per_type(jobs: JobsService) -> None:
    jobs.register("slow", JobSpec(concurrency=2))
    running = peak = 0

    async def slow() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1

    for _ in range(12):
        await jobs.enqueue("slow")
    await jobs.worker({"slow": slow}, slots=10).drain()
    assert peak == 2


async def test_rate_limit(jobs: JobsService) -> None:
    jobs.register("r", JobSpec(rate=20))
    starts: list[float] = []

    async def r() -> None:
        starts.append(time.monotonic())

    for _ in range(30):
        await jobs.enqueue("r")
    await jobs.worker({"r": r}, slots=10).drain()
    assert len(starts) == 30
    assert starts[-1] - starts[0] >= 0.4  # 20 burst, then 10 more at 20/s


async def test_timeout_then_dead_with_every_error(jobs: JobsService) -> None:
    jobs.register("hang", JobSpec(timeout_s=0.05, max_attempts=2, backoff=Backoff(base_s=0)))

    async def hang() -> None:
        await asyncio.sleep(10)

    jid = await jobs.enqueue("hang")
    await jobs.worker({"hang": hang}).drain()
    rec = await jobs.get(jid)
    assert rec.state == "dead"
    assert [e.type for e in rec.errors] == ["TimeoutError", "TimeoutError"]


async def test_backoff_schedule_with_jitter() -> None:
    b = Backoff(base_s=1, max_s=10, jitter=0.2)
    rng = random.Random(1)
    for attempt, base in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (9, 10)]:
        d = b.delay_s(attempt, rng)
        assert base <= d <= base * 1.2


class Clock:
    """Wall-clock seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


async def test_retry_signal_delay_and_priority_order() -> None:
    order: list[int] = []
    clock = Clock()
    queue = await MemoryJobQueue(clock=clock).open()
    jobs = JobsService(queue, clock=clock)
    jobs.register("p", JobSpec(max_attempts=3))

    async def p(n: int) -> None:
        lease = current_job.get()
        assert lease is not None
        if n == 99 and lease.attempt == 1:
            raise Retry(delay_s=0.05)
        order.append(n)

    await jobs.enqueue("p", {"n": 1})
    await jobs.enqueue("p", {"n": 5}, priority=5)
    await jobs.enqueue("p", {"n": 99}, priority=9)
    w = jobs.worker({"p": p}, slots=1)
    await w.drain()
    assert order == [5, 1]  # 99 asked to come back later
    clock.t += 0.04
    await w.drain()
    assert order == [5, 1]  # not before its delay
    clock.t += 0.02
    await w.drain()
    assert order == [5, 1, 99]
    await queue.close()


async def test_stop_releases_unfinished_at_once(jobs: JobsService) -> None:
    jobs.register("long", JobSpec(lease_s=60))
    started = asyncio.Event()

    async def long() -> None:
        started.set()
        await asyncio.sleep(30)

    jid = await jobs.enqueue("long")
    w = jobs.worker({"long": long})
    await w.start()
    await started.wait()
    t0 = time.monotonic()
    await w.stop(drain_timeout_s=0.05)
    assert time.monotonic() - t0 < 1
    rec = await jobs.get(jid)
    assert (rec.state, rec.attempts, rec.errors) == ("queued", 0, ())  # not failed, not leased


async def test_lost_lease_cancels_the_handler(jobs: JobsService) -> None:
    q = jobs.queue
    jobs.register("w", JobSpec(lease_s=0.2))
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def w() -> None:
        started.set()
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    jid = await jobs.enqueue("w")
    worker = jobs.worker({"w": w})
    await worker.start()
    await started.wait()
    # someone else takes the job over (as after an expired lease): our heartbeat sees it
    assert isinstance(q, MemoryJobQueue)
    await q._run(lambda c: c.execute("UPDATE jobs SET token = token + 1 WHERE id = ?", (jid,)))
    await asyncio.wait_for(cancelled.wait(), 2)
    await worker.stop()
    assert worker.stats.lost == 1


async def test_validation_and_url(jobs: JobsService, tmp_path: Any) -> None:
    strict = JobsService(jobs.queue, strict=True)
    with pytest.raises(ValidationError):
        await strict.enqueue("unknown")

    def bad(_: dict[str, Any]) -> dict[str, Any]:
        raise TypeError("nope")

    jobs.register("v", validator=bad)
    with pytest.raises(ValidationError):
        await jobs.enqueue("v", {})
    with pytest.raises(ValidationError):
        await jobs.enqueue("x", delay_s=1, at=time.time())
    q: JobQueue = await open_queue(f"sqlite:///{tmp_path}/u.db?synchronous=normal")
    await q.close()
    q = await open_queue("memory://")
    await q.close()
    with pytest.raises(ConfigError):
        await open_queue("mongodb://x")


async def test_enqueue_meta_reaches_the_run_beside_what_the_observer_adds() -> None:
    class Stamp:
        def enqueued(self, job: str, meta: dict[str, str]) -> None:
            meta["stamped"] = job

        def succeeded(self, job: str, duration_s: float) -> None: ...
        def failed(self, job: str, duration_s: float) -> None: ...
        def retried(self, job: str) -> None: ...
        def dead(self, job: str) -> None: ...

    queue = await MemoryJobQueue().open()
    jobs = JobsService(queue, observer=Stamp())
    seen: list[dict[str, str]] = []

    async def m() -> None:
        lease = current_job.get()
        assert lease is not None
        seen.append(dict(lease.meta))

    caller = {"hops": "3"}
    await jobs.enqueue("m", meta=caller)
    await jobs.enqueue("m")
    await jobs.worker({"m": m}, slots=1).drain()
    assert caller == {"hops": "3"}  # the caller's mapping is copied, not written to
    assert sorted(seen, key=len) == [{"stamped": "m"}, {"hops": "3", "stamped": "m"}]
    await queue.close()


async def test_stop_with_every_slot_busy_keeps_to_its_drain_timeout(jobs: JobsService) -> None:
    jobs.register("long", JobSpec(lease_s=60))
    started = asyncio.Event()

    async def long() -> None:
        started.set()
        await asyncio.sleep(30)

    first = await jobs.enqueue("long")
    await jobs.enqueue("long")  # waits for the busy slot
    w = jobs.worker({"long": long}, slots=1)
    await w.start()
    await started.wait()
    t0 = time.monotonic()
    await w.stop(drain_timeout_s=0.2)
    assert time.monotonic() - t0 < 2  # was the running job's own time: the loop waited on it
    rec = await jobs.get(first)
    assert (rec.state, rec.attempts) == ("queued", 0)


@pytest.mark.parametrize("meta", [{"hops": 3}, {1: "x"}, {"a": {"b": "c"}}, "hops=3"])
async def test_enqueue_meta_that_is_not_text_is_refused(jobs: JobsService, meta: Any) -> None:
    with pytest.raises(ValidationError, match="job meta") as err:
        await jobs.enqueue("m", meta=meta)
    assert err.value.code == "organelle.validation"
    assert await jobs.queue.scan("queued") == []  # nothing stored
