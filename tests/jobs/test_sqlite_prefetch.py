"""The SQLite queue's prefetch: a waiting worker's claim run by the writer thread.

Two queue objects on one file stand for two processes: each has its own
connection, so one sees the other's commits only through the watching poll,
as a worker process sees a producer's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from organelle.jobs import Worker
from organelle.jobs.base import NewJob
from organelle.jobs.sqlite import SqliteJobQueue

WAIT_S = 5.0  # far longer than a pickup: a test that waits this long has failed


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[SqliteJobQueue, SqliteJobQueue]]:
    """(worker side, producer side) on one database file."""
    worker = await SqliteJobQueue(tmp_path / "jobs.db").open()
    producer = await SqliteJobQueue(tmp_path / "jobs.db").open()
    yield worker, producer
    await worker.close()
    await producer.close()


async def armed_wait(queue: SqliteJobQueue, names: list[str]) -> asyncio.Task[None]:
    """Claim (nothing there), then wait in the background as an idle worker does."""
    assert await queue.claim(names=names, limit=5) == []
    task = asyncio.create_task(queue.wait(WAIT_S))
    await asyncio.sleep(0.05)  # the waiter is armed and the thread watching
    assert not task.done()
    return task


async def test_the_thread_claims_on_a_foreign_commit(
    pair: tuple[SqliteJobQueue, SqliteJobQueue],
) -> None:
    worker, producer = pair
    waiting = await armed_wait(worker, ["work"])
    t0 = time.monotonic()
    (jid,) = await producer.enqueue([NewJob(name="work")])
    await asyncio.wait_for(waiting, WAIT_S)
    assert time.monotonic() - t0 < WAIT_S / 2
    # claimed before the worker asked again: the writer thread ran its claim
    record = await producer.get(jid)
    assert (record.state, record.attempts) == ("running", 1)
    (lease,) = await worker.claim(names=["work"], limit=5)
    assert lease.job_id == jid
    assert lease.attempt == 1
    await worker.complete(lease)
    assert (await producer.get(jid)).state == "succeeded"
    assert await worker.claim(names=["work"], limit=5) == []  # taken once only


async def test_close_hands_back_what_no_claim_took(
    pair: tuple[SqliteJobQueue, SqliteJobQueue],
) -> None:
    worker, producer = pair
    waiting = await armed_wait(worker, ["work"])
    (jid,) = await producer.enqueue([NewJob(name="work")])
    await asyncio.wait_for(waiting, WAIT_S)
    assert (await producer.get(jid)).state == "running"
    await worker.close()
    record = await producer.get(jid)
    assert (record.state, record.attempts) == ("queued", 0)  # back, the attempt not counted


async def test_leases_of_names_no_longer_asked_go_back_at_the_next_wait(
    pair: tuple[SqliteJobQueue, SqliteJobQueue],
) -> None:
    worker, producer = pair
    waiting = await armed_wait(worker, ["work"])
    (jid,) = await producer.enqueue([NewJob(name="work")])
    await asyncio.wait_for(waiting, WAIT_S)
    assert await worker.claim(names=["other"], limit=5) == []  # "work" was paused meanwhile
    await worker.wait(0.01)
    record = await producer.get(jid)
    assert (record.state, record.attempts) == ("queued", 0)
    (lease,) = await worker.claim(names=["work"], limit=5)  # and claimable again
    assert lease.job_id == jid


async def test_a_job_due_later_still_wakes_the_worker(
    pair: tuple[SqliteJobQueue, SqliteJobQueue],
) -> None:
    # the prefetch finds nothing due, yet the worker must look again: its
    # next wake-up time changed
    worker, producer = pair
    waiting = await armed_wait(worker, ["work"])
    t0 = time.monotonic()
    await producer.enqueue([NewJob(name="work", run_at=time.time() + 60)])
    await asyncio.wait_for(waiting, WAIT_S)
    assert time.monotonic() - t0 < WAIT_S / 2
    due = await worker.next_due(["work"])
    assert due is not None
    assert due > time.time() + 30


async def test_a_worker_runs_every_job_of_another_producer_once(tmp_path: Path) -> None:
    runs: list[int] = []
    done = asyncio.Event()
    total = 200

    async def work(i: int) -> None:
        runs.append(i)
        if len(runs) >= total:
            done.set()

    async with (
        SqliteJobQueue(tmp_path / "jobs.db") as queue,
        SqliteJobQueue(tmp_path / "jobs.db") as producer,
    ):
        async with Worker(queue, {"work": work}, slots=4, poll_s=WAIT_S):
            for i in range(total):  # paced: the worker waits between most jobs
                await producer.enqueue([NewJob(name="work", params={"i": i})])
                if i % 4 == 0:
                    await asyncio.sleep(0.002)
            await asyncio.wait_for(done.wait(), 30)
        assert sorted(runs) == list(range(total))
        assert await producer.backlog() == {}
        assert await producer.scan("running") == []
        assert len(await producer.scan("succeeded", limit=total + 1)) == total
