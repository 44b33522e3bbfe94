"""One behaviour suite for every ``JobQueue`` backend: memory, SQLite, PostgreSQL, NATS, Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.contract.jobs_fixtures import (
    make_nats_queue,
    make_postgres_queue,
    make_redis_queue,
    make_sqlite_queue,
)

from organelle.errors import JobNotFoundError, LeaseLostError, ValidationError
from organelle.jobs import (
    AttemptError,
    Backoff,
    JobQueue,
    JobSpec,
    JobsService,
    Lease,
    NewJob,
    Retry,
)
from organelle.testing import eventually
from organelle.testing.servers import NatsServer, PostgresServer, RedisServer

pytestmark = pytest.mark.timeout(30)

LEASE = 0.5  # the short lease every lease test uses (NATS: the consumer's ack_wait)


def job(name: str = "work", **kw: Any) -> NewJob:
    kw.setdefault("lease_s", LEASE)
    return NewJob(name=name, **kw)


def err(attempt: int, message: str = "boom") -> AttemptError:
    return AttemptError(attempt=attempt, type="RuntimeError", message=message, traceback="tb")


async def claim_one(q: JobQueue, names: tuple[str, ...] = ("work",), wait_s: float = 5.0) -> Any:
    """Claim until one lease comes back (NATS redelivery and delays need a moment)."""

    async def claimed() -> Any:
        got = await q.claim(names=names, limit=1)
        assert got, "nothing to claim"
        return got[0]

    return await eventually(claimed, timeout_s=wait_s, interval_s=0.05)


class JobQueueContract:
    """The contract; subclasses only say how to open a fresh, isolated queue."""

    async def open(self, **options: Any) -> JobQueue:
        raise NotImplementedError

    @pytest.fixture
    async def queue(self) -> AsyncIterator[JobQueue]:
        q = await self.open()
        yield q
        await q.close()

    async def test_enqueue_get_roundtrip(self, queue: JobQueue) -> None:
        (jid,) = await queue.enqueue([job(params={"a": [1, "x"], "b": None})])
        rec = await queue.get(jid)
        assert rec.name == "work"
        assert rec.params == {"a": [1, "x"], "b": None}
        assert rec.state == "queued"
        assert rec.attempts == 0
        with pytest.raises(JobNotFoundError) as info:
            await queue.get("nope")
        assert info.value.code == "organelle.jobs.not_found"

    async def test_idempotency_key_and_id_dedup(self, queue: JobQueue) -> None:
        # a long lease: a slow round here must not read a redelivery as a duplicate
        long = 30.0
        a = await queue.enqueue([job(idempotency_key="k1", params={"n": 1}, lease_s=long)])
        b = await queue.enqueue([job(idempotency_key="k1", params={"n": 2}, lease_s=long)])
        assert a == b
        c = await queue.enqueue([job(id="fixed-1", lease_s=long), job(id="fixed-1", lease_s=long)])
        assert c == ["fixed-1", "fixed-1"]
        claimed = []
        while lease := await queue.claim(names=["work"], limit=10):
            claimed += lease
            if len(claimed) >= 3:
                break
        await asyncio.sleep(0.2)
        claimed += await queue.claim(names=["work"], limit=10)
        assert sorted(lease.job_id for lease in claimed) == sorted([a[0], "fixed-1"])

    async def test_concurrent_enqueues_and_completes_stay_exact(self, queue: JobQueue) -> None:
        # Many producers at once (backends may batch them): one job per key,
        # every caller gets that job's id, and each completion lands on its own job.
        same = await asyncio.gather(
            *(queue.enqueue([job(idempotency_key="burst", params={"i": i})]) for i in range(20))
        )
        assert len({ids[0] for ids in same}) == 1
        own = await asyncio.gather(*(queue.enqueue([job(params={"i": i})]) for i in range(20)))
        expected = {ids[0] for ids in own} | {same[0][0]}
        assert len(expected) == 21
        leases: list[Lease] = []
        for _ in range(50):  # bounded
            leases += await queue.claim(names=["work"], limit=50)
            if len(leases) >= 21:
                break
        assert {lease.job_id for lease in leases} == expected
        await asyncio.gather(*(queue.complete(lease, result=lease.job_id) for lease in leases))
        for lease in leases:
            rec = await queue.get(lease.job_id)
            assert (rec.state, rec.result) == ("succeeded", lease.job_id)

    async def test_claim_complete(self, queue: JobQueue) -> None:
        (jid,) = await queue.enqueue([job(params={"x": 1})])
        lease = await claim_one(queue)
        assert (lease.job_id, lease.attempt, lease.params) == (jid, 1, {"x": 1})
        assert (await queue.get(jid)).state == "running"
        await queue.complete(lease, {"ok": True})
        rec = await queue.get(jid)
        assert rec.state == "succeeded"
        assert rec.result == {"ok": True}
        assert await queue.claim(names=["work"], limit=5) == []

    async def test_names_filter(self, queue: JobQueue) -> None:
        await queue.enqueue([job("other")])
        assert await queue.claim(names=["work"], limit=5) == []
        lease = await claim_one(queue, ("other",))
        assert lease.name == "other"

    async def test_priority_first(self, queue: JobQueue) -> None:
        if not queue.supports_priority:
            pytest.skip("backend without priorities")
        await queue.enqueue([job(params={"p": 0}), job(params={"p": -5}, priority=-5)])
        await queue.enqueue([job(params={"p": 9}, priority=9)])
        order = [(await claim_one(queue)).params["p"] for _ in range(3)]
        assert order == [9, 0, -5]

    async def test_priority_bands_interleave_names(self, queue: JobQueue) -> None:
        await queue.enqueue([job("other", params={"p": 0}), job(params={"p": -20}, priority=-20)])
        await queue.enqueue(
            [job("other", params={"p": 50}, priority=50), job(params={"p": 3}, priority=3)]
        )
        got = [await queue.claim(names=["work", "other"], limit=1) for _ in range(4)]
        assert [lease[0].params["p"] for lease in got] == [50, 3, 0, -20]

    async def test_jobs_due_later_do_not_hide_due_ones(self, queue: JobQueue) -> None:
        if not queue.supports_priority:
            pytest.skip("backend without priorities")
        later = time.time() + 3600
        # Waiting for later at every priority, around and between the due ones.
        await queue.enqueue(
            [
                job(params={"p": "later"}, run_at=later - i, priority=p)
                for i, p in enumerate((7, 0, -3, -9) * 5)
            ]
        )
        await queue.enqueue([job(params={"p": -3}, priority=-3), job(params={"p": 0})])
        got = await queue.claim(names=["work"], limit=10)
        assert [lease.params["p"] for lease in got] == [0, -3]
        assert await queue.claim(names=["work"], limit=10) == []
        for lease in got:  # a running job's lease expiry would count as due
            await queue.complete(lease)
        due = await queue.next_due(["work"])
        assert due is not None
        assert abs(due - (later - 19)) < 1  # the earliest of the later ones, at any priority

    async def test_lease_follows_each_job(self, queue: JobQueue) -> None:
        (short,) = await queue.enqueue([job("short", lease_s=0.3, max_attempts=5)])
        await queue.enqueue([job("long", lease_s=5.0)])
        first = await claim_one(queue, ("short",))
        long = await claim_one(queue, ("long",))
        assert first.lease_s <= 0.3
        assert long.lease_s <= 5.0  # NATS: capped by the consumer's ack_wait
        t0 = time.monotonic()
        again = await claim_one(queue, ("short",), wait_s=3.0)
        assert again.job_id == short
        assert again.attempt == 2
        assert time.monotonic() - t0 < 2.0  # back after its own lease, not a queue-wide one
        assert await queue.heartbeat([long]) == []
        await queue.complete(again)

    async def test_meta_travels_with_the_job(self, queue: JobQueue) -> None:
        tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        (jid,) = await queue.enqueue([job(meta={"traceparent": tp})])
        assert (await queue.get(jid)).meta == {"traceparent": tp}
        lease = await claim_one(queue)
        assert lease.meta == {"traceparent": tp}
        await queue.complete(lease)

    async def test_backlog_counts_due_jobs_per_name(self, queue: JobQueue) -> None:
        await queue.enqueue([job(), job(), job("other"), job(run_at=time.time() + 60)])

        async def counted() -> dict[str, int]:
            depth = await queue.backlog()
            assert depth.get("work", 0) >= 2  # NATS also counts the delayed one until first seen
            assert depth.get("other") == 1
            return depth

        await eventually(counted, interval_s=0.05)
        assert (await queue.backlog(["other"])) == {"other": 1}
        lease = await claim_one(queue, ("other",))
        assert (await queue.backlog(["other"])).get("other", 0) == 0
        await queue.complete(lease)

    async def test_retention_deletes_succeeded_keeps_dead(self) -> None:
        queue = await self.open(retention_s=1.0)
        try:
            (done,) = await queue.enqueue([job(idempotency_key="once")])
            (dead,) = await queue.enqueue([job(max_attempts=1)])
            for _ in range(2):
                lease = await claim_one(queue)
                if lease.job_id == done:
                    await queue.complete(lease)
                else:
                    await queue.fail(lease, err(1), retry_at=None)

            async def swept() -> None:
                await queue.claim(names=["work"], limit=1)  # SQL backends sweep on claims
                try:
                    await queue.get(done)
                except JobNotFoundError:
                    return
                raise AssertionError(f"{done} outlived its retention")

            await eventually(swept, timeout_s=6, interval_s=0.1)
            with pytest.raises(JobNotFoundError):
                await queue.get(done)
            assert (await queue.get(dead)).state == "dead"
            # the idempotency key went with the record: the key enqueues anew
            assert await queue.enqueue([job(idempotency_key="once")]) != [done]
        finally:
            await queue.close()

    async def test_delayed_job_waits(self, queue: JobQueue) -> None:
        (jid,) = await queue.enqueue([job(run_at=time.time() + 0.6)])
        assert (await queue.get(jid)).state == "scheduled"
        assert await queue.claim(names=["work"], limit=1) == []
        due = await queue.next_due(["work"])
        assert due is not None
        assert due <= time.time() + 0.7
        t0 = time.time()
        lease = await claim_one(queue)
        assert lease.job_id == jid
        assert time.time() - t0 >= 0.3

    async def test_fail_retry_then_dead_keeps_every_error(self, queue: JobQueue) -> None:
        (jid,) = await queue.enqueue([job(max_attempts=2)])
        lease = await claim_one(queue)
        state = await queue.fail(lease, err(1, "first"), retry_at=time.time())
        assert state == "failed"
        lease2 = await claim_one(queue)
        assert (lease2.job_id, lease2.attempt) == (jid, 2)
        assert await queue.fail(lease2, err(2, "second"), retry_at=None) == "dead"
        rec = await queue.get(jid)
        assert rec.state == "dead"
        assert [e.message for e in rec.errors] == ["first", "second"]
        assert [r.id for r in await queue.scan("dead")] == [jid]
        await queue.requeue(jid)
        lease3 = await claim_one(queue)
        assert (lease3.job_id, lease3.attempt) == (jid, 1)
        await queue.complete(lease3)
        assert await queue.purge([jid]) == 1
        with pytest.raises(JobNotFoundError):
            await queue.get(jid)

    async def test_stale_lease_is_fenced(self, queue: JobQueue) -> None:
        (jid,) = await queue.enqueue([job(max_attempts=5)])
        zombie = await claim_one(queue)
        live = await claim_one(queue, wait_s=LEASE + 5)  # once the zombie's lease expired
        assert live.job_id == jid
        assert live.attempt == 2
        assert live.token != zombie.token
        with pytest.raises(LeaseLostError) as info:
            await queue.complete(zombie, "late")
        assert info.value.code == "organelle.lease_lost"
        with pytest.raises(LeaseLostError):
            await queue.fail(zombie, err(1), retry_at=None)
        assert await queue.heartbeat([zombie]) == [zombie]
        await queue.complete(live, "live")
        rec = await queue.get(jid)
        assert (rec.state, rec.result) == ("succeeded", "live")
        assert rec.errors[0].type == "LeaseExpired"

    async def test_heartbeat_keeps_the_lease(self, queue: JobQueue) -> None:
        await queue.enqueue([job()])
        lease = await claim_one(queue)
        for _ in range(4):
            await asyncio.sleep(LEASE / 3)
            assert await queue.heartbeat([lease]) == []
        assert await queue.claim(names=["work"], limit=1) == []
        await queue.complete(lease)

    async def test_release_returns_at_once_without_counting(self, queue: JobQueue) -> None:
        (jid,) = await queue.enqueue([job()])
        lease = await claim_one(queue)
        await queue.release([lease])
        again = await claim_one(queue, wait_s=1.0)
        assert again.job_id == jid
        assert again.attempt == 1
        with pytest.raises(LeaseLostError):
            await queue.complete(lease)
        await queue.complete(again)

    async def test_lost_lease_on_last_attempt_is_dead(self, queue: JobQueue) -> None:
        (jid,) = await queue.enqueue([job(max_attempts=1)])
        await claim_one(queue)

        async def dead() -> None:
            if claimed := await queue.claim(names=["work"], limit=1):
                pytest.fail(f"claimed again after its last attempt: {claimed}")  # no retry
            assert (await queue.get(jid)).state == "dead"

        await eventually(dead, timeout_s=LEASE + 5, interval_s=0.05)
        rec = await queue.get(jid)
        assert rec.state == "dead"
        assert rec.attempts == 1
        assert [e.type for e in rec.errors] == ["LeaseExpired"]

    # -- through the service and a worker ------------------------------------

    async def test_service_worker_retry_and_dead_letters(self, queue: JobQueue) -> None:
        jobs = JobsService(queue)
        fast = Backoff(base_s=0.0, jitter=0.0)
        jobs.register("ok", JobSpec(lease_s=LEASE))
        jobs.register("flaky", JobSpec(max_attempts=3, backoff=fast, lease_s=LEASE))
        jobs.register("bad", JobSpec(max_attempts=2, backoff=fast, lease_s=LEASE))
        calls: dict[str, int] = {"flaky": 0, "bad": 0}

        async def ok(n: int) -> int:
            return n * 2

        async def flaky() -> str:
            calls["flaky"] += 1
            if calls["flaky"] < 3:
                raise Retry(delay_s=0)
            return "done"

        async def bad() -> None:
            calls["bad"] += 1
            raise ValueError("always")

        ids = [await jobs.enqueue("ok", {"n": i}) for i in range(5)]
        fid = await jobs.enqueue("flaky")
        bid = await jobs.enqueue("bad")
        worker = jobs.worker({"ok": ok, "flaky": flaky, "bad": bad}, slots=4)
        await worker.drain(timeout_s=20)
        assert [(await jobs.get(i)).result for i in ids] == [0, 2, 4, 6, 8]
        assert (await jobs.get(fid)).state == "succeeded"
        assert calls == {"flaky": 3, "bad": 2}
        dead = await jobs.dead_letters.list()
        assert [d.id for d in dead] == [bid]
        rec = await jobs.dead_letters.get(bid)
        assert [e.type for e in rec.errors] == ["ValueError", "ValueError"]
        assert "always" in rec.errors[-1].traceback
        await jobs.dead_letters.retry(bid)
        await worker.drain(timeout_s=20)
        assert calls["bad"] == 4
        assert [d.state for d in await jobs.dead_letters.list()] == ["dead"], await jobs.get(bid)
        assert await jobs.dead_letters.purge() == 1
        assert await jobs.dead_letters.list() == []

    async def test_enqueue_validation(self, queue: JobQueue) -> None:
        jobs = JobsService(queue)

        def check(params: dict[str, Any]) -> dict[str, Any]:
            if not isinstance(params.get("n"), int):
                raise ValidationError("n must be an int", errors=[{"field": "n", "message": "int"}])
            return params

        jobs.register("typed", validator=check)
        with pytest.raises(ValidationError):
            await jobs.enqueue("typed", {"n": "x"})
        with pytest.raises(ValidationError):
            await jobs.enqueue("untyped", {"x": object()})
        assert await jobs.enqueue("typed", {"n": 1}, idempotency_key="i") == await jobs.enqueue(
            "typed", {"n": 1}, idempotency_key="i"
        )


class TestMemory(JobQueueContract):
    async def open(self, **options: Any) -> JobQueue:
        from organelle.jobs.memory import MemoryJobQueue

        return await MemoryJobQueue(**options).open()


class TestSqlite(JobQueueContract):
    @pytest.fixture(autouse=True)
    def _dir(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path

    async def open(self, **options: Any) -> JobQueue:
        return await make_sqlite_queue(self.tmp_path / "jobs.db", **options)


class TestPostgres(JobQueueContract):
    @pytest.fixture(autouse=True)
    def _server(self, postgres_server: PostgresServer) -> None:
        self.server = postgres_server

    async def open(self, **options: Any) -> JobQueue:
        return await make_postgres_queue(self.server, **options)


class TestNats(JobQueueContract):
    @pytest.fixture(autouse=True)
    def _server(self, nats_server: NatsServer) -> None:
        self.server = nats_server

    async def open(self, **options: Any) -> JobQueue:
        options.setdefault("ack_wait_s", LEASE)
        return await make_nats_queue(self.server, **options)


class TestRedis(JobQueueContract):
    @pytest.fixture(autouse=True)
    def _server(self, redis_server: RedisServer) -> None:
        self.server = redis_server

    async def open(self, **options: Any) -> JobQueue:
        return await make_redis_queue(self.server, **options)
