"""One behaviour suite for every ``Transport``: ``memory://<name>`` and NATS.

Each test builds a small cluster of kernels on one transport URL (a fresh
``memory://`` name, or a fresh subject prefix on the shared NATS server) and
checks what a module can observe: results, typed errors, deadlines, the
context, event delivery, the registry and withdrawal. Events are waited for
with ``drain()`` on the emitting node first, then on the receiving ones.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import AsyncExitStack
from typing import Any

import msgspec
import pytest

from organelle import Envelope, Kernel, Module, OrganelleError, event, on, rpc
from organelle.auth.base import Principal
from organelle.context import context
from organelle.errors import (
    CallTimeoutError,
    DependencyError,
    InternalError,
    LifecycleError,
    NotFoundError,
    UnavailableError,
    ValidationError,
)
from organelle.testing import running
from organelle.testing.servers import NatsServer
from organelle.transport.memory import MemoryTransport, open_brokers
from organelle.transport.nats import NatsTransport

pytestmark = pytest.mark.timeout(60)

Start = Callable[..., Coroutine[Any, Any, Kernel]]
EVENTS = 40


class Item(msgspec.Struct):
    sku: str
    qty: int


class OutOfStockError(OrganelleError):
    """A handler's own error: must come back as this class with its details."""

    code = "contract.out_of_stock"


class Stock(Module):
    """The serving side; ``tag`` tells the instances of one cluster apart."""

    name = "stock"
    version = "2.1.0"
    tag = "-"

    async def on_start(self) -> None:
        self.work: list[int] = []
        self.news: list[int] = []

    @rpc
    async def reserve(self, sku: str, qty: int = 1) -> Item:
        return Item(sku=sku, qty=qty)

    @rpc
    async def extend(self, items: list[int]) -> list[int]:
        items.append(0)
        return items

    @rpc
    async def fail(self, kind: str) -> None:
        if kind == "stock":
            raise OutOfStockError("sold out", details={"sku": "A1"})
        if kind == "invalid":
            raise ValidationError("bad sku", errors=[{"field": "sku", "message": "unknown"}])
        raise ValueError("plain bug")

    @rpc
    async def slow(self, seconds: float) -> float | None:
        remaining = context().remaining_s()
        await asyncio.sleep(seconds)
        return remaining

    @rpc
    async def whoami(self) -> dict[str, Any]:
        ctx = context()
        principal = ctx.principal
        return {
            "request_id": ctx.request_id,
            "correlation_id": ctx.correlation_id,
            "causation_id": ctx.causation_id,
            "meta": ctx.meta,
            "principal": None if principal is None else principal.id,
            "roles": [] if principal is None else sorted(principal.roles),
            "remaining": ctx.remaining_s(),
        }

    @rpc
    async def where(self) -> str:
        return self.tag

    @on("stock.work")
    async def on_work(self, i: int) -> None:
        self.work.append(i)

    @on("stock.news", delivery="broadcast")
    async def on_news(self, i: int) -> None:
        self.news.append(i)


def stock(tag: str) -> Stock:
    module = Stock()
    module.tag = tag
    return module


class Desk(Module):
    """The calling side, and a subscriber of the events its own node emits."""

    name = "desk"

    async def on_start(self) -> None:
        self.notes: list[int] = []

    @rpc
    async def relay(self) -> dict[str, Any]:
        mine = context()
        theirs: dict[str, Any] = await self.call("stock.whoami")
        return {"request_id": mine.request_id, "corr": mine.correlation_id, "theirs": theirs}

    @on("desk.note")
    async def on_note(self, n: int) -> None:
        self.notes.append(n)


class Needs(Module):
    name = "needs"
    requires = ("stock>=2",)


class NeedsNewer(Module):
    name = "needs_newer"
    requires = ("stock>=3",)


@event("order.placed", version=2, key=("order_id",))
class Placed(msgspec.Struct):
    order_id: str
    total: float


class Ledger(Module):
    """Takes ``order.placed`` whole (``Envelope[Placed]``) and applies each once."""

    name = "ledger"

    def __init__(self) -> None:
        self.seen: list[Envelope[Placed]] = []
        self.applied: list[str] = []

    @on(Placed)
    async def record(self, env: Envelope[Placed]) -> None:
        self.seen.append(env)

    @on("order.placed", idempotent=True)
    async def apply(self, placed: Placed) -> None:
        self.applied.append(placed.order_id)


def module_of(kernel: Kernel, name: str) -> Any:
    return kernel.module(name)


