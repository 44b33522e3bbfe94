"""Every kind of binding follows every runtime change: add, remove and reload a module.

Routes, subscriptions, jobs, cron entries, stream consumers and spawned tasks
are owned by the module's slot. Durable work addressed to a module the node
no longer hosts waits — not run, not failed, not dead-lettered — and runs once
a module serving it is added again (SQLite and NATS queues alike).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from organelle import Kernel, Module, NotFoundError, consume, cron, job, on, rpc
from organelle.testing import eventually
from organelle.testing.servers import NatsServer, shared_nats


class Log:
    """What the modules did, by instance generation."""

    calls: ClassVar[list[tuple[int, str]]] = []

    @classmethod
    def clear(cls) -> None:
        cls.calls.clear()


class Worker(Module):
    name = "worker"
    generation: ClassVar[int] = 0

    def __init__(self) -> None:
        type(self).generation += 1
        self.gen = type(self).generation
        self.ticks = 0

    async def on_start(self) -> None:
        self.spawn(self._tick())

    async def _tick(self) -> None:
        while True:
            self.ticks += 1
            Log.calls.append((self.gen, "tick"))
            await asyncio.sleep(0.01)

    @rpc
    async def whoami(self) -> int:
        return self.gen

    @on("work.done")
    async def on_done(self, payload: dict[str, Any]) -> None:
        Log.calls.append((self.gen, f"event {payload['n']}"))

    @job(max_attempts=2, backoff_s=0.01)
    async def crunch(self, n: int) -> int:
        Log.calls.append((self.gen, f"job {n}"))
        return n

    @cron("* * * * * *")  # every second (croniter's sixth field)
    async def heartbeat(self) -> None:
        Log.calls.append((self.gen, "cron"))

    @consume("work-log", group="workers", start="earliest")
    async def record(self, payload: dict[str, Any]) -> None:
        Log.calls.append((self.gen, f"record {payload['n']}"))


class Host(Module):
    """Keeps the kernel's queue and log open with no worker module loaded."""

    name = "host"


def seen(what: str) -> list[int]:
    """Generations that did ``what``."""
    return [gen for gen, done in Log.calls if done == what]


@pytest.fixture
def config(tmp_path: Path) -> dict[str, Any]:
    Log.clear()
    Worker.generation = 0
    return {
        "kernel": {
            "jobs": f"sqlite:///{tmp_path / 'jobs.db'}",
            "streams": f"sqlite:///{tmp_path / 'streams.db'}",
        }
    }


async def test_add_binds_every_kind(config: dict[str, Any]) -> None:
    async with Kernel([Host], config) as kernel:
        await kernel.add_module(Worker)
        assert await kernel.call("worker.whoami") == 1
        await kernel.emit("work.done", {"n": 1})
        await kernel.drain()
        assert seen("event 1") == [1]
        job_id = await kernel.enqueue("worker.crunch", n=7)
        await kernel.drain_jobs()
        assert (await kernel.jobs.get(job_id)).state == "succeeded"
        assert seen("job 7") == [1]
        await kernel.append("work-log", {"n": 3})
        await kernel.drain_streams()
        assert seen("record 3") == [1]
        await eventually(lambda: seen("tick"), timeout_s=5)
        await eventually(lambda: seen("cron"), timeout_s=5)


async def test_remove_unbinds_every_kind_and_durable_work_waits(config: dict[str, Any]) -> None:
    async with Kernel([Host, Worker], config) as kernel:
        await kernel.remove_module("worker")
        ticks = len(seen("tick"))
        with pytest.raises(NotFoundError):
            await kernel.call("worker.whoami")
        await kernel.emit("work.done", {"n": 1})
        await kernel.drain()
        job_id = await kernel.enqueue("worker.crunch", n=7)
        await kernel.append("work-log", {"n": 3})
        await kernel.drain_jobs()
        await kernel.drain_streams()
        await asyncio.sleep(0.1)  # a cancelled ticker or a stray worker would act meanwhile
        record = await kernel.jobs.get(job_id)
        assert (record.state, record.attempts) == ("queued", 0)  # waits: not run, not failed
        assert len(await kernel.jobs.dead_letters.list()) == 0
        assert seen("event 1") == seen("job 7") == seen("record 3") == []
        assert len(seen("tick")) == ticks  # its task was cancelled with it

        await kernel.add_module(Worker)  # a module serving the work comes back
        await kernel.drain_jobs()
        await kernel.drain_streams()
        assert (await kernel.jobs.get(job_id)).state == "succeeded"
        assert seen("job 7") == [2]
        assert seen("record 3") == [2]


