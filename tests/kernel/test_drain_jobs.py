"""``kernel.drain_jobs()`` waits for a job whose claim is still on its way from the queue."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from organelle import Kernel, Module, job

pytestmark = pytest.mark.timeout(30)


class Work(Module):
    name = "work"
    done: list[int] = []

    @job
    async def step(self, n: int) -> None:
        Work.done.append(n)


async def test_drain_jobs_waits_for_a_claim_in_flight() -> None:
    Work.done.clear()
    async with Kernel([Work], {"kernel": {"jobs": "memory://"}}) as kernel:
        worker = kernel._jobs.worker
        assert worker is not None
        queue = worker.queue
        claim = queue.claim
        claiming = asyncio.Event()

        async def slow_claim(**kwargs: Any) -> Any:
            leases = await claim(**kwargs)
            if leases:
                claiming.set()
                await asyncio.sleep(0.2)  # the job is claimed, not yet running
            return leases

        queue.claim = slow_claim  # type: ignore[method-assign]
        job_id = await kernel.enqueue("work.step", n=1)
        await claiming.wait()
        assert worker.in_flight == 0  # what drain_jobs used to look at
        await kernel.drain_jobs(timeout_s=5)
        assert Work.done == [1]
        assert (await kernel.jobs.get(job_id)).state == "succeeded"
