"""Reliability on SQLite with real worker processes: kill -9, poison, zombies, SIGTERM, delays."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from organelle.jobs import JobSpec, JobsService
from organelle.jobs.sqlite import SqliteJobQueue

from .conftest import Procs

pytestmark = pytest.mark.timeout(90)


def states(db: Path) -> dict[str, int]:
    with sqlite3.connect(db, timeout=10) as conn:
        return dict(conn.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())


async def until(check: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def report(name: str, **figures: object) -> None:
    print(json.dumps({"test": name, **figures}))


async def service(db: Path, lease_s: float, max_attempts: int = 25) -> JobsService:
    jobs = JobsService(await SqliteJobQueue(db).open())
    jobs.register("work", JobSpec(lease_s=lease_s, max_attempts=max_attempts))
    return jobs


async def test_kill9_workers_repeatedly_loses_nothing(procs: Procs) -> None:
    rng = random.Random(7)
    jobs = await service(procs.db, lease_s=1.0)
    ids = [await jobs.enqueue("work", {"ms": rng.randint(15, 45)}) for _ in range(2000)]
    workers = [procs.spawn(), procs.spawn()]
    kills = 0
    deadline = time.monotonic() + 60
    while states(procs.db).get("succeeded", 0) < len(ids) and time.monotonic() < deadline:
        await asyncio.sleep(rng.uniform(0.15, 0.35))
        if kills < 20 and states(procs.db).get("succeeded", 0) < len(ids) - 100:
            victim = workers.pop(rng.randrange(len(workers)))
            procs.kill(victim)
            kills += 1
            workers.append(procs.spawn(wait_ready=False))
    await until(lambda: states(procs.db).get("succeeded", 0) == len(ids), 30, "all jobs")
    starts = procs.ledger.starts()
    executions = sum(starts.values())
    dup = executions - len(starts)
    report("kill9", jobs=len(ids), kills=kills, executions=executions, duplicates=dup)
    assert set(starts) == set(ids)  # every job ran; nothing lost
    assert states(procs.db) == {"succeeded": len(ids)}  # no orphaned running row, no dead
    assert kills >= 5
    assert dup <= kills * procs.slots  # only jobs in flight at a kill ran twice
    await jobs.queue.close()


async def test_poison_job_dead_after_exactly_max_attempts(procs: Procs) -> None:
    jobs = await service(procs.db, lease_s=0.4, max_attempts=3)
    jobs.register("work", JobSpec(lease_s=0.4, max_attempts=3))
    poison = await jobs.enqueue("work", {"poison": True})
    jobs.register("work", JobSpec(lease_s=0.4, max_attempts=25))
    good = [await jobs.enqueue("work", {"ms": 2}) for _ in range(300)]
    procs.spawn()
    restarts = 0
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        counts = states(procs.db)
        if counts.get("succeeded", 0) == len(good) and counts.get("dead", 0) == 1:
            break
        if procs.reap():
            restarts += 1
            procs.spawn(wait_ready=False)
        await asyncio.sleep(0.05)
    rec = await jobs.get(poison)
    report("poison", attempts=rec.attempts, restarts=restarts)
    assert rec.state == "dead"
    assert rec.attempts == 3
    assert procs.ledger.starts()[poison] == 3
    assert [e.type for e in rec.errors] == ["LeaseExpired"] * 3
    assert states(procs.db) == {"succeeded": len(good), "dead": 1}
    assert [d.id for d in await jobs.dead_letters.list()] == [poison]
    await jobs.queue.close()


async def test_zombie_past_its_lease_cannot_ack(procs: Procs) -> None:
    jobs = await service(procs.db, lease_s=0.5)
    zombie = procs.spawn()
    jid = await jobs.enqueue("work", {"ms": 600})
    await until(lambda: procs.ledger.starts()[jid] == 1, 10, "first attempt")
    procs.signal(zombie, signal.SIGSTOP)  # paused mid-job, past its lease
    live = procs.spawn()
    await until(lambda: procs.ledger.ends()[jid] == 1, 10, "live attempt")
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
    await until(lambda: states(procs.db).get("succeeded", 0) == len(due), 20, "delayed jobs")
    starts = procs.ledger.starts()
    report("delayed", jobs=len(due), executions=sum(starts.values()))
    assert starts == dict.fromkeys(due, 1)
    with sqlite3.connect(procs.db) as conn:
        for jid, started in conn.execute("SELECT id, started_at FROM jobs"):
            assert started >= due[jid] - 0.01  # never early


async def test_sigterm_under_load_loses_nothing_fails_nothing(procs: Procs) -> None:
    jobs = await service(procs.db, lease_s=5.0)
    ids = [await jobs.enqueue("work", {"ms": 30}) for _ in range(400)]
    workers = [procs.spawn(), procs.spawn()]
    await until(lambda: states(procs.db).get("succeeded", 0) >= 50, 20, "some progress")
    t0 = time.monotonic()
    for w in workers:
        assert procs.term(w) == 0
    stop_s = time.monotonic() - t0
    counts = states(procs.db)
    assert counts.get("running", 0) == 0  # the rest was handed back at once, not left leased
    procs.spawn()
    await until(lambda: states(procs.db).get("succeeded", 0) == len(ids), 30, "all jobs")
    with sqlite3.connect(procs.db) as conn:
        errors = conn.execute("SELECT count(*) FROM jobs WHERE errors IS NOT NULL").fetchone()[0]
    released = sum(int(p[2].split("=")[1]) for p in procs.ledger.lines() if p[0] == "stats")
    starts = procs.ledger.starts()
    report(
        "sigterm",
        stop_s=round(stop_s, 3),
        released=released,
        duplicates=sum(starts.values()) - len(starts),
    )
    assert set(starts) == set(ids)
    assert errors == 0  # nothing was marked failed
    assert states(procs.db) == {"succeeded": len(ids)}
    await jobs.queue.close()
