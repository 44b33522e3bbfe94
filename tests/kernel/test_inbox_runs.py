"""An idempotent stream consumer handles a run of records in one Store transaction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from organelle import Kernel, Module, consume
from organelle.kernel._inbox import inbox_key

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
