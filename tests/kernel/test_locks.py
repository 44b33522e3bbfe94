"""``kernel.lock`` / ``Module.lock`` and ``@leader`` elections between two kernels on one SQLite file."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from organelle import Kernel, Module
from organelle.errors import DefinitionError, LockTimeoutError
from organelle.locks import fenced_put, leader
from organelle.testing import eventually

pytestmark = pytest.mark.timeout(60)


class Elected(Module):
    """Runs ``lead`` on one kernel; counts its terms and cancellations in the Store."""

    name = "elected"

    @leader(ttl_s=1.0)
    async def lead(self) -> None:
        await self.store.incr("terms")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await self.store.incr("cancelled")
            raise


class Worker(Module):
    name = "worker"

    async def critical(self, key: str) -> int:
        async with self.lock("section", ttl_s=2, timeout_s=5) as lease:
            await fenced_put(self.store, key, "done", token=lease.token)
            return lease.token


def _config(path: Path) -> dict[str, Any]:
    return {"kernel": {"storage": f"sqlite:///{path}"}}


async def test_module_lock_is_named_after_the_module(tmp_path: Path) -> None:
    async with Kernel([Worker], _config(tmp_path / "a.db")) as kernel:
        worker: Worker = kernel.module("worker")  # type: ignore[assignment]
        first = await worker.critical("k")
        second = await worker.critical("k")
        assert second > first > 0
        assert await kernel.lock_holder("worker.section") is None
        async with kernel.lock("worker.section", ttl_s=2) as lease:
            held = await kernel.lock_holder("worker.section")
            assert held is not None
            assert held.token == lease.token > second
            assert held.owner == kernel.transport.node
            with pytest.raises(LockTimeoutError):
                await worker.critical("k")


async def test_one_kernel_leads_and_the_other_takes_over(tmp_path: Path) -> None:
    config = _config(tmp_path / "e.db")
    first = Kernel([Elected], config)
    second = Kernel([Elected], config)
    await first.start()
    try:
        await second.start()

        def leading(kernel: Kernel) -> bool:
            return any(state.leading for state in kernel.leaders())

        await eventually(lambda: leading(first) or leading(second), timeout_s=5)
        one, other = (first, second) if leading(first) else (second, first)
        store = other.store_for("elected")  # still open once ``one`` stops
        await asyncio.sleep(0.5)  # renewals keep it where it is
        assert leading(one)
        assert not leading(other)
        [state] = one.leaders()
        assert state.name == "leader.elected.lead"
        held = await one.lock_holder(state.name)
        assert held is not None
        assert held.token == state.token
        assert (await store.get("terms")).value == 1  # type: ignore[union-attr]
        old_token = state.token
        await one.stop()  # a graceful stop releases at once: no TTL to wait for
        await eventually(lambda: leading(other), timeout_s=2)
        assert other.leaders()[0].token > old_token
        assert (await store.get("cancelled")).value == 1  # type: ignore[union-attr]

        async def second_term() -> bool:  # the task starts just after leadership is won
            entry = await store.get("terms")
            return entry is not None and entry.value == 2

        await eventually(second_term, timeout_s=2)
    finally:
        await first.stop()
        await second.stop()


async def test_a_stolen_leadership_cancels_the_task_and_comes_back(tmp_path: Path) -> None:
    async with Kernel([Elected], _config(tmp_path / "s.db")) as kernel:
        await eventually(lambda: kernel.leaders()[0].leading, timeout_s=5)
        before = kernel.leaders()[0].token
        await kernel.store.put("_lock.leader.elected.lead", {"owner": "thief"}, ttl_s=1)
        store = kernel.store_for("elected")

        async def cancelled() -> bool:
            entry = await store.get("cancelled")
            return entry is not None and entry.value == 1

        await eventually(cancelled, timeout_s=3)
        await eventually(lambda: kernel.leaders()[0].leading, timeout_s=5)  # the thief's TTL ended
        state = kernel.leaders()[0]
        assert state.token > before
        assert state.terms == 2


async def test_a_failing_leader_task_gives_leadership_up(tmp_path: Path) -> None:
    runs: list[int] = []

    class Flaky(Module):
        name = "flaky"

        @leader(ttl_s=1.0, name="flaky-leader")
        async def lead(self) -> None:
            runs.append(len(runs))
            if len(runs) == 1:
                raise RuntimeError("first run fails")
            await asyncio.Event().wait()

    async with Kernel([Flaky], _config(tmp_path / "f.db")) as kernel:
        await eventually(lambda: len(runs) == 2, timeout_s=5)
        [state] = kernel.leaders()
        assert state.name == "flaky-leader"
        assert state.leading
        assert state.terms == 2


def test_leader_rejects_a_plain_function() -> None:
    with pytest.raises(DefinitionError, match="async def"):

        class Bad(Module):
            name = "bad"

            @leader  # type: ignore[type-var]
            def lead(self) -> None: ...

    with pytest.raises(DefinitionError, match="at most one argument"):

        class TooMany(Module):
            name = "too_many"

            @leader
            async def lead(self, lease: object, extra: object) -> None: ...

    with pytest.raises(DefinitionError, match="ttl_s"):
        leader(ttl_s=0)
