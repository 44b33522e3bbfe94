"""Backpressure over NATS without loss: a node that cannot keep up keeps its connection and every event.

The flood is the one of issue 13: 4 KB events published raw as fast as
nats-py can, to a node whose queue holds 10 events and runs one 2 ms
handler at a time. Before, the node stopped reading its socket, missed the
server's PINGs and lost the connection with a few thousand events in it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest

from organelle import Kernel, Module, on
from organelle.health import Status
from organelle.health.checks import TransportCheck
from organelle.kernel import BaseListener, ConnectionReport
from organelle.testing import eventually

from .conftest import Config

pytestmark = pytest.mark.timeout(240)

_FLOOD = 15_000
_BODY = b'{"pad": "' + b"x" * 4085 + b'"}'  # 4 KB
_SLOW = {"max_pending_events": 10, "max_concurrent_handlers": 1}
_PING_S = 0.5  # a node that stopped reading would miss two PONGs within a second


class Sink(Module):
    """Counts what it handles, taking ``delay_s`` per event, one at a time when configured so."""

    name = "sink"
    delay_s = 0.002

    async def on_start(self) -> None:
        self.handled = 0

    @on("flood.item")
    async def item(self, event: dict[str, Any]) -> None:
        assert len(event["pad"]) == len(_BODY) - 11
        await asyncio.sleep(self.delay_s)
        self.handled += 1


class Quick(Sink):
    delay_s = 0.0


class Connections(BaseListener):
    def __init__(self) -> None:
        self.changes: list[str] = []

    def on_connection(self, change: ConnectionReport, /) -> None:
        self.changes.append(change.state)


@pytest.fixture
async def nc(nats_server: Any) -> AsyncIterator[Any]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


async def flood(nc: Any, subject: str, n: int) -> None:
    for _ in range(n):
        await nc.publish(subject, _BODY)
    await nc.flush(timeout=30)


async def test_a_slow_node_handles_every_event_of_a_flood(
    config: Config, nc: Any, prefix: str
) -> None:
    async with Kernel([Sink], config(kernel=_SLOW, ping_interval_s=_PING_S)) as kernel:
        watch = Connections()
        kernel.listen(watch)
        sink = kernel.module("sink")
        assert isinstance(sink, Sink)
        await flood(nc, f"{prefix}.evt.flood.item", _FLOOD)
        # 15,000 x 2 ms is 30 s of handling at best; the bound leaves room for a busy machine.
        await eventually(lambda: sink.handled == _FLOOD, timeout_s=180)
        await kernel.drain()
        assert sink.handled == _FLOOD
        assert dict(kernel.transport.rejected) == {}
        assert watch.changes == []  # PINGs answered all along: never disconnected
        assert kernel.transport.connected


async def test_past_the_backlog_bound_events_are_counted_never_silently_gone(
    config: Config, nc: Any, prefix: str
) -> None:
    # A backlog of 40 KB holds about ten of these events: most of the flood overflows.
    async with Kernel([Sink], config(kernel=_SLOW, max_backlog_bytes=40_000)) as kernel:
        sink = kernel.module("sink")
        assert isinstance(sink, Sink)
        n = 1000
        await flood(nc, f"{prefix}.evt.flood.item", n)

        def accounted() -> bool:
            return sink.handled + kernel.transport.rejected.get("overflow", 0) == n

        await eventually(accounted, timeout_s=60)
        await kernel.drain()
        overflow = kernel.transport.rejected["overflow"]
        assert sink.handled + overflow == n
        assert overflow > n // 2
        assert kernel.transport.connected
        check = TransportCheck(kernel)  # degraded while events are being dropped, then not
        assert (await check.check()).status is Status.DEGRADED
        assert (await check.check()).status is Status.HEALTHY


async def test_a_balanced_group_loses_nothing_when_one_member_is_slow(
    config: Config, nc: Any, prefix: str
) -> None:
    async with (
        Kernel([Sink], config(kernel=_SLOW, ping_interval_s=_PING_S)) as slow_node,
        Kernel([Quick], config()) as quick_node,
    ):
        watch = Connections()
        slow_node.listen(watch)
        slow, quick = slow_node.module("sink"), quick_node.module("sink")
        assert isinstance(slow, Sink)
        assert isinstance(quick, Sink)
        n = 4000

        def total() -> int:
            return slow.handled + quick.handled

        await flood(nc, f"{prefix}.evt.flood.item", n)
        await eventually(lambda: total() == n, timeout_s=120)
        await slow_node.drain()
        await quick_node.drain()
        assert total() == n  # each event once: none lost, none twice
        assert quick.handled > n // 4  # the other member took its share
        for node in (slow_node, quick_node):
            assert dict(node.transport.rejected) == {}
        assert watch.changes == []


async def test_a_slow_member_leaves_its_group_to_the_others_until_it_catches_up(
    config: Config, nc: Any, prefix: str
) -> None:
    # The quick node anchors the group (the lowest node name): it never leaves it.
    slow_options = {**_SLOW, "node": "b-slow"}
    async with (
        Kernel([Sink], config(kernel=slow_options, shed_backlog_bytes=100_000)) as slow_node,
        Kernel([Quick], config(kernel={"node": "a-quick"})) as quick_node,
    ):
        slow, quick = slow_node.module("sink"), quick_node.module("sink")
        assert isinstance(slow, Sink)
        assert isinstance(quick, Sink)
        await eventually(lambda: len(slow_node.transport.versions("sink")) == 2, timeout_s=10)
        n = 4000
        for _ in range(n // 100):  # a steady 2,000 a second: more than the slow node's 500
            for _ in range(100):
                await nc.publish(f"{prefix}.evt.flood.item", _BODY)
            await asyncio.sleep(0.05)
        await nc.flush(timeout=30)
        await eventually(lambda: slow.handled + quick.handled == n, timeout_s=120)
        await slow_node.drain()
        await quick_node.drain()
        assert slow.handled + quick.handled == n  # each event once: none lost, none twice
        exposer = slow_node.transport._exposer  # type: ignore[attr-defined]
        assert exposer.sheds >= 1
        assert quick.handled > n * 0.65  # far more than the half a random split gives
        assert exposer._shed == []  # caught up: back in the group
        for node in (slow_node, quick_node):
            assert dict(node.transport.rejected) == {}
