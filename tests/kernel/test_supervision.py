from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

import pytest

from organelle import Kernel, Module, ModuleState, UnavailableError, rpc
from organelle.testing import capture, eventually


class Flaky(Module):
    name = "flaky"
    starts: ClassVar[list[int]] = []

    async def on_start(self) -> None:
        self.starts.append(len(self.starts))
        self.spawn(self.work())

    async def work(self) -> None:
        await asyncio.sleep(0.01)
        if len(self.starts) <= 2:  # the first two instances crash
            raise RuntimeError("boom")
        await asyncio.sleep(3600)

    @rpc
    async def ping(self) -> int:
        return len(self.starts)


class Steady(Module):
    name = "steady"

    @rpc
    async def ping(self) -> str:
        return "ok"


async def test_crashed_module_restarts_with_backoff_others_keep_serving() -> None:
    Flaky.starts.clear()
    config: dict[str, Any] = {"kernel": {"restart_backoff_s": 0.05, "restart_backoff_max_s": 0.2}}
    k = Kernel([Flaky, Steady], config)
    events = capture(k, "kernel.module.>")
    async with k:
        saw_unavailable = False

        async def third_instance_serves() -> None:
            nonlocal saw_unavailable
            if (steady := await k.call("steady.ping")) != "ok":  # others serve throughout
                pytest.fail(f"steady.ping answered {steady!r}")
            try:
                starts = await k.call("flaky.ping")
            except UnavailableError:
                saw_unavailable = True
                raise AssertionError("flaky is being restarted") from None
            assert starts == 3
            assert k.state("flaky") is ModuleState.ACTIVE

        await eventually(third_instance_serves, timeout_s=4)
        assert k.state("flaky") is ModuleState.ACTIVE
        assert await k.call("flaky.ping") == 3
        assert saw_unavailable
    failed = [p for t, p in events if t == "kernel.module.failed" and p["module"] == "flaky"]
    assert len(failed) == 2
    assert failed[0]["error"] == "crashed: RuntimeError: boom"


async def test_no_restart_when_disabled(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="organelle.module.flaky")  # the crash report
    Flaky.starts.clear()
    async with Kernel([Flaky], {"kernel": {"restart_on_crash": False}}) as k:
        await eventually(lambda: "background task flaky-background failed" in caplog.text)
        assert not k._supervisor._restarting  # the crash was reported and no restart was scheduled
        assert Flaky.starts == [0]
        assert k.state("flaky") is ModuleState.ACTIVE  # its task died; the module was left alone
