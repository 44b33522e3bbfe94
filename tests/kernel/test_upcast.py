"""Upcasters in the kernel: old events and stream records reach handlers as the version they declare.

Events cross a cluster (``memory://<name>`` and a real NATS server) in their
envelope, so the receiving node reads ``dataversion`` and upcasts; stream
records carry it in their headers, replays included.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from pathlib import Path
from typing import Any

import msgspec
import pytest

from organelle import Envelope, Kernel, Module, consume, event, on
from organelle.envelope import upcaster
from organelle.testing import eventually, running
from organelle.testing.servers import NatsServer, shared_nats

pytestmark = pytest.mark.timeout(60)


@event("up.k.placed", version=1)
class PlacedV1(msgspec.Struct):
    order_id: str
    total: float


@event("up.k.placed", version=2)
class PlacedV2(msgspec.Struct):
    order_id: str
    cents: int


@upcaster("up.k.placed", 1, 2)
def _placed_1_to_2(data: dict[str, Any]) -> dict[str, Any]:
    return {"order_id": data["order_id"], "cents": round(data["total"] * 100)}


@event("up.k.gap", version=1)
class GapV1(msgspec.Struct):
    n: int


@event("up.k.gap", version=2)
class GapV2(msgspec.Struct):
    n: int
    m: int


class Shop(Module):
    """The producer still at version 1."""

    name = "shop"


class Billing(Module):
    """A consumer already at version 2."""

    name = "billing"

    def __init__(self) -> None:
        self.placed: list[PlacedV2] = []
        self.whole: list[Envelope[PlacedV2]] = []
        self.gaps: list[GapV2] = []
        self.old: list[GapV1] = []

    @on(PlacedV2)
    async def bill(self, placed: PlacedV2) -> None:
        self.placed.append(placed)

    @on("up.k.placed", idempotent=True)
    async def audit(self, env: Envelope[PlacedV2]) -> None:
        self.whole.append(env)

    @on(GapV2)
    async def gap(self, got: GapV2) -> None:
        self.gaps.append(got)

    @on(GapV1)
    async def behind(self, got: GapV1) -> None:  # declares an older version than sent
        self.old.append(got)


Config = Callable[..., dict[str, Any]]


@pytest.fixture(scope="module")
def nats_server() -> Iterator[NatsServer]:
    with shared_nats() as server:
        yield server


@pytest.fixture(params=["memory", "nats"])
def cluster(request: pytest.FixtureRequest) -> Config:
    """The config of a node of a fresh cluster: ``memory://<name>``, or a fresh NATS prefix."""
    tag = uuid.uuid4().hex[:10]
    if request.param == "memory":
        return lambda **kernel: {
            "kernel": {"transport": f"memory://up-{tag}", "storage": "memory://", **kernel}
        }
    server: NatsServer = request.getfixturevalue("nats_server")
    options = {"prefix": f"up{tag}", "heartbeat_s": 0.2, "registry_ttl_s": 1.0}
    return lambda **kernel: {
        "kernel": {
            "transport": server.url,
            "transport_options": options,
            "storage": "memory://",
            **kernel,
        }
    }


@pytest.fixture
async def nodes(cluster: Config) -> AsyncIterator[Callable[..., Any]]:
    async with AsyncExitStack() as stack:

        async def start(*modules: type[Module]) -> Kernel:
            node: AbstractAsyncContextManager[Kernel] = running(*modules, config=cluster())
            return await stack.enter_async_context(node)

        yield start


def billing_of(kernel: Kernel) -> Billing:
    module = kernel.module("billing")
    assert isinstance(module, Billing)
    return module


def stats_of(kernel: Kernel, handler: str) -> Any:
    return next(s for s in kernel.subscriptions() if (s.module, s.handler) == ("billing", handler))


async def test_a_v1_event_reaches_a_v2_handler_upcast(nodes: Callable[..., Any]) -> None:
    receiver: Kernel = await nodes(Billing)
    shop: Kernel = await nodes(Shop)
    await shop.emit(PlacedV1(order_id="o-1", total=9.5))
    await shop.emit("up.k.placed", {"order_id": "o-2", "cents": 7})  # untyped: no version, as is
    await shop.emit(PlacedV2(order_id="o-3", cents=3))  # already at version 2
    await shop.drain()
    billing = billing_of(receiver)

    def arrived() -> None:
        assert len(billing.placed) == len(billing.whole) == 3

    await eventually(arrived)
    await receiver.drain()
    assert sorted(billing.placed, key=lambda p: p.order_id) == [
        PlacedV2(order_id="o-1", cents=950),
        PlacedV2(order_id="o-2", cents=7),
        PlacedV2(order_id="o-3", cents=3),
    ]
    whole = {e.data.order_id: e for e in billing.whole}
    assert whole["o-1"].data == PlacedV2(order_id="o-1", cents=950)
    assert whole["o-1"].dataversion == 1  # the envelope tells what was sent
    assert whole["o-2"].dataversion is None
    assert (stats_of(receiver, "bill").failed, stats_of(receiver, "audit").failed) == (0, 0)


