"""The kernel's own logs are listeners: state changes always, slow calls when asked."""

from __future__ import annotations

import asyncio
import logging

import pytest

from organelle import Kernel, Module, rpc
from organelle.errors import ConfigError
from organelle.kernel import BaseListener
from organelle.observability.logs import SlowCallLog, StateLog
from organelle.ops import Ops


class Clock(Module):
    name = "clock"
    version = "1.2.0"

    @rpc
    async def fast(self) -> int:
        return 1

    @rpc
    async def slow(self) -> int:
        await asyncio.sleep(0.05)
        return 2

    @rpc
    async def broken(self) -> int:
        await asyncio.sleep(0.05)
        raise RuntimeError("boom")


class Crashing(Module):
    name = "crashing"

    async def on_start(self) -> None:
        raise RuntimeError("no disk")


async def test_state_changes_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="organelle.kernel.state")
    kernel = Kernel([Clock])
    kernel.listen(StateLog())
    async with kernel:
        await kernel.remove_module("clock")
        with pytest.raises(Exception, match="no disk"):
            await kernel.add_module(Crashing)
    lines = [r.getMessage() for r in caplog.records if r.name == "organelle.kernel.state"]
    assert "module clock active (v1.2.0)" in lines
    assert "module clock stopped (v1.2.0)" in lines
    assert any(line.startswith("module crashing failed:") and "no disk" in line for line in lines)
    levels = {r.getMessage(): r.levelno for r in caplog.records}
    assert levels["module clock active (v1.2.0)"] == logging.INFO
    failed = next(m for m in levels if m.startswith("module crashing failed"))
    assert levels[failed] == logging.ERROR


def test_connection_changes_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    from organelle.kernel import ConnectionReport

    caplog.set_level(logging.INFO, logger="organelle.kernel.state")
    log = StateLog()
    log.on_connection(ConnectionReport(state="disconnected"))
    log.on_connection(ConnectionReport(state="reconnected"))
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "transport disconnected from its broker; reconnecting"),
        (logging.INFO, "transport reconnected"),
    ]


async def test_slow_calls_are_logged_when_asked(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="organelle.kernel.calls")
    kernel = Kernel([Clock], {"kernel": {"slow_call_s": 0.02}})
    async with Ops(kernel, metrics=False), kernel:
        assert any(isinstance(x, SlowCallLog) for x in kernel._listeners.all)
        assert await kernel.call("clock.fast") == 1
        assert await kernel.call("clock.slow") == 2
        with pytest.raises(Exception, match="boom"):
            await kernel.call("clock.broken")
    lines = [r.getMessage() for r in caplog.records if r.name == "organelle.kernel.calls"]
    assert len(lines) == 2, lines
    assert lines[0].startswith("slow call clock.slow: ")
    assert lines[1].startswith("slow call clock.broken: ")
    assert lines[1].endswith("failed organelle.internal")


async def test_no_threshold_no_call_listener() -> None:
    kernel = Kernel([Clock])
    async with Ops(kernel, metrics=False):
        assert not any(isinstance(x, SlowCallLog) for x in kernel._listeners.all)
        assert not any(
            type(x).on_call is not BaseListener.on_call for x in kernel._listeners.all
        )  # local calls stay on the compiled path


def test_a_negative_threshold_is_refused() -> None:
    with pytest.raises(ConfigError, match="slow_call_s"):
        Kernel([Clock], {"kernel": {"slow_call_s": -1}})
