"""10,000 keyed events, each appended twice, consumed by a process SIGKILLed five times.

The producer (this test process) appends every event twice, as a producer
that retries after a lost acknowledgement would: the same ``@event`` key
gives the same event id. The consumer process (``_apps.py consumer``) counts
each event with ``self.store.incr`` in an idempotent ``@consume`` handler
(the default): the inbox check, the handler's increment and the inbox row
are one Store transaction, and the group's position moves after it. The
consumer is killed with SIGKILL at five random moments (when the count
passes random marks) and restarted; the count must end at exactly 10,000.

Runs with the stream log on SQLite and on NATS JetStream; the Store is an
SQLite file in both (the inbox needs Store transactions: NATS KV has none,
so there a crash between the handler and the inbox row would count twice).
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from organelle import Kernel
from organelle.storage import Store, open_store
from organelle.testing import eventually
from organelle.testing.servers import NatsServer, shared_nats

from ._apps import STREAM, Tick
from .conftest import Child, Children

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

EVENTS = 10_000
KILLS = 5
PRODUCERS = 32  # appends in flight


@pytest.fixture(scope="module")
def nats_server() -> Iterator[NatsServer]:
    with shared_nats() as server:
        yield server


@pytest.fixture(params=["sqlite", "nats"])
def streams_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/streams.db"
    server: NatsServer = request.getfixturevalue("nats_server")
    return f"{server.url}?prefix=REL{uuid.uuid4().hex[:8].upper()}"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with await open_store(f"sqlite:///{tmp_path}/store.db") as opened:
        yield opened


def kernel_config(tmp_path: Path, streams_url: str, storage: str) -> dict[str, Any]:
    return {
        "kernel": {
            "storage": storage,
            "streams": streams_url,
            "jobs": f"sqlite:///{tmp_path}/jobs.db",
            "stream_specs": {STREAM: {"partitions": 4}},
        }
    }


async def produce_twice(kernel: Kernel) -> None:
    """Append every event, then append it again (a retry: same key, same id)."""

    async def producer(w: int) -> None:
        for n in range(w, EVENTS, PRODUCERS):
            tick = Tick(n=n)
            await kernel.append(STREAM, tick, key=str(n))
            await kernel.append(STREAM, tick, key=str(n))

    await asyncio.gather(*(producer(w) for w in range(PRODUCERS)))


async def test_each_event_counts_once_across_five_kills(
    tmp_path: Path, streams_url: str, store: Store, children: Children
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    marks = sorted(rng.sample(range(500, EVENTS - 500), KILLS))
    consumer_config = kernel_config(tmp_path, streams_url, f"sqlite:///{tmp_path}/store.db")
    producer_config = kernel_config(tmp_path, streams_url, "memory://")
    started = time.monotonic()

    async def count() -> int:
        entry = await store.get("counter.count")
        return 0 if entry is None else int(entry.value)

    async def at_least(mark: int) -> bool:
        return await count() >= mark

    async with Kernel([], producer_config) as kernel:
        consumer: Child = children.spawn("consumer", consumer_config)
        producing = asyncio.create_task(produce_twice(kernel))
        try:
            killed_at: list[int] = []
            for mark in marks:
                await consumer.wait_for("ready")
                await eventually(functools.partial(at_least, mark), timeout_s=30)
                await asyncio.sleep(rng.uniform(0, 0.05))  # a random moment past the mark
                children.kill(consumer)
                killed_at.append(await count())
                consumer = children.spawn("consumer", consumer_config)
            await asyncio.wait_for(producing, 30)
            produced_s = time.monotonic() - started

            async def caught_up() -> bool:
                info = await kernel.streams.info(STREAM)
                lags = [g.lag for g in info.groups if g.group == "counter"]
                return len(lags) == 4 and not any(lags)

            await eventually(caught_up, timeout_s=40, interval_s=0.05)
            total = await count()
        finally:
            producing.cancel()
            await asyncio.gather(producing, return_exceptions=True)
    inbox = await store.scan("_inbox.", limit=EVENTS + 10)
    print(
        json.dumps(
            {
                "test": "consume_exactly_once",
                "streams": streams_url.split(":", 1)[0],
                "seed": seed,
                "killed_at_count": killed_at,
                "produced_s": round(produced_s, 2),
                "total_s": round(time.monotonic() - started, 2),
                "count": total,
            }
        )
    )
    assert total == EVENTS, f"seed {seed}: counted {total}, killed at {killed_at}"
    assert len(inbox.items) == EVENTS