async def test_a_missing_step_fails_the_delivery_with_a_validation_error(
    nodes: Callable[..., Any],
) -> None:
    receiver: Kernel = await nodes(Billing)
    shop: Kernel = await nodes(Shop)
    await shop.emit(GapV1(n=1))  # GapV2's handler has no step 1 -> 2
    await shop.emit(GapV2(n=1, m=2))  # GapV1's handler cannot downcast
    await shop.drain()

    def failed() -> None:
        assert stats_of(receiver, "gap").failed == 1
        assert stats_of(receiver, "behind").failed == 1

    await eventually(failed)
    gap, behind = stats_of(receiver, "gap"), stats_of(receiver, "behind")
    assert gap.last_error["code"] == "organelle.validation"
    assert "no upcaster for event up.k.gap 1 -> 2" in gap.last_error["message"]
    assert gap.last_error["details"]["from_version"] == 1
    assert behind.last_error["code"] == "organelle.validation"
    assert "downcasting is not supported" in behind.last_error["message"]
    billing = billing_of(receiver)
    assert billing.gaps == [GapV2(n=1, m=2)]  # each handler still takes its own version
    assert billing.old == [GapV1(n=1)]


async def test_a_local_envelope_is_upcast_too() -> None:
    # On a solo node a bare payload has no version to read; an envelope does.
    async with Kernel([Billing], {"kernel": {"storage": "memory://"}}) as kernel:
        await kernel.emit(PlacedV1(order_id="o-9", total=0.5))
        await kernel.drain()
        billing = billing_of(kernel)
        assert [e.data for e in billing.whole] == [PlacedV2(order_id="o-9", cents=50)]


class Ledger(Module):
    """Replays ``up-orders`` from the start, at version 2."""

    name = "ledger"

    def __init__(self) -> None:
        self.seen: list[PlacedV2] = []

    @consume("up-orders", max_attempts=1)
    async def book(self, placed: PlacedV2) -> None:
        self.seen.append(placed)


class GapLedger(Module):
    name = "gap-ledger"

    def __init__(self) -> None:
        self.seen: list[GapV2] = []

    @consume("up-gaps", max_attempts=1)
    async def book(self, got: GapV2) -> None:
        self.seen.append(got)


def streams_config(tmp_path: Path) -> dict[str, Any]:
    return {"kernel": {"storage": "memory://", "streams": f"sqlite:///{tmp_path}/streams.db"}}


async def test_a_replay_of_v1_records_is_upcast(tmp_path: Path) -> None:
    async with Kernel([Shop], streams_config(tmp_path)) as old:  # before the consumer existed
        await old.append("up-orders", PlacedV1(order_id="o-1", total=1.0), key="o-1")
        await old.append("up-orders", PlacedV1(order_id="o-2", total=2.5), key="o-2")
        await old.append("up-orders", {"order_id": "o-3", "cents": 3})
    async with Kernel([Ledger], streams_config(tmp_path)) as kernel:
        await kernel.append("up-orders", PlacedV2(order_id="o-4", cents=4))
        await kernel.drain_streams()
        ledger = kernel.module("ledger")
        assert isinstance(ledger, Ledger)
        assert sorted(ledger.seen, key=lambda p: p.order_id) == [
            PlacedV2(order_id="o-1", cents=100),
            PlacedV2(order_id="o-2", cents=250),
            PlacedV2(order_id="o-3", cents=3),
            PlacedV2(order_id="o-4", cents=4),
        ]
        (stats,) = kernel.consumers()
        assert (stats.done, stats.dead) == (4, 0)


async def test_a_record_with_no_step_becomes_a_dead_letter(tmp_path: Path) -> None:
    async with Kernel([GapLedger], streams_config(tmp_path)) as kernel:
        await kernel.append("up-gaps", GapV1(n=1))
        await kernel.append("up-gaps", GapV2(n=2, m=2))
        await kernel.drain_streams()
        ledger = kernel.module("gap-ledger")
        assert isinstance(ledger, GapLedger)
        assert ledger.seen == [GapV2(n=2, m=2)]
        (stats,) = kernel.consumers()
        assert (stats.done, stats.dead) == (1, 1)
        assert stats.last_error is not None
        error = str(stats.last_error["error"])
        assert error.startswith("organelle.validation: no upcaster for event up.k.gap 1 -> 2")
