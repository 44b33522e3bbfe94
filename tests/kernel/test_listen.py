"""The observer protocol: each kind of happening reaches the listeners with its facts.

A listener overrides the ``BaseListener`` methods it cares about; one added
while the kernel runs sees what follows, ``unlisten`` stops it, and one that
raises is logged without disturbing the work it watched.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest

from organelle import Kernel, Module, NotFoundError, consume, job, on, rpc
from organelle._native import speedups
from organelle.kernel import (
    BaseListener,
    CallReport,
    ConnectionReport,
    EventReport,
    JobReport,
    LifecycleReport,
    RecordReport,
    StoreReport,
)
from organelle.testing import capture, running


class Everything(BaseListener):
    """Keeps every report it gets."""

    deliveries = True

    def __init__(self) -> None:
        self.calls: list[CallReport] = []
        self.events: list[EventReport] = []
        self.jobs: list[JobReport] = []
        self.records: list[RecordReport] = []
        self.lifecycle: list[LifecycleReport] = []
        self.connection: list[ConnectionReport] = []
        self.store: list[StoreReport] = []

    def on_call(self, call: CallReport, /) -> None:
        self.calls.append(call)

    def on_event(self, event: EventReport, /) -> None:
        self.events.append(event)

    def on_job(self, job: JobReport, /) -> None:
        self.jobs.append(job)

    def on_record(self, record: RecordReport, /) -> None:
        self.records.append(record)

    def on_lifecycle(self, change: LifecycleReport, /) -> None:
        self.lifecycle.append(change)

    def on_connection(self, change: ConnectionReport, /) -> None:
        self.connection.append(change)

    def on_store(self, op: StoreReport, /) -> None:
        self.store.append(op)


class Shop(Module):
    name = "shop"

    async def on_start(self) -> None:
        self.records_seen = 0

    @rpc
    async def quick(self, n: int) -> int:
        return n

    @rpc
    async def slow(self, n: int) -> int:
        await asyncio.sleep(0)
        return n

    @rpc
    async def missing(self) -> None:
        raise NotFoundError("nothing here")

    @rpc
    async def keep(self, key: str) -> None:
        await self.store.put(key, 1)

    @on("shop.item", filter=lambda n: n >= 0)
    async def item(self, n: int) -> None:
        if n == 2:
            raise ValueError("bad item")

    @job(max_attempts=2, backoff_s=0.01, backoff_max_s=0.01)
    async def sweep(self, fail: bool) -> None:
        if fail:
            raise ValueError("broken broom")

    @consume("ledger", max_attempts=2, backoff_s=0.01)
    async def ledger(self, n: int) -> None:
        self.records_seen += 1
        if n < 0:
            raise ValueError("negative")


def config(tmp_path: Path) -> dict[str, Any]:
    return {
        "kernel": {
            "storage": "memory://",
            "jobs": "memory://",
            "streams": f"sqlite:///{tmp_path}/s.db",
        }
    }


async def _until(predicate: Any, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_calls_are_reported_with_target_error_and_whether_they_suspended() -> None:
    seen = Everything()
    async with running(Shop) as kernel:
        kernel.listen(seen)  # added while running: the calls after it are seen
        assert await kernel.call("shop.quick", n=1) == 1
        assert await kernel.call("shop.slow", n=2) == 2
        with pytest.raises(NotFoundError):
            await kernel.call("shop.missing")
    quick, slow, missing = seen.calls
    assert (quick.target, quick.suspended, quick.error, quick.remote) == (
        "shop.quick",
        False,
        None,
        False,
    )
    assert (slow.target, slow.suspended) == ("shop.slow", True)
    assert missing.error == "organelle.not_found"
    assert all(c.duration_s >= 0 for c in seen.calls)


async def test_calls_sent_to_another_node_are_reported_as_remote() -> None:
    config = {"kernel": {"transport": f"memory://l-{uuid.uuid4().hex[:8]}"}}
    seen = Everything()
    async with running(Shop, config=config), running(config=config) as client:
        client.listen(seen)
        assert await client.call("shop.quick", n=3) == 3
    assert [(c.target, c.remote, c.suspended) for c in seen.calls] == [("shop.quick", True, True)]


@pytest.mark.skipif(speedups is None, reason="the C extension is not built")
async def test_an_on_call_listener_takes_calls_off_the_compiled_path_until_it_leaves() -> None:
    seen = Everything()
    async with running(Shop) as kernel:
        caller = kernel._dispatcher._caller
        assert caller.enabled
        kernel.listen(seen)
        assert not caller.enabled
        await kernel.call("shop.quick", n=1)
        kernel.unlisten(seen)
        assert caller.enabled
        await kernel.call("shop.quick", n=2)
    assert [c.target for c in seen.calls] == ["shop.quick"]


async def test_call_buckets_switch_the_lean_counters_on_and_off() -> None:
    class Counting(BaseListener):
        call_buckets = (0.5, 1.0)

    counting = Counting()
    async with running(Shop) as kernel:
        before = kernel.call_stats
        assert before is None
        kernel.listen(counting)
        await kernel.call("shop.quick", n=1)
        stats = kernel.call_stats
        assert stats is not None
        assert stats["shop.quick"].calls == 1
        assert stats["shop.quick"].bounds == (0.5, 1.0)
        assert kernel._dispatcher._detour is False  # counters keep the inline path
        kernel.unlisten(counting)
        assert kernel.call_stats is None


async def test_events_are_reported_when_emitted_and_when_delivered() -> None:
    seen = Everything()
    async with running(Shop) as kernel:
        kernel.listen(seen)
        for n in (1, 2, -1):
            await kernel.emit("shop.item", n)
        await kernel.emit("nobody.hears", 0)
        await kernel.drain()
    emitted = [(e.topic, e.payload) for e in seen.events if e.stage == "emitted"]
    assert emitted == [("shop.item", 1), ("shop.item", 2), ("shop.item", -1), ("nobody.hears", 0)]
    delivered = [
        (e.stage, e.payload, e.module, e.handler, e.error)
        for e in seen.events
        if e.stage != "emitted"
    ]
    assert delivered == [
        ("delivered", 1, "shop", "item", None),
        ("failed", 2, "shop", "item", "organelle.internal"),
        ("skipped", -1, "shop", "item", None),
    ]


async def test_a_listener_without_deliveries_keeps_the_compiled_delivery_path() -> None:
    async with running(Shop) as kernel:
        emits = capture(kernel, "shop.>")  # on_event, no deliveries
        if speedups is not None:
            assert kernel._bus.deliver is not None
        await kernel.emit("shop.item", 1)
        await kernel.drain()
        assert emits == [("shop.item", 1)]
        kernel.unlisten(emits)
        await kernel.emit("shop.item", 3)
        await kernel.drain()
        assert emits == [("shop.item", 1)]


async def test_jobs_are_reported_and_the_enqueue_meta_reaches_the_run(tmp_path: Path) -> None:
    class Stamp(Everything):
        def on_job(self, job: JobReport, /) -> None:
            super().on_job(job)
            if job.stage == "enqueued":
                job.meta["stamp"] = "from-listener"

    seen = Stamp()
    async with Kernel([Shop], config(tmp_path)) as kernel:
        kernel.listen(seen)
        ok = await kernel.enqueue("shop.sweep", fail=False)
        await kernel.enqueue("shop.sweep", fail=True)
        await _until(lambda: any(j.stage == "dead" for j in seen.jobs))
        record = await kernel.jobs.get(ok)
    stages = sorted(j.stage for j in seen.jobs)
    assert stages == sorted(
        ["enqueued", "enqueued", "succeeded", "failed", "retried", "failed", "dead"]
    )
    assert {j.job for j in seen.jobs} == {"shop.sweep"}
    assert all(j.duration_s is not None for j in seen.jobs if j.stage in ("succeeded", "failed"))
    assert record.meta.get("stamp") == "from-listener"  # stored with the job


async def test_stream_records_are_reported(tmp_path: Path) -> None:
    seen = Everything()
    async with Kernel([Shop], config(tmp_path)) as kernel:
        kernel.listen(seen)
        await kernel.append("ledger", 1)
        await kernel.append("ledger", -1)
        await _until(lambda: any(r.outcome == "dead" for r in seen.records))
    done = [r for r in seen.records if r.outcome == "done"]
    assert [(r.stream, r.group, r.module, r.handler, r.partition) for r in done] == [
        ("ledger", "shop", "shop", "ledger", 0)
    ]
    bad = [(r.outcome, r.attempt, r.offset) for r in seen.records if r.outcome != "done"]
    later = done[0].offset + 1
    assert bad == [("failed", 1, later), ("failed", 2, later), ("dead", 2, later)]
    assert all(r.error and "negative" in r.error for r in seen.records if r.outcome != "done")


async def test_lifecycle_connection_and_store_are_reported() -> None:
    seen = Everything()
    kernel = Kernel([Shop], {"kernel": {"storage": "memory://"}})
    kernel.listen(seen)  # before start: the whole way up and down
    async with kernel:
        await kernel.call("shop.keep", key="k")
        kernel.connection_event("disconnected")
        kernel.connection_event("reconnected")
        await kernel.reload_config({"kernel": {"call_timeout_s": 5}})
    states = [(c.module, c.state) for c in seen.lifecycle if c.module is not None]
    assert states == [
        ("shop", "loaded"),
        ("shop", "starting"),
        ("shop", "active"),
        ("shop", "stopping"),
        ("shop", "stopped"),
    ]
    reloads = [c for c in seen.lifecycle if c.module is None]
    assert [c.topic for c in reloads] == ["kernel.config.reloaded"]
    assert [c.state for c in seen.connection] == ["disconnected", "reconnected"]
    assert [(s.op, s.error) for s in seen.store] == [("put", None)]


async def test_a_raising_listener_is_logged_and_changes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(BaseListener):
        deliveries = True

        def on_call(self, call: CallReport, /) -> None:
            raise RuntimeError("listener bug")

        def on_event(self, event: EventReport, /) -> None:
            raise RuntimeError("listener bug")

        def on_lifecycle(self, change: LifecycleReport, /) -> None:
            raise RuntimeError("listener bug")

    after = Everything()
    kernel = Kernel([Shop])
    kernel.listen(Broken())
    kernel.listen(after)
    with caplog.at_level(logging.ERROR, logger="organelle.kernel"):
        async with kernel:
            assert await kernel.call("shop.quick", n=5) == 5
            await kernel.emit("shop.item", 1)
            await kernel.drain()
            assert [s.delivered for s in kernel.subscriptions()] == [1]
    assert [c.target for c in after.calls] == ["shop.quick"]  # the next listener still heard
    assert [e.stage for e in after.events] == ["emitted", "delivered"]
    assert any("listener" in r.message and "failed" in r.message for r in caplog.records)


async def test_listening_twice_is_once_and_unlisten_stops() -> None:
    seen = Everything()
    async with running(Shop) as kernel:
        kernel.listen(seen)
        kernel.listen(seen)
        await kernel.call("shop.quick", n=1)
        kernel.unlisten(seen)
        kernel.unlisten(seen)  # not listening: nothing happens
        await kernel.call("shop.quick", n=2)
    assert len(seen.calls) == 1


async def test_store_ops_in_a_transaction_are_reported_once_it_ends() -> None:
    seen = Everything()
    async with Kernel([Shop], {"kernel": {"storage": "memory://"}}) as kernel:
        kernel.listen(seen)
        with pytest.raises(RuntimeError):
            async with kernel.store.transaction():
                await kernel.call("shop.keep", key="rolled")  # the module's self.store joins
                assert seen.store == []  # told once the transaction has ended
                raise RuntimeError
        assert [(s.op, s.error) for s in seen.store] == [
            ("put", None),
            ("transaction", "RuntimeError"),
        ]
        assert await kernel.store.get("shop.rolled") is None
        seen.store.clear()
        async with kernel.store.transaction() as tx:
            await kernel.call("shop.keep", key="kept")
            await tx.incr("n")
        assert [(s.op, s.error) for s in seen.store] == [
            ("put", None),
            ("incr", None),
            ("transaction", None),
        ]
        assert (await kernel.store.get("shop.kept")).value == 1  # type: ignore[union-attr]
