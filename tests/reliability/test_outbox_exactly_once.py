"""2,000 outbox transactions, the producing process SIGKILLed five times.

The producer (``_apps.py producer``) commits transaction ``i`` — a Store row
``row.<i>`` holding its pid, its progress and one keyed event (``tx.append``
to a stream, or ``tx.emit`` over NATS) — then ``i + 1``, reading where it got
to from the Store when restarted. Every 7th transaction's first attempt is
rolled back on purpose, after its event was given. The receiver (a kernel in
this test process, its own Store) handles each event idempotently and
records how often it counted each ``i`` and which pid sent it.

Checked: every committed transaction's event counted exactly once, and sent
by the process that committed it (not a rolled-back or killed attempt: those
carry another pid); nothing else counted; no outbox row left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from organelle import Kernel
from organelle.kernel._outbox import PREFIX
from organelle.storage import open_store
from organelle.testing import eventually
from organelle.testing.servers import NatsServer, shared_nats

from ._apps import STREAM, Receiver
from .conftest import Child, Children

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

TRANSACTIONS = 2_000
KILLS = 5


@pytest.fixture(scope="module")
def nats_server() -> Iterator[NatsServer]:
    with shared_nats() as server:
        yield server


@pytest.fixture(params=["append-sqlite", "emit-nats"])
def how(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def configs(tmp_path: Path, how: str, nats: NatsServer | None) -> tuple[dict[str, Any], ...]:
    base = {
        "streams": f"sqlite:///{tmp_path}/streams.db",
        "jobs": f"sqlite:///{tmp_path}/jobs.db",
        "stream_specs": {STREAM: {"partitions": 4}},
        "outbox_interval_s": 0.2,
    }
    if nats is not None:
        base["transport"] = nats.url
    producer = {"kernel": {**base, "storage": f"sqlite:///{tmp_path}/producer.db"}}
    receiver = {"kernel": {**base, "storage": f"sqlite:///{tmp_path}/receiver.db"}}
    return producer, receiver


async def test_each_committed_transaction_is_delivered_once(
    tmp_path: Path, how: str, children: Children, request: pytest.FixtureRequest
) -> None:
    nats: NatsServer | None = request.getfixturevalue("nats_server") if "nats" in how else None
    kind = how.split("-", 1)[0]
    producer_config, receiver_config = configs(tmp_path, how, nats)
    if nats is not None:  # a subject prefix of this test's own on the shared server
        prefix = f"rel{uuid.uuid4().hex[:8]}"
        for cfg in (producer_config, receiver_config):
            cfg["kernel"]["transport_options"] = {"prefix": prefix}
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    marks = sorted(rng.sample(range(100, TRANSACTIONS - 100), KILLS))
    started = time.monotonic()
    args = (str(TRANSACTIONS), kind)
    async with (
        await open_store(producer_config["kernel"]["storage"]) as produced,
        Kernel([Receiver], receiver_config) as kernel,
    ):
        received = kernel.store_for("receiver")

        async def progress() -> int:
            entry = await produced.get("producer.progress")
            return 0 if entry is None else int(entry.value)

        async def at_least(mark: int) -> bool:
            return await progress() >= mark

        producer: Child = children.spawn("producer", producer_config, *args)
        killed_at: list[int] = []
        for mark in marks:
            await producer.wait_for("ready")
            await eventually(functools.partial(at_least, mark), timeout_s=30)
            await asyncio.sleep(rng.uniform(0, 0.02))  # a random moment past the mark
            children.kill(producer)
            killed_at.append(await progress())
            producer = children.spawn("producer", producer_config, *args)
        await producer.wait_for("done", timeout_s=40)

        rows = {
            int(e.key.rsplit(".", 1)[1]): e.value
            for e in (await produced.scan("producer.row.", limit=TRANSACTIONS + 10)).items
        }

        async def total() -> int:
            entry = await received.get("total")
            return 0 if entry is None else int(entry.value)

        async def settled() -> bool:
            left = await produced.scan(PREFIX, limit=1)
            return not left.items and await total() >= len(rows)

        with contextlib.suppress(AssertionError):  # the exact checks below say what is wrong
            await eventually(settled, timeout_s=20, interval_s=0.05)
        await kernel.drain()
        await kernel.drain_streams()
        got = {
            int(e.key.rsplit(".", 1)[1]): e.value
            for e in (await received.scan("got.", limit=TRANSACTIONS + 10)).items
        }
        pids = {
            int(e.key.rsplit(".", 1)[1]): e.value
            for e in (await received.scan("pid.", limit=TRANSACTIONS + 10)).items
        }
        outbox_left = len((await produced.scan(PREFIX, limit=TRANSACTIONS)).items)
        counted = await total()
    print(
        json.dumps(
            {
                "test": "outbox_exactly_once",
                "how": how,
                "seed": seed,
                "killed_at_progress": killed_at,
                "committed": len(rows),
                "counted": counted,
                "total_s": round(time.monotonic() - started, 2),
            }
        )
    )
    assert sorted(rows) == list(range(TRANSACTIONS)), f"seed {seed}"
    missing = sorted(set(rows) - set(got))
    assert not missing, f"seed {seed}: committed, never delivered: {missing[:20]}"
    assert not set(got) - set(rows), f"seed {seed}: delivered without a commit"
    assert {i: n for i, n in got.items() if n != 1} == {}, f"seed {seed}: counted twice"
    wrong = {i: (pids.get(i), pid) for i, pid in rows.items() if pids.get(i) != pid}
    assert wrong == {}, f"seed {seed}: delivered from an attempt that did not commit"
    assert counted == TRANSACTIONS
    assert outbox_left == 0
