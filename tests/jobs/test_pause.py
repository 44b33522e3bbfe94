"""Pausing a worker's job names: paused jobs wait in the queue, resume runs them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from organelle.jobs import JobSpec, JobsService
from organelle.jobs.memory import MemoryJobQueue

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def jobs() -> AsyncIterator[JobsService]:
    q = await MemoryJobQueue().open()
    yield JobsService(q)
    await q.close()


async def test_paused_names_wait_and_resume_runs_them(jobs: JobsService) -> None:
    jobs.register("slow", JobSpec(concurrency=1))
    ran: list[str] = []

    async def a() -> None:
        ran.append("a")

    async def slow() -> None:
        ran.append("slow")

    await jobs.enqueue("a")
    await jobs.enqueue("slow")
    worker = jobs.worker({"a": a, "slow": slow})
    assert worker.pause(["a", "slow"]) == {"a", "slow"}
    await worker.drain(timeout_s=5)
    assert ran == []
    assert await jobs.backlog() == {"a": 1, "slow": 1}
    assert worker.resume(["a"]) == {"slow"}
    await worker.drain(timeout_s=5)
    assert ran == ["a"]
    assert worker.resume() == frozenset()
    await worker.drain(timeout_s=5)
    assert ran == ["a", "slow"]


async def test_pause_all_covers_names_known_now_and_a_started_worker(jobs: JobsService) -> None:
    ran: list[int] = []

    async def a(n: int) -> None:
        ran.append(n)

    worker = jobs.worker({"a": a}, poll_s=0.05)
    assert worker.pause() == {"a"}
    async with worker:
        await jobs.enqueue("a", {"n": 1})
        assert await jobs.backlog() == {"a": 1}
        worker.resume()
        for _ in range(200):  # bounded: up to 2 s
            if ran:
                break
            await jobs.queue.wait(0.01)
    assert ran == [1]
