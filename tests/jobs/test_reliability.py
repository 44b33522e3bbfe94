"""Reliability with real worker processes: kill -9, poison, zombies, SIGTERM, delays.

kill -9, poison and SIGTERM run on SQLite, PostgreSQL and Redis (the same test body,
parametrized by a ``Target`` that opens the queue and counts states); the
zombie and delayed-job tests run on SQLite.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from organelle.jobs import JobQueue, JobSpec, JobsService, open_queue
from organelle.jobs.sqlite import SqliteJobQueue
from organelle.testing import eventually
from organelle.testing.servers import PostgresServer, RedisServer

from .conftest import Procs

pytestmark = pytest.mark.timeout(90)


def states(db: Path) -> dict[str, int]:
    with sqlite3.connect(db, timeout=10) as conn:
        return dict(conn.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())


@dataclass
class Target:
    """One backend under test: the queue URL the workers open, and a state count."""

    url: str
    states: Callable[[], Awaitable[dict[str, int]]]

    async def succeeded(self) -> int:
        return (await self.states()).get("succeeded", 0)


@pytest.fixture(params=["sqlite", "postgres", "redis"])
async def target(request: pytest.FixtureRequest, procs: Procs) -> AsyncIterator[Target]:
    if request.param == "sqlite":

        async def lite() -> dict[str, int]:
            return states(procs.db)

        yield Target(procs.url, lite)
        return
    if request.param == "redis":
        import redis.asyncio

        rs: RedisServer = request.getfixturevalue("redis_server")
        prefix = f"rel-{uuid.uuid4().hex[:10]}"
        procs.url = f"{rs.url}?prefix={prefix}"
        client = redis.asyncio.Redis.from_url(rs.url)
        kinds = ("queued", "failed", "running", "succeeded", "dead")

        async def red() -> dict[str, int]:
            pipe = client.pipeline(transaction=False)
            for kind in kinds:
                pipe.zcard(f"{{{prefix}}}:s:{kind}")
            counts = await pipe.execute()
            return {k: int(n) for k, n in zip(kinds, counts, strict=True) if n}

        try:
            yield Target(procs.url, red)
        finally:
            await client.aclose()
        return
    import asyncpg

    server: PostgresServer = request.getfixturevalue("postgres_server")
    table = f"jobs_{uuid.uuid4().hex[:10]}"
    procs.url = f"{server.dsn}?table={table}"
    conn = await asyncpg.connect(server.dsn)

    async def pg() -> dict[str, int]:
        try:
            rows = await conn.fetch(f"SELECT state, count(*) AS n FROM {table} GROUP BY state")  # noqa: S608
        except asyncpg.UndefinedTableError:
            return {}
        return {r["state"]: r["n"] for r in rows}

    try:
        yield Target(procs.url, pg)
    finally:
        await conn.close()


def report(name: str, **figures: object) -> None:
    print(json.dumps({"test": name, **figures}))


async def service(where: Path | str, lease_s: float, max_attempts: int = 25) -> JobsService:
    queue: JobQueue
    if isinstance(where, Path):
        queue = await SqliteJobQueue(where).open()
    else:
        queue = await open_queue(where)
    jobs = JobsService(queue)
    jobs.register("work", JobSpec(lease_s=lease_s, max_attempts=max_attempts))
    return jobs


async def test_kill9_workers_repeatedly_loses_nothing(procs: Procs, target: Target) -> None:
    rng = random.Random(7)
    jobs = await service(target.url, lease_s=1.0)
    params = [{"ms": rng.randint(15, 45)} for _ in range(2000)]
    ids = []
    for i in range(0, len(params), 500):
        ids += await jobs.enqueue_many("work", params[i : i + 500])
    workers = [procs.spawn(), procs.spawn()]
    killed: list[str] = []
    deadline = time.monotonic() + 60
    while await target.succeeded() < len(ids) and time.monotonic() < deadline:
        await asyncio.sleep(rng.uniform(0.15, 0.35))
        if len(killed) < 20 and await target.succeeded() < len(ids) - 100:
            victim = workers.pop(rng.randrange(len(workers)))
            procs.kill(victim)
            killed.append(str(victim.pid))
            workers.append(procs.spawn(wait_ready=False))
    await eventually(_all_done(target, len(ids)), timeout_s=30, interval_s=0.05)
    kills = len(killed)
    # In flight at a kill: the victim started the job and never acked it (its pid
    # is not the job's result) — running, or finished with the ack not yet committed.
    acked_by = {r.id: str(r.result) for r in await jobs.queue.scan("succeeded", limit=10_000)}
    in_flight_at_kills = len(
        {
            (p[1], p[2])
            for p in procs.ledger.lines()
            if p[0] == "start" and p[-1] in killed and acked_by.get(p[1]) != p[-1]
        }
    )
    starts = procs.ledger.starts()
    executions = sum(starts.values())
    dup = executions - len(starts)
    report(
        "kill9",
        backend=target.url.split(":")[0],
        jobs=len(ids),
        kills=kills,
        in_flight_at_kills=in_flight_at_kills,
        executions=executions,
        duplicates=dup,
    )
    assert set(starts) == set(ids)  # every job ran; nothing lost
    assert await target.states() == {"succeeded": len(ids)}  # no orphaned running row, no dead
    assert kills >= 5
    assert dup <= in_flight_at_kills  # only jobs in flight at a kill ran twice
    await jobs.queue.close()


def _all_done(target: Target, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await target.succeeded() == n

    return check


async def test_poison_job_dead_after_exactly_max_attempts(procs: Procs, target: Target) -> None:
    jobs = await service(target.url, lease_s=0.4, max_attempts=3)
    poison = await jobs.enqueue("work", {"poison": True})
    jobs.register("work", JobSpec(lease_s=0.4, max_attempts=25))
    good = await jobs.enqueue_many("work", [{"ms": 2}] * 300)
    procs.spawn()
    restarts = 0

    async def settled() -> None:
        """Every good job succeeded and the poison one is dead; else replace a crashed worker."""
        nonlocal restarts
        counts = await target.states()
        if counts.get("succeeded", 0) == len(good) and counts.get("dead", 0) == 1:
            return
        if procs.reap():
            restarts += 1
            procs.spawn(wait_ready=False)
        raise AssertionError(f"not settled yet: {counts}")

    await eventually(settled, timeout_s=40, interval_s=0.05)
    rec = await jobs.get(poison)
    report("poison", attempts=rec.attempts, restarts=restarts)
    assert rec.state == "dead"
    assert rec.attempts == 3
    assert procs.ledger.starts()[poison] == 3
    assert [e.type for e in rec.errors] == ["LeaseExpired"] * 3
    assert await target.states() == {"succeeded": len(good), "dead": 1}
    assert [d.id for d in await jobs.dead_letters.list()] == [poison]
    await jobs.queue.close()


async def test_zombie_past_its_lease_cannot_ack(procs: Procs) -> None:
    jobs = await service(procs.db, lease_s=0.5)
    zombie = procs.spawn()
    jid = await jobs.enqueue("work", {"ms": 600})
    # until first attempt
    await eventually(lambda: procs.ledger.starts()[jid] == 1, timeout_s=10, interval_s=0.05)
    procs.signal(zombie, signal.SIGSTOP)  # paused mid-job, past its lease
    live = procs.spawn()
    # until live attempt
    await eventually(lambda: procs.ledger.ends()[jid] == 1, timeout_s=10, interval_s=0.05)
    procs.signal(zombie, signal.SIGCONT)
    await asyncio.sleep(1.0)  # the zombie wakes, finishes its sleep and tries to ack
    procs.term(zombie)
    rec = await jobs.get(jid)
    stats = [p for p in procs.ledger.lines() if p[0] == "stats" and p[-1] == str(zombie.pid)]
    report("zombie", result=rec.result, attempts=rec.attempts, zombie_stats=stats)
    assert rec.state == "succeeded"
    assert rec.result == live.pid  # the live attempt decided the final state
    assert rec.attempts == 2
    assert stats[0][1] == "lost=1"  # the zombie's ack (or heartbeat) was refused
    await jobs.queue.close()


async def test_delayed_jobs_across_restart_none_missed_none_doubled(procs: Procs) -> None:
    jobs = await service(procs.db, lease_s=1.0)
    now = time.time()
    due = {
        await jobs.enqueue("work", delay_s=0.2 + i * 0.03): now + 0.2 + i * 0.03 for i in range(60)
    }
    await jobs.queue.close()  # the "backend" goes away too: a fresh connection after restart
    worker = procs.spawn()
    await asyncio.sleep(0.8)
    assert procs.term(worker) == 0
    await asyncio.sleep(0.5)  # down while more jobs come due
    procs.spawn()
    # until delayed jobs
    await eventually(
        lambda: states(procs.db).get("succeeded", 0) == len(due), timeout_s=20, interval_s=0.05
    )
    starts = procs.ledger.starts()
    report("delayed", jobs=len(due), executions=sum(starts.values()))
    assert starts == dict.fromkeys(due, 1)
    with sqlite3.connect(procs.db) as conn:
        for jid, started in conn.execute("SELECT id, started_at FROM jobs"):
            assert started >= due[jid] - 0.01  # never early


async def test_sigterm_under_load_loses_nothing_fails_nothing(procs: Procs, target: Target) -> None:
    jobs = await service(target.url, lease_s=5.0)
    ids = await jobs.enqueue_many("work", [{"ms": 30}] * 400)
    workers = [procs.spawn(), procs.spawn()]

    async def progress() -> bool:
        return await target.succeeded() >= 50

    await eventually(progress, timeout_s=20, interval_s=0.05)
    t0 = time.monotonic()
    for w in workers:
        assert procs.term(w) == 0
    stop_s = time.monotonic() - t0
    counts = await target.states()
    assert counts.get("running", 0) == 0  # the rest was handed back at once, not left leased
    procs.spawn()
    await eventually(_all_done(target, len(ids)), timeout_s=30, interval_s=0.05)
    records = await jobs.queue.scan("succeeded", limit=10_000)
    errors = sum(1 for r in records if r.errors)
    released = sum(int(p[2].split("=")[1]) for p in procs.ledger.lines() if p[0] == "stats")
    starts = procs.ledger.starts()
    report(
        "sigterm",
        backend=target.url.split(":")[0],
        stop_s=round(stop_s, 3),
        released=released,
        duplicates=sum(starts.values()) - len(starts),
    )
    assert set(starts) == set(ids)
    assert errors == 0  # nothing was marked failed
    assert await target.states() == {"succeeded": len(ids)}
    await jobs.queue.close()
