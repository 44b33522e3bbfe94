"""NATS JetStream jobs under kill -9: of a producer, of workers, of the server.

Each test starts its own ``nats-server`` (JetStream file storage, default
``sync_interval``: these are process crashes, not power loss) and its own
producer / worker processes (``_producer.py``, ``_nats_worker.py``), and
kills only those. Every wait has a deadline.

A job id in the producer's ``acked`` file was acknowledged by ``enqueue``; an
``acked`` ledger line means the worker's ``complete`` returned. What is
checked is what docs/jobs.md promises: every acknowledged job runs; a job
whose completion was acknowledged never runs again; other re-runs only for
attempts in flight at a crash.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Iterator
from pathlib import Path

import pytest

from organelle.jobs import JobQueue, JobSpec, JobsService, open_queue
from organelle.testing import eventually
from organelle.testing.servers import NatsServer

from . import conftest
from .conftest import SRC, Procs

pytestmark = pytest.mark.timeout(60)

PRODUCER = Path(__file__).with_name("_producer.py")
NATS_WORKER = Path(__file__).with_name("_nats_worker.py")
LEASE_S = (
    1.0  # the job type's lease = its consumer's ack_wait: a dead worker's job returns after it
)


@pytest.fixture
async def nats() -> AsyncIterator[NatsServer]:
    server = NatsServer()
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.close)


@pytest.fixture
def url(nats: NatsServer, procs: Procs, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh stream on ``nats``; ``procs`` spawns ``_nats_worker.py`` on it."""
    monkeypatch.setattr(conftest, "PROC", NATS_WORKER)
    procs.url = f"{nats.url}?stream=JOBS_{uuid.uuid4().hex[:10].upper()}"
    yield procs.url
    procs.close()  # the processes go before their server does


def report(name: str, **figures: object) -> None:
    print(json.dumps({"test": name, **figures}))


def spawn_producer(procs: Procs, acked: Path) -> subprocess.Popen[bytes]:
    """Start ``_producer.py``; ``procs`` owns it (killed by the fixture if the test fails)."""
    with acked.with_suffix(".err").open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, str(PRODUCER), procs.url, str(acked), str(LEASE_S)],
            env={**os.environ, "PYTHONPATH": str(SRC)},
            stderr=err,
        )
    procs.live.append(proc)
    return proc


def acked_ids(acked: Path) -> list[str]:
    """Ids the producer wrote after ``enqueue`` returned (a torn last line is not one)."""
    if not acked.exists():
        return []
    text = acked.read_text()
    return text[: text.rfind("\n") + 1].split()


async def states(queue: JobQueue, ids: Iterable[str]) -> Counter[str]:
    """State of each job's record (``missing`` if there is none)."""
    from organelle.errors import JobNotFoundError

    out: Counter[str] = Counter()
    for jid in ids:
        try:
            out[(await queue.get(jid)).state] += 1
        except JobNotFoundError:
            out["missing"] += 1
    return out


