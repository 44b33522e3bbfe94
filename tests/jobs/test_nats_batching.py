"""The batched paths of the NATS job queue, against a real ``nats-server``.

What the contract suite does not reach: an enqueue that died between its record
and its message (its retry must publish it), a batch fetched ahead (claimed
later, given back at close), and a priority band that appears while a claim
skips the stream survey.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from organelle.jobs import Lease, NewJob, _nats_base
from organelle.jobs.nats import NatsJobQueue
from organelle.testing.servers import NatsServer, shared_nats

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def nats_server() -> Iterator[NatsServer]:
    with shared_nats() as server:
        yield server


@pytest.fixture
def stream() -> str:
    return f"JOBS_{uuid.uuid4().hex[:10].upper()}"


@pytest.fixture
async def queue(nats_server: NatsServer, stream: str) -> AsyncIterator[NatsJobQueue]:
    q = await NatsJobQueue([nats_server.url], stream=stream).open()
    yield q
    await q.close()


def job(name: str = "work", **kw: Any) -> NewJob:
    return NewJob(name=name, lease_s=kw.pop("lease_s", 30.0), **kw)


class DiesBeforePublish(NatsJobQueue):
    """Its first enqueue stops after writing the record, as a producer killed there would."""

    died = False

    async def _publish(self, rec: dict[str, Any], rev: int, msg_id: str) -> None:
        if not self.died:
            self.died = True
            raise ConnectionError("producer died between record and message")
        await super()._publish(rec, rev, msg_id)


async def claim_all(
    queue: NatsJobQueue, want: int, *, names: list[str] | None = None
) -> list[Lease]:
    leases: list[Lease] = []
    for _ in range(20):  # bounded
        leases += await queue.claim(names=names or ["work"], limit=want - len(leases))
        if len(leases) >= want:
            break
    return leases


async def test_retry_of_an_enqueue_that_died_before_its_message_runs_the_job(
    nats_server: NatsServer, stream: str, queue: NatsJobQueue
) -> None:
    producer = await DiesBeforePublish([nats_server.url], stream=stream).open()
    try:
        with pytest.raises(ConnectionError):
            await producer.enqueue([job(id="j-1")])
        assert (await queue.get("j-1")).state == "queued"  # a record without a message
        assert await queue.claim(names=["work"], limit=5) == []
        assert await producer.enqueue([job(id="j-1")]) == ["j-1"]  # the retry publishes it
        assert await producer.enqueue([job(id="j-1")]) == ["j-1"]  # a duplicate: dropped
    finally:
        await producer.close()
    (lease,) = await claim_all(queue, 1)
    assert (lease.job_id, lease.attempt) == ("j-1", 1)
    await queue.complete(lease)
    assert (await queue.get("j-1")).state == "succeeded"
    assert await queue.claim(names=["work"], limit=5) == []


async def test_a_batch_fetched_ahead_is_claimed_next_and_given_back_at_close(
    nats_server: NatsServer, stream: str, queue: NatsJobQueue
) -> None:
    ids = await queue.enqueue([job(params={"i": i}) for i in range(20)])
    worker = await NatsJobQueue([nats_server.url], stream=stream).open()
    other = await NatsJobQueue([nats_server.url], stream=stream).open()
    try:
        first = await worker.claim(names=["work"], limit=5)  # full: 5 more fetched ahead
        assert len(first) == 5
        rest = await claim_all(other, 15)
        assert len(rest) == 10  # the 5 held ahead by `worker` are not offered to `other`
        second = await worker.claim(names=["work"], limit=5)  # from the batch fetched ahead
        assert len(second) == 5
        for lease in first + second + rest:
            await (worker if lease in first + second else other).complete(lease)
        more = await queue.enqueue([job(params={"i": i}) for i in range(10)])
        assert len(await worker.claim(names=["work"], limit=5)) == 5  # and 5 fetched ahead
    finally:
        await worker.close()  # gives back what it fetched ahead
    back = await claim_all(other, 5)
    await other.close()
    assert len(back) == 5  # at once, not after the consumer's ack_wait (30 s)
    done = {lease.job_id for lease in first + second + rest}
    assert done == set(ids)
    assert {lease.job_id for lease in back} < set(more)


async def test_a_band_published_after_the_survey_is_served_first(queue: NatsJobQueue) -> None:
    assert await queue.claim(names=["work"], limit=1) == []  # surveys: no band yet
    (low,) = await queue.enqueue([job()])
    (high,) = await queue.enqueue([job(priority=10)])
    leases = await claim_all(queue, 2)
    assert [lease.job_id for lease in leases] == [high, low]


async def test_a_waiting_worker_elsewhere_is_woken_by_each_enqueue(
    nats_server: NatsServer, stream: str, queue: NatsJobQueue
) -> None:
    worker = await NatsJobQueue([nats_server.url], stream=stream).open()
    try:
        assert await worker.claim(names=["work"], limit=1) == []  # now watching
        await worker._nc.flush()
        for _ in range(3):  # each enqueue wakes it well before its 5 s wait ends
            started = time.monotonic()
            waiting = asyncio.ensure_future(worker.wait(5.0))
            await asyncio.sleep(0.01)
            await queue.enqueue([job()])
            await asyncio.wait_for(waiting, 2.0)
            assert time.monotonic() - started < 1.0
        assert len(await claim_all(worker, 3)) == 3
    finally:
        await worker.close()


async def test_a_wake_asked_for_within_the_gap_goes_out_at_its_end(
    nats_server: NatsServer, stream: str, queue: NatsJobQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker woken by the first wake may look before the second job lands."""
    monkeypatch.setattr(_nats_base, "WAKE_GAP_S", 0.3)  # wide enough for a loaded machine
    worker = await NatsJobQueue([nats_server.url], stream=stream).open()
    try:
        await worker.claim(names=["work"], limit=1)
        await worker._nc.flush()
        subject = queue._subject("work")
        await queue._signal(subject)
        await worker.wait(2.0)  # the first wake
        await queue._signal(subject)  # within WAKE_GAP_S of the first: held back ...
        assert subject in queue._trailing
        started = time.monotonic()
        await worker.wait(5.0)  # ... and sent at the gap's end
        assert time.monotonic() - started < 2.0  # not the 5 s wait: the held wake came
        assert not queue._trailing
    finally:
        await worker.close()
