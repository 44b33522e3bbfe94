"""RPC between two kernels over NATS: results, typed errors, deadlines, context, codecs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from organelle import Kernel
from organelle.auth.base import Principal
from organelle.errors import (
    CallTimeoutError,
    ForbiddenError,
    InternalError,
    NotFoundError,
    ValidationError,
)
from organelle.transport.nats import NatsTransport

from .conftest import Config
from .nodes import Item, OutOfCoffeeError, Peer, Server


@pytest.fixture
async def pair(config: Config) -> AsyncIterator[tuple[Kernel, Kernel]]:
    async with Kernel([Server], config()) as server, Kernel([Peer], config()) as client:
        yield server, client


async def test_remote_call_returns_the_result(pair: tuple[Kernel, Kernel]) -> None:
    _, client = pair
    assert isinstance(client.transport, NatsTransport)
    assert await client.call("server.echo", sku="A1", qty=3) == Item(sku="A1", qty=3)
    assert await client.call_with("server.echo", {"sku": "B"}) == Item(sku="B", qty=1)


async def test_errors_come_back_as_the_same_class(pair: tuple[Kernel, Kernel]) -> None:
    server, client = pair
    with pytest.raises(OutOfCoffeeError) as coffee:
        await client.call("server.fail", kind="coffee")
    assert (coffee.value.message, coffee.value.details) == ("no coffee left", {"left": 0})
    assert coffee.value.node == server.transport.node  # the Organelle-Node reply header
    with pytest.raises(InternalError) as bug:
        await client.call("server.fail", kind="bug")
    assert bug.value.error_type == "ValueError"
    with pytest.raises(ValidationError) as bad:  # validated on the serving node
        await client.call("server.echo", sku="A1", qty="many")
    assert bad.value.errors
    with pytest.raises(NotFoundError):  # a known module without that method
        await client.call("server.nope")
    with pytest.raises(NotFoundError):  # a module no node announces
        await client.call("ghost.method")


async def test_deadline_travels_and_is_enforced(pair: tuple[Kernel, Kernel]) -> None:
    _, client = pair
    remaining = await client.call_with("server.sleep", {"seconds": 0}, timeout_s=0.5)
    assert 0.3 < remaining <= 0.5
    start = time.monotonic()
    with pytest.raises(CallTimeoutError):
        await client.call_with("server.sleep", {"seconds": 2}, timeout_s=0.2)
    assert time.monotonic() - start < 0.6


async def test_context_crosses_the_wire(pair: tuple[Kernel, Kernel]) -> None:
    _, client = pair
    principal = Principal(id="ada", roles=frozenset({"admin", "ops"}))
    seen = await client.call_with(
        "server.whoami",
        meta={"tenant": "t1", "traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"},
        principal=principal,
        timeout_s=5,
    )
    assert seen["meta"] == {
        "tenant": "t1",
        "traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01",
    }
    assert (seen["principal"], seen["roles"]) == ("ada", ["admin", "ops"])
    assert seen["correlation_id"] == seen["request_id"]
    assert await client.call_with("server.admin_only", principal=principal) == "ok"
    with pytest.raises(ForbiddenError):
        await client.call_with("server.admin_only", principal=Principal(id="bob"))


async def test_nested_calls_keep_ids_and_deadline(pair: tuple[Kernel, Kernel]) -> None:
    _, client = pair
    out: dict[str, Any] = await client.call_with("server.relay", timeout_s=1.0)
    theirs = out["theirs"]
    assert theirs["causation_id"] == out["mine"]  # peer.whoami was caused by server.relay
    assert theirs["correlation_id"] == out["corr"]
    assert 0 < theirs["remaining"] <= 1.0


async def test_msgpack_when_configured(config: Config) -> None:
    async with (
        Kernel([Server], config()) as _,
        Kernel([Peer], config(codec="msgpack")) as client,
    ):
        assert await client.call("server.blob", data=b"\x00\x01\xff") == b"\xff\x01\x00"
        with pytest.raises(OutOfCoffeeError):
            await client.call("server.fail", kind="coffee")


async def test_calls_are_balanced_and_withdrawn_nodes_get_none(config: Config) -> None:
    async with (
        Kernel([Server], config()) as one,
        Kernel([Server], config()) as two,
        Kernel([Peer], config()) as client,
    ):
        ids = {await client.call("server.whoami") is not None for _ in range(2)}
        assert ids == {True}
        counts = [0, 0]
        for kernel, i in ((one, 0), (two, 1)):
            original = kernel.dispatch

            async def counted(
                target: str, params: dict[str, Any], ctx: Any, i: int = i, f: Any = original
            ) -> Any:
                counts[i] += 1
                return await f(target, params, ctx)

            kernel.dispatch = counted  # type: ignore[method-assign]
        await asyncio.gather(*(client.call("server.echo", sku="x") for _ in range(200)))
        assert min(counts) > 20, counts
        await one.stop()
        counts[:] = [0, 0]
        await asyncio.gather(*(client.call("server.echo", sku="x") for _ in range(50)))
        assert counts == [0, 50]


async def test_prefer_local_off_goes_over_the_wire(config: Config) -> None:
    async with Kernel([Server], config(kernel={"prefer_local": False})) as kernel:
        calls: list[str] = []
        original = kernel.dispatch

        async def spy(target: str, params: dict[str, Any], ctx: Any) -> Any:
            calls.append(target)
            return await original(target, params, ctx)

        kernel.dispatch = spy  # type: ignore[method-assign]
        assert await kernel.call("server.echo", sku="A") == Item(sku="A", qty=1)
        assert calls == ["server.echo"]