def all_succeeded(queue: JobQueue, ids: list[str]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:  # reads every record: poll it with interval_s=0.2
        return await states(queue, ids) == {"succeeded": len(ids)}

    return check


def in_flight(lines: list[list[str]], pids: Collection[str] | None = None) -> int:
    """Attempts (of ``pids``) started in ``lines`` whose completion was never acknowledged."""
    acked = {(p[1], p[2], p[3]) for p in lines if p[0] == "acked"}
    return len(
        {
            (p[1], p[2])
            for p in lines
            if p[0] == "start"
            and (pids is None or p[3] in pids)
            and (p[1], p[2], p[3]) not in acked
        }
    )


def acks(procs: Procs) -> Counter[str]:
    """Completions the queue acknowledged, per job."""
    return Counter(p[1] for p in procs.ledger.lines() if p[0] == "acked")


def acked_then_run_again(procs: Procs) -> list[str]:
    """Jobs started again after a worker's ``complete`` had returned (never allowed).

    The ledger is one ``O_APPEND`` file, so its line order is the order of the
    writes: a ``start`` after an ``acked`` line of the same job is a re-run of
    a job whose success the queue had acknowledged.
    """
    acked: set[str] = set()
    bad = []
    for kind, jid, _attempt, _pid in procs.ledger.lines():
        if kind == "acked":
            acked.add(jid)
        elif kind == "start" and jid in acked:
            bad.append(jid)
    return bad


async def test_kill9_producer_every_acked_enqueue_runs_once(
    procs: Procs, url: str, tmp_path: Path
) -> None:
    acked = tmp_path / "acked.txt"
    procs.spawn()  # a worker runs while the producer enqueues: claims race enqueues
    producer = spawn_producer(procs, acked)
    # until 300 acknowledged enqueues
    await eventually(lambda: len(acked_ids(acked)) >= 300, timeout_s=30, interval_s=0.05)
    await asyncio.sleep(random.uniform(0, 0.05))  # land anywhere inside an enqueue
    procs.kill(producer)
    ids = acked_ids(acked)
    # until every acked job to run
    await eventually(lambda: set(ids) <= set(procs.ledger.ends()), timeout_s=30, interval_s=0.05)
    queue = await open_queue(url)
    try:
        await eventually(all_succeeded(queue, ids), timeout_s=20, interval_s=0.2)
        starts = procs.ledger.starts()
        unacked_ran = set(starts) - set(ids)
        report("nats_kill9_producer", acked=len(ids), unacked_ran=len(unacked_ran))
        assert set(ids) <= set(starts)  # nothing acknowledged lost
        assert len(unacked_ran) <= 1  # only the enqueue in flight at the kill, if it got in
        assert all(n == 1 for n in starts.values()), starts.most_common(3)  # no worker died
        assert {(await queue.get(jid)).attempts for jid in ids} == {1}
        assert acks(procs) == starts  # every run's completion was acknowledged once
    finally:
        await queue.close()


async def test_kill9_workers_repeatedly_loses_nothing(procs: Procs, url: str) -> None:
    rng = random.Random(11)
    jobs = JobsService(await open_queue(url))
    jobs.register("work", JobSpec(lease_s=LEASE_S, max_attempts=25))
    try:
        ids = await jobs.enqueue_many("work", [{"ms": rng.randint(15, 45)} for _ in range(2000)])
        workers = [procs.spawn(), procs.spawn()]
        killed: list[str] = []
        deadline = time.monotonic() + 30
        while len(procs.ledger.ends()) < len(ids) - 100 and time.monotonic() < deadline:
            await asyncio.sleep(rng.uniform(0.15, 0.35))
            if len(killed) < 20:
                victim = workers.pop(rng.randrange(len(workers)))
                procs.kill(victim)
                killed.append(str(victim.pid))
                workers.append(procs.spawn(wait_ready=False))
        # until every job to run
        await eventually(
            lambda: set(ids) <= set(procs.ledger.ends()), timeout_s=30, interval_s=0.05
        )
        await eventually(all_succeeded(jobs.queue, ids), timeout_s=20, interval_s=0.2)
        # In flight at a kill: the victim started the attempt and never saw its ack return.
        in_flight_at_kills = in_flight(procs.ledger.lines(), killed)
        starts = procs.ledger.starts()
        dup = sum(starts.values()) - len(starts)
        report(
            "nats_kill9_workers",
            jobs=len(ids),
            kills=len(killed),
            in_flight_at_kills=in_flight_at_kills,
            duplicates=dup,
        )
        assert set(starts) == set(ids)  # every job ran; nothing lost
        assert len(killed) >= 5
        assert dup <= in_flight_at_kills  # only jobs in flight at a kill ran again
        assert acked_then_run_again(procs) == []  # an acked completion is never re-run
        assert max(acks(procs).values()) == 1  # and never acked twice
        assert await jobs.queue.scan("running") == []
        assert await jobs.queue.scan("dead") == []
    finally:
        await jobs.queue.close()


async def test_kill9_server_acked_jobs_survive_and_clients_reconnect(
    procs: Procs, url: str, nats: NatsServer, tmp_path: Path
) -> None:
    acked = tmp_path / "acked.txt"
    # Two slots: the worker runs behind the producer, so the crash hits acked jobs
    # still waiting in the stream (a worker with ten keeps up and leaves none).
    procs.slots = 2
    worker = procs.spawn()
    producer = spawn_producer(procs, acked)

    def waiting() -> int:
        return len(set(acked_ids(acked)) - set(procs.ledger.ends()))

    # until progress before the crash, with acked jobs waiting
    await eventually(
        lambda: (
            len(acked_ids(acked)) >= 300 and len(procs.ledger.ends()) >= 100 and waiting() >= 20
        ),
        timeout_s=30,
        interval_s=0.05,
    )
    nats.kill()
    acked_before = acked_ids(acked)
    at_crash = len(procs.ledger.lines())  # no attempt starts while the server is down
    queued_at_crash = set(acked_before) - set(procs.ledger.ends())
    await asyncio.sleep(0.5)  # down while both clients keep trying
    t0 = time.monotonic()
    await asyncio.to_thread(nats.restart)  # same port, same store dir
    restart_s = time.monotonic() - t0
    # Neither process is restarted: both must reconnect on their own.
    # until an enqueue to succeed
    await eventually(
        lambda: len(acked_ids(acked)) > len(acked_before), timeout_s=20, interval_s=0.05
    )
    resumed_s = time.monotonic() - t0
    # until 200 more enqueues
    await eventually(
        lambda: len(acked_ids(acked)) >= len(acked_before) + 200, timeout_s=20, interval_s=0.05
    )
    procs.kill(producer)
    ids = acked_ids(acked)
    # until every acked job to run
    await eventually(lambda: set(ids) <= set(procs.ledger.ends()), timeout_s=30, interval_s=0.05)
    queue = await open_queue(url)
    try:
        await eventually(all_succeeded(queue, ids), timeout_s=20, interval_s=0.2)
        starts = procs.ledger.starts()
        dup = sum(starts.values()) - len(starts)
        # Attempts running at the crash whose ack did not make it: they may run again.
        in_flight_at_crash = in_flight(procs.ledger.lines()[:at_crash])
        errors = acked.with_suffix(".err").read_text().count("enqueue ")
        report(
            "nats_kill9_server",
            acked_before_crash=len(acked_before),
            queued_at_crash=len(queued_at_crash),
            acked=len(ids),
            server_restart_s=round(restart_s, 2),
            producer_resumed_s=round(resumed_s, 2),
            failed_enqueues=errors,
            in_flight_at_crash=in_flight_at_crash,
            duplicates=dup,
        )
        assert len(queued_at_crash) >= 10  # the crash did hit acked jobs still waiting
        assert set(ids) <= set(starts)  # nothing acknowledged lost, before or after the crash
        assert acked_then_run_again(procs) == []  # no acked completion lost in the crash
        assert max(acks(procs).values()) == 1
        assert dup <= in_flight_at_crash
        assert worker.poll() is None  # the worker was never restarted
        assert {p[3] for p in procs.ledger.lines()} == {str(worker.pid)}
    finally:
        await queue.close()
