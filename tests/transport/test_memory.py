"""What is particular to ``memory://<name>``: URLs and options, brokers, backlogs, closing.

The behaviour it shares with NATS is in ``tests/contract/test_transport.py``.
"""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from typing import Any, Literal

import pytest

from organelle import Kernel, Module, on, rpc
from organelle.config.settings import parse_settings
from organelle.context import Context, root_context
from organelle.errors import (
    ConfigError,
    NotFoundError,
    UnavailableError,
    ValidationError,
)
from organelle.kernel import BaseListener
from organelle.module import describe
from organelle.testing import running
from organelle.transport import open_transport
from organelle.transport.memory import MemoryTransport, open_brokers

_probe: contextvars.ContextVar[str] = contextvars.ContextVar("probe", default="unset")


class Echo(Module):
    name = "echo"

    async def on_start(self) -> None:
        self.got: list[int] = []

    @rpc
    async def back(self, value: Any) -> Any:
        return value

    @rpc
    async def probe(self) -> str:
        return _probe.get()

    @on("echo.tick")
    async def tick(self, n: int) -> None:
        await asyncio.sleep(0)
        self.got.append(n)


def url() -> str:
    return f"memory://t-{uuid.uuid4().hex[:8]}"


def config(at: str, **kernel: Any) -> dict[str, Any]:
    return {"kernel": {"transport": at, **kernel}}


def test_a_bare_memory_url_is_a_solo_node_and_a_named_one_joins_a_cluster() -> None:
    solo = open_transport(parse_settings({"transport": "memory://"}))
    other = open_transport(parse_settings({"transport": "memory://"}))
    assert isinstance(solo, MemoryTransport)
    assert isinstance(other, MemoryTransport)
    assert solo.solo
    assert solo.options.broker != other.options.broker  # nobody can join a solo node
    transport = open_transport(parse_settings({"transport": "memory://shop", "node": "n1"}))
    assert isinstance(transport, MemoryTransport)
    assert not transport.solo
    assert (transport.options.broker, transport.node) == ("shop", "n1")
    opts = {"codec": "msgpack", "max_payload_bytes": 1000}
    transport = open_transport(
        parse_settings({"transport": "memory://a", "transport_options": opts})
    )
    assert isinstance(transport, MemoryTransport)
    assert (transport.options.codec, transport.options.max_payload_bytes) == ("msgpack", 1000)


@pytest.mark.parametrize(
    ("transport", "options", "key"),
    [
        ("memory://a/b", {}, "kernel.transport"),
        ("memory://a", {"prefix": "x"}, "kernel.transport_options.prefix"),
        ("memory://a", {"codec": "xml"}, "kernel.transport_options.codec"),
        ("memory://a", {"max_payload_bytes": 0}, "kernel.transport_options.max_payload_bytes"),
    ],
)
def test_bad_urls_and_options_are_config_errors(
    transport: str, options: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError) as err:
        open_transport(parse_settings({"transport": transport, "transport_options": options}))
    assert err.value.details["key"] == key


async def test_brokers_are_apart_and_gone_once_their_nodes_stop() -> None:
    first, second = url(), url()
    async with running(Echo, config=config(first)), running(config=config(second)) as other:
        assert {first[9:], second[9:]} <= set(open_brokers())
        with pytest.raises(NotFoundError):  # echo runs on the other broker only
            await other.call("echo.back", value=1)
    assert first[9:] not in open_brokers()
    assert second[9:] not in open_brokers()


async def test_two_nodes_may_not_share_a_name() -> None:
    at = url()
    async with running(Echo, config=config(at, node="same")):
        with pytest.raises(ConfigError, match="already has a node named 'same'"):
            await Kernel([], config(at, node="same")).start()


class Counting(BaseListener):
    """Asks the kernel for its lean call counters."""

    call_buckets = (1.0,)