class TransportContract:
    """The contract; a subclass says how a kernel joins this test's own cluster."""

    def config(self, **kernel: Any) -> dict[str, Any]:
        raise NotImplementedError

    @pytest.fixture
    async def start(self) -> AsyncIterator[Start]:
        """``await start(*modules, **kernel_settings)``: a running node, stopped after the test."""
        async with AsyncExitStack() as stack:

            async def start(*modules: Any, **kernel: Any) -> Kernel:
                return await stack.enter_async_context(
                    running(*modules, config=self.config(**kernel))
                )

            yield start

    # -- RPC -----------------------------------------------------------------------------
    async def test_a_call_to_another_node_returns_its_value(self, start: Start) -> None:
        await start(Stock)
        client = await start(Desk)
        assert client.transport is not None
        # The result comes back as the class the handler returned (Organelle-Type).
        assert await client.call("stock.reserve", sku="A1", qty=3) == Item(sku="A1", qty=3)
        assert await client.call_with("stock.reserve", {"sku": "B"}) == Item(sku="B", qty=1)
        items = [1, 2]
        assert await client.call("stock.extend", items=items) == [1, 2, 0]
        assert items == [1, 2]  # the serving node worked on a copy

    async def test_typed_errors_travel(self, start: Start) -> None:
        server = await start(Stock)
        client = await start(Desk)
        with pytest.raises(NotFoundError):  # a served module without that method
            await client.call("stock.nope")
        with pytest.raises(NotFoundError):  # a module no node serves
            await client.call("ghost.method")
        with pytest.raises(ValidationError) as bad:  # validated on the serving node
            await client.call("stock.reserve", sku="A1", qty="many")
        assert [e["field"] for e in bad.value.errors] == ["qty"]
        with pytest.raises(ValidationError) as own:  # raised by the handler itself
            await client.call("stock.fail", kind="invalid")
        assert own.value.errors == [{"field": "sku", "message": "unknown"}]
        with pytest.raises(OutOfStockError) as out:
            await client.call("stock.fail", kind="stock")
        assert (out.value.code, out.value.message) == ("contract.out_of_stock", "sold out")
        assert out.value.details == {"sku": "A1"}
        assert out.value.node == server.transport.node  # the node that raised it
        with pytest.raises(InternalError) as bug:
            await client.call("stock.fail", kind="bug")
        assert bug.value.error_type == "ValueError"

    async def test_deadlines_travel_and_are_enforced(self, start: Start) -> None:
        await start(Stock)
        client = await start(Desk)
        remaining = await client.call_with("stock.slow", {"seconds": 0}, timeout_s=0.5)
        assert 0.3 < remaining <= 0.5
        began = time.monotonic()
        with pytest.raises(CallTimeoutError):
            await client.call_with("stock.slow", {"seconds": 5}, timeout_s=0.2)
        assert time.monotonic() - began < 1.0

    async def test_the_context_travels(self, start: Start) -> None:
        await start(Stock)
        client = await start(Desk)
        principal = Principal(id="ada", roles=frozenset({"admin", "ops"}))
        trace = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
        seen = await client.call_with(
            "stock.whoami",
            meta={"tenant": "t1", "traceparent": trace},
            principal=principal,
            timeout_s=5,
        )
        assert seen["meta"] == {"tenant": "t1", "traceparent": trace}
        assert (seen["principal"], seen["roles"]) == ("ada", ["admin", "ops"])
        assert 0 < seen["remaining"] <= 5
        # A nested call from a handler: same correlation, caused by the handler's call.
        hop = await client.call_with("desk.relay", principal=principal, timeout_s=2)
        theirs = hop["theirs"]
        assert theirs["correlation_id"] == hop["corr"]
        assert theirs["causation_id"] == hop["request_id"]
        assert theirs["request_id"] != hop["request_id"]
        assert theirs["principal"] == "ada"
        assert 0 < theirs["remaining"] <= 2

    # -- events --------------------------------------------------------------------------
    async def test_balanced_events_reach_one_instance_each(self, start: Start) -> None:
        one, two = await start(stock("one")), await start(stock("two"))
        emitter = await start(Desk)
        for i in range(EVENTS):
            await emitter.emit("stock.work", i)
        for kernel in (emitter, one, two):
            await kernel.drain()
        got = [module_of(k, "stock").work for k in (one, two)]
        assert sorted(got[0] + got[1]) == list(range(EVENTS))  # each exactly once
        assert all(got), got  # both instances took a share

    async def test_broadcast_events_reach_every_instance(self, start: Start) -> None:
        one, two = await start(stock("one")), await start(stock("two"))
        emitter = await start(Desk)
        for i in range(EVENTS):
            await emitter.emit("stock.news", i)
        for kernel in (emitter, one, two):
            await kernel.drain()
        for kernel in (one, two):
            assert module_of(kernel, "stock").news == list(range(EVENTS))

    async def test_a_node_gets_its_own_events_once(self, start: Start) -> None:
        await start(Stock)
        kernel = await start(Desk)
        for n in range(5):
            await kernel.emit("desk.note", n)
        await kernel.drain()
        assert module_of(kernel, "desk").notes == [0, 1, 2, 3, 4]

    # -- registry and withdrawal ---------------------------------------------------------
    async def test_wait_for_a_module_another_node_starts(self, start: Start) -> None:
        client = await start(Desk, node="desk-node")
        with pytest.raises(CallTimeoutError):
            await client.wait_for("stock", timeout_s=0.2)
        waiter = asyncio.create_task(client.wait_for("stock", timeout_s=10))
        await start(Stock, node="stock-node")
        await asyncio.wait_for(waiter, 10)
        assert await client.call("stock.where") == "-"
        lister = getattr(client.transport, "nodes", None)
        assert lister is not None
        nodes = {n.node: n for n in await lister()}
        assert {"desk-node", "stock-node"} <= set(nodes)
        entry = nodes["stock-node"].modules["stock"]
        assert entry.version == "2.1.0"
        assert "reserve" in entry.methods
        assert set(entry.events) == {"stock.work", "stock.news"}

    async def test_a_required_remote_module_is_awaited_at_start(self, start: Start) -> None:
        with pytest.raises(LifecycleError):  # nobody serves it
            await start(Needs, hook_timeout_s=0.3)
        starting = asyncio.create_task(start(Needs, hook_timeout_s=10))
        await start(Stock)
        needs = await asyncio.wait_for(starting, 15)
        assert needs.state("needs").value == "active"
        with pytest.raises(DependencyError):  # served, but in a version it does not take
            await start(NeedsNewer, hook_timeout_s=0.3)

    async def test_a_stopped_node_gets_no_more_calls(self, start: Start) -> None:
        one, _ = await start(stock("one")), await start(stock("two"))
        client = await start(Desk)
        seen = {await client.call("stock.where") for _ in range(30)}
        assert seen == {"one", "two"}
        await one.stop()
        assert {await client.call("stock.where") for _ in range(10)} == {"two"}

    async def test_a_call_can_address_one_node(self, start: Start) -> None:
        one, two = await start(stock("one")), await start(stock("two"))
        client = await start(Desk)
        transport = client.transport
        async with asyncio.timeout(10):  # the registry view catches up within a heartbeat
            while len(transport.versions("stock")) < 2:
                await asyncio.sleep(0.05)
        nodes = {one.transport.node: "one", two.transport.node: "two"}
        assert dict(transport.versions("stock")) == dict.fromkeys(nodes, "2.1.0")
        for node, tag in nodes.items():
            seen = {await transport.request("stock.where", {}, context(), node) for _ in range(6)}
            assert seen == {tag}
        with pytest.raises(UnavailableError) as gone:  # nobody by that name: never delivered
            await transport.request("stock.where", {}, context(), "nobody")
        assert (gone.value.node, gone.value.details["delivered"]) == ("nobody", False)
        with pytest.raises(UnavailableError):  # a node that does not serve the module
            await transport.request("stock.where", {}, context(), transport.node)

    # -- envelopes -----------------------------------------------------------------------
    async def test_typed_events_cross_as_their_class_in_an_envelope(self, start: Start) -> None:
        ledger = await start(Ledger, storage="memory://", app="shop")
        shop = await start(Desk, app="shop")
        placed = Placed(order_id="o-1", total=9.5)
        await shop.emit(placed)
        await shop.emit(placed)  # a producer that retries: same deterministic id
        await shop.emit(Placed(order_id="o-2", total=1.0), key="o-2")
        for kernel in (shop, ledger):
            await kernel.drain()
        got: Ledger = module_of(ledger, "ledger")
        assert [type(e.data) for e in got.seen] == [Placed, Placed, Placed]
        first, again, other = got.seen
        assert first.id == again.id != other.id
        assert (first.type, first.dataversion, first.specversion) == ("order.placed", 2, "1.0")
        assert first.source.startswith("/organelle/shop/")
        assert first.dataschema == "urn:organelle:event:order.placed@2"
        assert other.partitionkey == "o-2"
        assert first.time is not None
        assert first.correlationid is not None
        assert got.applied == ["o-1", "o-2"]  # the idempotent handler ran once per id
        stats = {s.handler: s for s in ledger.subscriptions() if s.module == "ledger"}
        assert (stats["apply"].delivered, stats["apply"].duplicates) == (2, 1)


