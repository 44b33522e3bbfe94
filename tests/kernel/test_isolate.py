"""Process isolation: ``isolate = …`` runs a module in a supervised child process.

The module under test (``isolated_apps.Worker``) runs in a real child; the
kernel, its other module and the supervisor are the real ones.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

from organelle import (
    CallTimeoutError,
    ConfigError,
    ForbiddenError,
    Kernel,
    Module,
    ModuleState,
    UnavailableError,
    rpc,
)
from organelle.health.base import Status
from organelle.health.checks import ModuleCheck
from organelle.testing import capture, eventually
from tests.kernel.isolated_apps import GuardedWorker, Worker


class Ledger(Module):
    """The in-process module the isolated one calls and hears from."""

    name = "ledger"
    notes: ClassVar[list[str]] = []

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    @rpc
    async def add(self, amount: int) -> int:
        self.total += amount
        await self.emit("ledger.changed", {"total": self.total})
        return self.total

    @rpc
    async def note(self, text: str) -> None:
        self.notes.append(text)

    @rpc
    async def ping(self) -> str:
        return "pong"


def app(isolate: Any = True, **kernel: Any) -> Kernel:
    settings = {"restart_backoff_s": 0.3, "restart_backoff_max_s": 5.0, **kernel}
    section = {"isolate": isolate, "greeting": "hi"}
    return Kernel([Ledger, Worker], {"kernel": settings, "modules": {"worker": section}})


async def restarted(kernel: Kernel, old_pid: int, *, timeout_s: float = 20.0) -> int:
    """The pid of the next child, once one serves (the parent keeps serving meanwhile)."""

    async def fresh() -> int:
        assert await kernel.call("ledger.ping") == "pong"  # the rest never stops serving
        try:
            pid: int = await kernel.call("worker.pid")
        except UnavailableError:
            return 0
        return pid if pid != old_pid else 0

    pid: int = await eventually(fresh, timeout_s=timeout_s, interval_s=0.02)
    return pid


def failures(events: list[tuple[str, Any]]) -> list[str]:
    """The ``error`` of each ``kernel.module.failed`` of the worker: what health showed."""
    return [
        p["error"] for t, p in events if t == "kernel.module.failed" and p["module"] == "worker"
    ]


async def test_calls_events_and_config_cross_the_process_boundary() -> None:
    Ledger.notes.clear()
    kernel = app()
    emitted = capture(kernel, "worker.>")
    async with kernel:
        pid = await kernel.call("worker.pid")
        assert pid != os.getpid()
        assert (await kernel.call("worker.hello", who="ann")).startswith("hi ann")  # its Config
        assert await kernel.call("worker.record", amount=3) == 3  # calls back into the parent
        assert await kernel.call("worker.record", amount=4) == 7
        await eventually(lambda: emitted == [
            ("worker.recorded", {"amount": 3, "total": 3}),
            ("worker.recorded", {"amount": 4, "total": 7}),
        ])  # fmt: skip
        # ledger.changed reached the child's @on handler, which called back.
        await eventually(lambda: sorted(Ledger.notes) == ["worker saw 3", "worker saw 7"])
        with pytest.raises(Exception, match="who"):
            await kernel.call("worker.hello")  # checked against the real signature
        info = kernel.modules()["worker"]
        assert info.state is ModuleState.ACTIVE
        assert "hello" in info.rpc_methods
        health = await ModuleCheck(kernel, "worker").check()  # the child's own health()
        assert health.status is Status.DEGRADED
        assert health.detail == "tired"
        assert health.data == {"pid": pid}


async def test_a_plugin_manifest_holds_the_isolated_module() -> None:
    config = {"modules": {"worker": {"isolate": True}}}
    async with Kernel([Ledger, GuardedWorker], config) as kernel:
        with pytest.raises(ForbiddenError, match="worker.recorded"):
            await kernel.call("worker.record", amount=2)  # ledger.add allowed, the emit not
        assert kernel.module("ledger").total == 2  # type: ignore[attr-defined]


async def test_deadline_crosses_and_reload_module_starts_a_child_with_the_new_section() -> None:
    kernel = app()
    async with kernel:
        with pytest.raises(CallTimeoutError):
            await kernel.call_with("worker.nap", {"s": 10.0}, timeout_s=0.3)
        assert await kernel.call("worker.nap", s=0.01) == 0.01  # the channel still serves
        await kernel.reload_module("worker", config={"isolate": True, "greeting": "hey"})
        assert (await kernel.call("worker.hello", who="cy")).startswith("hey cy")


async def test_segfault_restarts_with_backoff_while_the_rest_serves() -> None:
    kernel = app()
    events = capture(kernel, "kernel.module.>")
    async with kernel:
        pid = await kernel.call("worker.pid")
        gaps = []
        for _ in range(2):
            crashed = time.monotonic()
            with pytest.raises(UnavailableError):
                await kernel.call("worker.segfault")
            pid = await restarted(kernel, pid)
            gaps.append(time.monotonic() - crashed)
        assert len(failures(events)) == 2
        assert all("SIGSEGV" in error for error in failures(events))
        # Backoff: 0.3 s, then 0.6 s (a crash soon after the last restart doubles it).
        assert gaps[0] >= 0.3
        assert gaps[1] >= 0.6
        assert await kernel.call("worker.hello", who="bo") == f"hi bo from {pid}"


async def test_down_module_fails_fast_and_health_names_the_cause() -> None:
    kernel = app(restart_backoff_s=30.0)  # stays down for the whole test
    async with kernel:
        with pytest.raises(UnavailableError):
            await kernel.call("worker.segfault")

        def down() -> None:
            info = kernel.modules()["worker"]
            assert info.state is ModuleState.FAILED
            assert info.error is not None
            assert "SIGSEGV" in info.error

        await eventually(down, timeout_s=10)
        health = await ModuleCheck(kernel, "worker").check()
        assert health.status is Status.UNHEALTHY
        assert "died of SIGSEGV" in health.detail
        started = time.monotonic()
        with pytest.raises(UnavailableError):
            await kernel.call_with("worker.pid", timeout_s=20)
        assert time.monotonic() - started < 5  # refused, not left waiting for the deadline
        assert await kernel.call("ledger.add", amount=1) == 1


async def test_runaway_loop_hits_the_cpu_limit_and_restarts() -> None:
    kernel = app({"max_cpu_s": 2})
    events = capture(kernel, "kernel.module.>")
    async with kernel:
        pid = await kernel.call("worker.pid")
        with pytest.raises(UnavailableError):
            await kernel.call_with("worker.spin", timeout_s=25)
        await restarted(kernel, pid, timeout_s=25)
        [error] = failures(events)
        assert "SIGXCPU" in error or "SIGKILL" in error


async def test_allocation_past_the_memory_limit_restarts() -> None:
    kernel = app({"max_memory_mb": 1024})
    events = capture(kernel, "kernel.module.>")
    async with kernel:
        pid = await kernel.call("worker.pid")
        assert await kernel.call("worker.allocate", mb=16) == 16 << 20  # within the limit
        with pytest.raises(UnavailableError):
            await kernel.call("worker.allocate", mb=2048)
        await restarted(kernel, pid)
        [error] = failures(events)
        assert "ran out of memory" in error


async def test_stop_ends_the_child() -> None:
    kernel = app()
    async with kernel:
        pid = await kernel.call("worker.pid")
    with pytest.raises(ProcessLookupError):
        for _ in range(100):  # bounded: reaped by the time stop() returned
            os.kill(pid, 0)
            await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("isolate", "message"),
    [
        ({"max_memory": 10}, r"modules\.worker\.isolate\.max_memory: unknown key"),
        ({"max_cpu_s": 0}, r"max_cpu_s: must be a positive whole number"),
        ({"start_timeout_s": "soon"}, r"start_timeout_s: must be a positive number"),
        ("yes", r"modules\.worker\.isolate: expected true, false or a table"),
    ],
)
def test_bad_isolate_options_are_refused(isolate: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        app(isolate)


def test_isolate_is_not_a_module_config_key_but_typos_still_are() -> None:
    kernel = app(isolate=False)
    assert type(kernel.module("worker")) is Worker  # false: in process
    with pytest.raises(ConfigError, match=r"modules\.worker\.greting: unknown key"):
        Kernel([Ledger, Worker], {"modules": {"worker": {"isolate": True, "greting": "x"}}})


def test_a_class_that_cannot_be_imported_by_name_is_refused() -> None:
    class Local(Module):
        name = "local"

    with pytest.raises(ConfigError, match="importable by name"):
        Kernel([Local], {"modules": {"local": {"isolate": True}}})


PARENT = """
import asyncio, sys
from organelle import Kernel
from tests.kernel.isolated_apps import GuardedWorker, Worker
from tests.kernel.test_isolate import Ledger

async def main():
    config = {"modules": {"worker": {"isolate": True}}, "kernel": {"storage": "memory://"}}
    async with Kernel([Ledger, Worker], config) as kernel:
        print(await kernel.call("worker.pid"), flush=True)
        await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_a_child_whose_parent_is_killed_exits() -> None:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])}
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PARENT, cwd=root, env=env, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert parent.stdout is not None
        line = await asyncio.wait_for(parent.stdout.readline(), timeout=30)
        child = int(line)
    finally:
        parent.kill()  # SIGKILL: no on_stop, no goodbye; only the channel closes
        await parent.wait()

    def gone() -> bool:
        # Exited: no process, or a zombie nobody reaps (its parent is dead; in a
        # container, PID 1 may not reap orphans).
        try:
            stat = Path(f"/proc/{child}/stat").read_text()
        except FileNotFoundError:
            return True
        return stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}

    await eventually(gone, timeout_s=10, interval_s=0.05)