async def test_reload_switches_every_binding_and_stops_the_old_tasks(
    config: dict[str, Any],
) -> None:
    async with Kernel([Host, Worker], config) as kernel:
        await eventually(lambda: seen("tick"), timeout_s=5)
        await kernel.reload_module("worker")
        old_ticks = len(seen("tick")) - len([g for g in seen("tick") if g == 2])
        assert await kernel.call("worker.whoami") == 2
        await kernel.emit("work.done", {"n": 1})
        await kernel.drain()
        assert seen("event 1") == [2]
        await kernel.enqueue("worker.crunch", n=7)
        await kernel.drain_jobs()
        assert seen("job 7") == [2]
        await kernel.append("work-log", {"n": 3})
        await kernel.drain_streams()
        assert seen("record 3") == [2]
        await eventually(lambda: 2 in seen("tick"), timeout_s=5)
        await asyncio.sleep(0.1)
        assert len([g for g in seen("tick") if g == 1]) == old_ticks  # the old ticker stopped
        assert kernel.consumers()[0].module == "worker"
        assert len(kernel.consumers()) == 1  # one member, not one per generation


async def test_restart_after_a_crash_rebinds_jobs_and_consumers(config: dict[str, Any]) -> None:
    class Crashy(Worker):
        async def on_start(self) -> None:
            if self.gen == 1:
                self.spawn(self._crash())

        async def _crash(self) -> None:
            raise RuntimeError("boom")

    config["kernel"].update({"restart_backoff_s": 0.01})
    async with Kernel([Host, Crashy], config) as kernel:
        await eventually(
            lambda: (
                kernel.state("worker") == "active"
                and getattr(kernel.module("worker"), "gen", 0) == 2
            )
        )
        await kernel.enqueue("worker.crunch", n=1)
        await kernel.append("work-log", {"n": 2})
        await kernel.drain_jobs()
        await kernel.drain_streams()
        assert seen("job 1") == [2]
        assert seen("record 2") == [2]
        assert len(kernel.consumers()) == 1


@pytest.fixture(scope="module")
def nats() -> Iterator[NatsServer]:
    with shared_nats() as server:
        yield server


async def test_durable_work_for_a_removed_module_waits_on_nats(nats: NatsServer) -> None:
    Log.clear()
    Worker.generation = 0
    config = {
        "kernel": {
            "jobs": f"{nats.url}?stream=BINDWAIT",
            "streams": f"{nats.url}?prefix=bindwait",
        }
    }
    async with Kernel([Host, Worker], config) as kernel:
        await kernel.remove_module("worker")
        job_id = await kernel.enqueue("worker.crunch", n=5)
        await kernel.append("work-log", {"n": 6})
        await asyncio.sleep(0.3)  # a stray worker or member would take them meanwhile
        record = await kernel.jobs.get(job_id)
        assert (record.state, record.attempts) == ("queued", 0)
        assert seen("job 5") == seen("record 6") == []
        await kernel.add_module(Worker)
        await eventually(lambda: seen("job 5") == [2] and seen("record 6") == [2], timeout_s=10)

        async def succeeded() -> bool:
            return (await kernel.jobs.get(job_id)).state == "succeeded"

        await eventually(succeeded, timeout_s=10)


class Recorder:
    """A binding kind added from outside the kernel (as the gateway adds HTTP routes)."""

    kind = "recorded"
    stage = "serve"

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int]] = []

    async def attach(self, slot: Any) -> None:
        self.seen.append(("attach", slot.name, getattr(slot.instance, "gen", 0)))

    async def detach(self, slot: Any) -> None:
        self.seen.append(("detach", slot.name, getattr(slot.instance, "gen", 0)))


async def test_an_added_binding_kind_follows_every_change(config: dict[str, Any]) -> None:
    recorder = Recorder()
    async with Kernel([Host, Worker], config) as kernel:
        await kernel.add_binder(recorder)
        assert sorted(recorder.seen) == [("attach", "host", 0), ("attach", "worker", 1)]
        recorder.seen.clear()
        await kernel.reload_module("worker")
        assert recorder.seen == [("detach", "worker", 1), ("attach", "worker", 2)]
        recorder.seen.clear()
        await kernel.remove_module("worker")
        assert recorder.seen == [("detach", "worker", 2)]
        recorder.seen.clear()
        await kernel.add_module(Worker)
        assert recorder.seen == [("attach", "worker", 3)]
        recorder.seen.clear()
        await kernel.remove_binder(recorder)
        assert sorted(recorder.seen) == [("detach", "host", 0), ("detach", "worker", 3)]
        recorder.seen.clear()
        await kernel.remove_module("worker")
        assert recorder.seen == []