class TestMemory(TransportContract):
    @pytest.fixture(autouse=True)
    def _cluster(self, request: pytest.FixtureRequest) -> Iterator[None]:
        name = re.sub(r"[^A-Za-z0-9_.-]", "-", request.node.name)
        self.name = f"{name}-{uuid.uuid4().hex[:6]}"
        yield
        assert self.name not in open_brokers()  # every node left: nothing outlives the test

    def config(self, **kernel: Any) -> dict[str, Any]:
        return {"kernel": {"transport": f"memory://{self.name}", **kernel}}

    async def test_the_transport_is_the_memory_one(self, start: Start) -> None:
        kernel = await start(Desk)
        assert isinstance(kernel.transport, MemoryTransport)
        assert open_brokers().count(self.name) == 1


class TestNats(TransportContract):
    @pytest.fixture(autouse=True)
    def _cluster(self, nats_server: NatsServer) -> None:
        self.url = nats_server.url
        self.prefix = f"t{uuid.uuid4().hex[:10]}"

    def config(self, **kernel: Any) -> dict[str, Any]:
        options = {"prefix": self.prefix, "heartbeat_s": 0.2, "registry_ttl_s": 1.0}
        return {"kernel": {"transport": self.url, "transport_options": options, **kernel}}

    async def test_the_transport_is_the_nats_one(self, start: Start) -> None:
        kernel = await start(Desk)
        assert isinstance(kernel.transport, NatsTransport)
