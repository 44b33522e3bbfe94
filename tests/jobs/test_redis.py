"""RedisJobQueue beyond the contract: URLs, wake-ups, a Redis restart, a kernel on Redis."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from organelle import Kernel, Module, job, rpc
from organelle.errors import ConfigError
from organelle.jobs import JobSpec, JobsService, open_queue
from organelle.jobs.redis import RedisJobQueue
from organelle.testing.servers import RedisServer

pytestmark = pytest.mark.timeout(30)


def url(server: RedisServer) -> str:
    return f"{server.url}?prefix=j{uuid.uuid4().hex[:10]}"


async def test_url_opens_redis_queue(redis_server: RedisServer) -> None:
    queue = await open_queue(url(redis_server), retention_s=5)
    try:
        assert isinstance(queue, RedisJobQueue)
        assert queue.retention_s == 5
    finally:
        await queue.close()
    with pytest.raises(ConfigError):
        await open_queue(f"{redis_server.url}?prefix=a b")


async def test_idle_worker_wakes_on_another_clients_enqueue(redis_server: RedisServer) -> None:
    """The worker polls every 30 s: only the pub/sub wake-up can start the job within the test."""
    where = url(redis_server)
    consumer = JobsService(await open_queue(where))
    producer = JobsService(await open_queue(where))
    ran = asyncio.Event()

    async def work() -> None:
        ran.set()

    worker = consumer.worker({"work": work}, slots=2, poll_s=30.0)
    await worker.start()
    try:
        await asyncio.sleep(0.2)  # the worker is idle, waiting
        t0 = time.monotonic()
        await producer.enqueue("work")
        await asyncio.wait_for(ran.wait(), 10)
        assert time.monotonic() - t0 < 10
    finally:
        await worker.stop()
        await consumer.queue.close()
        await producer.queue.close()


async def test_jobs_survive_a_redis_kill_with_aof() -> None:
    """Acknowledged enqueues are on disk (appendfsync always); scripts reload after the restart."""
    async with RedisServer(appendonly=True, appendfsync="always") as server:
        jobs = JobsService(await open_queue(url(server)))
        jobs.register("work", JobSpec(lease_s=5.0))
        ids = await jobs.enqueue_many("work", [{"n": i} for i in range(100)])
        server.kill()
        server.restart()  # the queue's next calls reconnect (within its retry budget)
        done: list[int] = []

        async def work(n: int) -> None:
            done.append(n)

        worker = jobs.worker({"work": work}, slots=8)
        await worker.drain(timeout_s=20)
        assert sorted(done) == list(range(100))
        assert {(await jobs.get(i)).state for i in ids} == {"succeeded"}
        await jobs.queue.close()


class Counter(Module):
    """A job that counts in the module's Store namespace: both on Redis."""

    name = "counter"

    @rpc
    async def bump(self, n: int) -> str:
        return await self.enqueue("counter.add", n=n)

    @job(max_attempts=2)
    async def add(self, n: int) -> None:
        await self.store.incr("total", n)


async def test_a_kernel_runs_jobs_and_storage_on_redis(redis_server: RedisServer) -> None:
    tag = uuid.uuid4().hex[:8]
    urls = {
        "jobs": f"{redis_server.url}?prefix=kj{tag}",
        "storage": f"{redis_server.url}?prefix=ks{tag}",
    }
    async with Kernel([Counter], {"kernel": urls}) as kernel:
        ids = [await kernel.call("counter.bump", n=n) for n in range(1, 11)]
        await kernel.drain_jobs(timeout_s=20)
        assert {(await kernel.jobs.get(i)).state for i in ids} == {"succeeded"}
        entry = await kernel.store.get("counter.total")
        assert entry is not None
        assert entry.value == 55
