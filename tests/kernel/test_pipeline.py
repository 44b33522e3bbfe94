"""One invocation pipeline: every kind of work runs through the same onion, in its context.

RPC calls (served here and sent to another node), event deliveries, job runs,
stream records and gateway HTTP requests are each an ``Invocation``; one
middleware sees them all, finds the invocation's context current while it
runs, and the context is reset once the invocation is over.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from organelle import (
    CallNext,
    Context,
    Invocation,
    Kernel,
    Module,
    consume,
    job,
    on,
    route,
    rpc,
)
from organelle.context import _current, current_context, root_context
from organelle.gateway import Gateway, HttpCall
from organelle.kernel import run_invocation
from organelle.streams.base import Delivery, Record
from organelle.testing import running


class Recorder:
    """Middleware recording each invocation, and whether its context was current inside."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bool]] = []  # (kind, target, remote)
        self.context_current: list[bool] = []

    async def __call__(self, inv: Invocation, call_next: CallNext) -> Any:
        self.seen.append((inv.kind, inv.target, inv.remote))
        self.context_current.append(current_context() is inv.context)
        try:
            return await call_next(inv)
        finally:
            # still current after the rest of the chain ran (set for the whole run)
            self.context_current.append(current_context() is inv.context)

    def kinds(self) -> set[str]:
        return {kind for kind, _, _ in self.seen}


class Works(Module):
    name = "works"

    async def on_start(self) -> None:
        self.done: asyncio.Queue[str] = asyncio.Queue()

    @rpc
    async def add(self, a: int, b: int) -> int:
        return a + b

    @route.get("/add")
    async def add_http(self, a: int, b: int) -> int:
        return a + b

    @on("works.ping")
    async def ping(self, n: int) -> None:
        await self.done.put(f"event {n}")

    @job
    async def chore(self, n: int) -> None:
        await self.done.put(f"job {n}")

    @consume("ledger")
    async def ledger(self, n: int) -> None:
        await self.done.put(f"record {n}")


async def test_one_middleware_sees_every_kind_with_its_context_current(tmp_path: Path) -> None:
    recorder = Recorder()
    config = {
        "kernel": {"jobs": "memory://", "streams": f"sqlite:///{tmp_path}/s.db"},
        "modules": {"gateway": {"port": 0}},
    }
    async with Kernel([Works, Gateway], config, middleware=[recorder]) as kernel:
        works = kernel.module("works")
        assert isinstance(works, Works)
        assert await kernel.call("works.add", a=1, b=2) == 3
        assert current_context() is None  # reset after the call
        await kernel.emit("works.ping", 1)
        await kernel.enqueue("works.chore", n=2)
        await kernel.append("ledger", 3)
        got = {await asyncio.wait_for(works.done.get(), 10) for _ in range(3)}
        assert got == {"event 1", "job 2", "record 3"}
        app = kernel.module("gateway").app  # type: ignore[attr-defined]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            r = await client.get("/add", params={"a": 2, "b": 5})
        assert r.json() == 7
        assert current_context() is None  # reset after the request
    assert recorder.kinds() == {"rpc", "event", "job", "stream", "http"}
    assert ("http", "works.add_http", False) in recorder.seen
    # the HTTP request, then the RPC it routes to: one onion, two invocations
    http_at = recorder.seen.index(("http", "works.add_http", False))
    assert recorder.seen[http_at + 1] == ("rpc", "works.add_http", False)
    assert ("job", "works.chore", False) in recorder.seen
    assert ("stream", "ledger", False) in recorder.seen
    assert all(recorder.context_current)