async def test_calls_are_balanced_in_turn_and_see_none_of_the_callers_contextvars() -> None:
    at = url()
    async with (
        running(Echo, config=config(at)) as one,
        running(Echo, config=config(at)) as two,
        running(config=config(at)) as client,
    ):
        _probe.set("caller")
        assert await client.call("echo.probe") == "unset"
        for k in (one, two):
            k.listen(Counting())
        for _ in range(10):
            await client.call("echo.back", value=1)
        assert [(k.call_stats or {})["echo.back"].calls for k in (one, two)] == [5, 5]


async def test_values_cross_as_on_the_wire() -> None:
    at = url()
    async with running(Echo, config=config(at)), running(config=config(at)) as client:
        assert await client.call("echo.back", value=b"\x00\xff") == "AP8="  # base64 in JSON
        assert await client.call("echo.back", value=(1, 2)) == [1, 2]
        with pytest.raises(ValidationError):  # not encodable: refused before sending
            await client.call("echo.back", value=object())
    packed = {"transport_options": {"codec": "msgpack"}}
    async with running(Echo, config=config(at)), running(config=config(at, **packed)) as client:
        assert await client.call("echo.back", value=b"\x00\xff") == b"\x00\xff"  # bin in msgpack


async def test_oversized_requests_and_events_are_refused() -> None:
    at = url()
    small = {"transport_options": {"max_payload_bytes": 64}}
    async with (
        running(Echo, config=config(at, **small)),
        running(config=config(at, **small)) as client,
    ):
        with pytest.raises(ValidationError):
            await client.call("echo.back", value="x" * 100)
        with pytest.raises(ValidationError):
            await client.emit("echo.tick", "x" * 100)


async def test_a_full_queue_keeps_every_event_in_order() -> None:
    at = url()
    async with (
        running(Echo, config=config(at, max_pending_events=1)) as receiver,
        running(config=config(at)) as emitter,
    ):
        for n in range(300):
            await emitter.emit("echo.tick", n)
        await emitter.drain()  # settles every node's backlog onto its queue
        await receiver.drain()
        got = receiver.module("echo").got  # type: ignore[attr-defined]
        assert got == list(range(300))


class _Inbound:
    """A kernel stand-in: serves ``echo.*`` after ``gate`` opens."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    async def dispatch(self, target: str, params: dict[str, Any], ctx: Context) -> Any:
        await self.gate.wait()
        return params

    async def deliver(self, module: str, handler: str, payload: Any, ctx: Context) -> None:
        return None

    def connection_event(self, event: Literal["disconnected", "reconnected"]) -> None:
        return None


async def test_close_fails_calls_in_flight_and_is_idempotent() -> None:
    at = url()
    settings = parse_settings({"transport": at})
    server, client = (
        MemoryTransport.from_settings(settings),
        MemoryTransport.from_settings(settings),
    )
    inbound = _Inbound()
    await server.connect(inbound)
    await client.connect(_Inbound())
    await server.expose(describe(Echo))
    call = asyncio.create_task(client.request("echo.back", {"value": 1}, root_context(None)))
    await asyncio.sleep(0.01)  # the call is being served, waiting at the gate
    await client.close()
    with pytest.raises(UnavailableError):
        await call
    await client.close()
    with pytest.raises(UnavailableError):
        await client.request("echo.back", {}, root_context(None))
    inbound.gate.set()
    await server.close()
    assert at[9:] not in open_brokers()


async def test_a_call_refused_by_a_node_that_withdrew_goes_to_another() -> None:
    at = url()
    settings = parse_settings({"transport": at})
    nodes = [MemoryTransport.from_settings(settings) for _ in range(3)]
    first, second, client = nodes
    for node in nodes:
        await node.connect(_Inbound())
    for node in (first, second):
        node._inbound.gate.set()  # type: ignore[union-attr]
        await node.expose(describe(Echo))
    # The call picks `first`, which withdraws before it starts serving (tasks run in order).
    call = asyncio.create_task(client.request("echo.back", {"value": 1}, root_context(None)))
    withdraw = asyncio.create_task(first.withdraw("echo"))
    assert await call == {"value": 1}
    await withdraw
    assert [n.node for n in await client.nodes() if "echo" in n.modules] == [second.node]
    for node in nodes:
        await node.close()
