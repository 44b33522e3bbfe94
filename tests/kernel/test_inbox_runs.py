"""An idempotent stream consumer handles a run of records in one Store transaction."""

from __future__ import annotations

import asyncio
import contextvars
from pathlib import Path
from typing import Any

import pytest

from organelle import Kernel, Module, consume
from organelle.kernel._inbox import inbox_key
from organelle.storage import Store

pytestmark = pytest.mark.timeout(60)


class Ledger(Module):
    name = "ledger"

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.fail: set[int] = set()

    @consume("ledger-in", backoff_s=0.01)
    async def post(self, entry: dict[str, Any]) -> None:
        n = int(entry["n"])
        self.calls.append(n)
        await self.store.incr(f"n.{n}")
        await self.store.incr("total")
        if n in self.fail:
            self.fail.discard(n)
            raise RuntimeError("after the writes: only this record's savepoint rolls back")


@pytest.fixture(params=["memory", "sqlite"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    storage = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/store.db"
    return {
        "kernel": {
            "storage": storage,
            "streams": f"sqlite:///{tmp_path}/streams.db",
            "stream_specs": {"ledger-in": {"partitions": 1}},
        }
    }


async def test_a_failing_record_undoes_only_its_own_writes(config: dict[str, Any]) -> None:
    async with Kernel([], config) as kernel:
        for n in range(20):  # appended before the consumer starts: one claimed batch
            await kernel.append("ledger-in", {"n": n})
        await kernel.add_module(Ledger)
        ledger: Ledger = kernel.module("ledger")  # type: ignore[assignment]
        ledger.fail = {7}
        await kernel.drain_streams()
        assert sorted(set(ledger.calls)) == list(range(20))
        assert ledger.calls.count(7) == 2  # failed once, then ran again
        for n in range(20):
            assert (await ledger.store.get(f"n.{n}")).value == 1  # type: ignore[union-attr]
        assert (await ledger.store.get("total")).value == 20  # type: ignore[union-attr]
        (stats,) = kernel.consumers()
        assert (stats.done, stats.failed, stats.duplicates) == (20, 1, 0)


async def test_a_repeated_event_id_runs_once_within_a_run_and_across_runs(
    config: dict[str, Any],
) -> None:
    async with Kernel([], config) as kernel:
        append = kernel._streams.append
        for _ in range(3):  # before the consumer starts: one claimed batch, one run
            await append("ledger-in", {"n": 1}, None, None, event_id="dup-1")
        await append("ledger-in", {"n": 2}, None, None, event_id="dup-2")
        await append("ledger-in", {"n": 2}, None, None, event_id="dup-2")
        await kernel.add_module(Ledger)
        await kernel.drain_streams()
        ledger: Ledger = kernel.module("ledger")  # type: ignore[assignment]
        assert ledger.calls == [1, 2]
        key = inbox_key("stream.ledger-in.ledger.post", "dup-2")
        assert await kernel.store.get(key) is not None  # written at the run's end
        kernel._streams.inbox._recent.clear()  # type: ignore[union-attr] # ask the Store
        await append("ledger-in", {"n": 2}, None, None, event_id="dup-2")  # a later run
        await kernel.drain_streams()
        assert ledger.calls == [1, 2]
        (stats,) = kernel.consumers()
        assert (stats.done, stats.duplicates) == (6, 4)
        assert (await ledger.store.get("total")).value == 2  # type: ignore[union-attr]


class Racer(Module):
    """Its first record is recorded by someone else while the run is open."""

    name = "racer"
    other: Store | None = None  # the same Store, written outside the run's transaction

    def __init__(self) -> None:
        self.calls = 0

    @consume("race-in", backoff_s=0.01)
    async def take(self, entry: dict[str, Any]) -> None:
        self.calls += 1
        if self.calls == 1 and self.other is not None:
            key = inbox_key("stream.race-in.racer.take", str(entry["id"]))
            outside = contextvars.Context()  # no transaction current in it
            await asyncio.get_running_loop().create_task(self.other.put(key, 1), context=outside)
        await self.store.incr("total")


async def test_a_row_written_meanwhile_fails_the_run_and_the_repeat_is_skipped(
    tmp_path: Path,
) -> None:
    # SQLite: the run's rows are checked at its commit (the memory Store's
    # transactions exclude other writers, so nothing can come meanwhile there).
    config = {
        "kernel": {
            "storage": f"sqlite:///{tmp_path}/store.db",
            "streams": f"sqlite:///{tmp_path}/streams.db",
            "stream_specs": {"race-in": {"partitions": 1}},
        }
    }
    async with Kernel([], config) as kernel:
        Racer.other = kernel.store
        try:
            await kernel._streams.append("race-in", {"id": "r-1"}, None, None, event_id="r-1")
            await kernel.add_module(Racer)
            await kernel.drain_streams()
        finally:
            Racer.other = None
        racer: Racer = kernel.module("racer")  # type: ignore[assignment]
        (stats,) = kernel.consumers()
        assert racer.calls == 1  # the run failed at its commit; the second time it skipped
        assert (stats.failed, stats.duplicates) == (1, 1)
        assert await racer.store.get("total") is None  # the failed run's write rolled back