async def test_calls_leaving_the_node_pass_the_onion() -> None:
    at = f"memory://p-{uuid.uuid4().hex[:8]}"
    client_side, server_side = Recorder(), Recorder()

    async def tag(inv: Invocation, call_next: CallNext) -> Any:
        if inv.kind == "rpc" and inv.remote and inv.params is not None:
            inv.params["b"] = 40  # middleware may change what is sent
        return await call_next(inv)

    config = {"kernel": {"transport": at}}
    async with (
        running(Works, config=config, middleware=[server_side]),
        running(config=config, middleware=[client_side, tag]) as client,
    ):
        assert await client.call("works.add", a=2, b=1) == 42
        assert current_context() is None
    assert client_side.seen == [("rpc", "works.add", True)]
    assert server_side.seen == [("rpc", "works.add", False)]
    assert all(client_side.context_current)


async def test_http_middleware_is_kernel_middleware_and_later_use_counts() -> None:
    seen: list[str] = []

    async def gateway_mw(inv: Invocation, call_next: CallNext) -> Any:
        request: HttpCall = inv.request
        request.state["by"] = "gateway"
        seen.append(f"gateway {request.method} {inv.target} {request.route is not None}")
        return await call_next(inv)

    async def late(inv: Invocation, call_next: CallNext) -> Any:
        if inv.kind in ("http", "rpc"):  # (the gateway also hears kernel events)
            state = inv.request.state if inv.kind == "http" else {}
            seen.append(f"late {inv.kind} {state.get('by', '-')}")
        return await call_next(inv)

    gateway = Gateway(middleware=[gateway_mw])
    async with Kernel([Works, gateway], {"modules": {"gateway": {"port": 0}}}) as kernel:
        transport = httpx.ASGITransport(app=gateway.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/add", params={"a": 1, "b": 1})).json() == 2
            kernel.use(late)  # the kernel's middleware wraps the gateway's, from now on
            assert (await client.get("/add", params={"a": 1, "b": 2})).json() == 3
    assert seen == [
        "gateway GET works.add_http True",
        "late http -",
        "gateway GET works.add_http True",
        "late rpc -",
    ]


async def test_run_invocation_resets_the_context_whatever_happens() -> None:
    outer = root_context()
    token = _current.set(outer)
    try:
        for outcome in ("value", "error", "cancel"):
            ctx = root_context()

            async def handler(inv: Invocation, outcome: str = outcome) -> Any:
                assert current_context() is inv.context
                await asyncio.sleep(0)
                if outcome == "error":
                    raise ValueError("boom")
                if outcome == "cancel":
                    raise asyncio.CancelledError
                return 1

            inv = Invocation("job", "m.j", "m", {}, None, ctx, handler)
            if outcome == "value":
                assert await run_invocation(None, inv) == 1
            else:
                with pytest.raises((ValueError, asyncio.CancelledError)):
                    await run_invocation(None, inv)
            assert current_context() is outer
    finally:
        _current.reset(token)


async def test_job_stream_and_event_hosts_reset_the_context(tmp_path: Path) -> None:
    """The async kinds run elsewhere; their host entry points leave no context behind."""
    recorder = Recorder()
    config = {
        "kernel": {
            "jobs": "memory://",
            "streams": f"sqlite:///{tmp_path}/s.db",
            "storage": "memory://",
        }
    }
    async with Kernel([Works], config, middleware=[recorder]) as kernel:
        slot = kernel._slots.require("works")
        method = slot.spec.jobs["chore"]
        run_job = kernel._jobs._handler("works", "works.chore", method)
        await run_job(n=1)
        assert current_context() is None

        consumer = slot.spec.consumers[0]
        run_record = kernel._streams._handler("works", consumer, kernel._streams.consumers[0].stats)
        record = Record(stream="ledger", partition=0, offset=0, key=None, data=b"4", headers={})
        await run_record(Delivery(record=record, group="works", attempt=1))
        assert current_context() is None

        bus = kernel._bus
        sub = bus.route("works.ping")[0]
        ctx: Context = root_context(topic="works.ping")
        with pytest.raises(StopIteration):  # the handler finished in its first step
            bus._step(sub, 5, ctx)
        assert current_context() is None
    assert {kind for kind, _, _ in recorder.seen} == {"job", "stream", "event"}
    assert all(recorder.context_current)
