"""organelle's events are CloudEvents over NATS: the official SDK reads and writes them.

No organelle code on the other side: raw nats-py and the ``cloudevents`` SDK
(its HTTP binding, whose binary and structured modes are the NATS binding's
header layout) publish events organelle handlers take, and read the events
organelle publishes.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import msgspec
import nats
import pytest
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.v1.event import CloudEvent

from organelle import Envelope, Module, event, on
from organelle.testing import eventually, running
from organelle.testing.servers import NatsServer

from .conftest import Config

pytestmark = pytest.mark.timeout(30)


@event("ce.order.placed", version=3, key=("order_id",))
class OrderPlaced(msgspec.Struct):
    order_id: str
    total: float


class Orders(Module):
    name = "orders"

    def __init__(self) -> None:
        self.got: list[Envelope[OrderPlaced]] = []
        self.notes: list[Envelope[Any]] = []

    @on(OrderPlaced)
    async def placed(self, env: Envelope[OrderPlaced]) -> None:
        self.got.append(env)

    @on("ce.note")
    async def note(self, env: Envelope[Any]) -> None:
        self.notes.append(env)


async def test_the_sdk_reads_what_organelle_publishes(
    nats_server: NatsServer, prefix: str, config: Config
) -> None:
    nc = await nats.connect(nats_server.url)
    received: list[Any] = []

    async def take(msg: Any) -> None:
        received.append(ce_http.from_binary_event(ce_http.HTTPMessage(msg.headers, msg.data)))

    try:
        await nc.subscribe(f"{prefix}.evt.ce.order.placed", cb=take)
        await nc.flush()
        async with running(config=config(kernel={"app": "ce-shop"})) as kernel:
            await kernel.emit(OrderPlaced(order_id="o-9", total=12.5), key="o-9")
            await eventually(lambda: len(received) == 1)
        got = received[0]
        assert got.get_type() == "ce.order.placed"
        assert got.get_specversion() == "1.0"
        assert got.get_source().startswith("/organelle/ce-shop/")
        assert got.get_data() == {"order_id": "o-9", "total": 12.5}
        assert got.get_extension("dataversion") == "3"
        assert got.get_extension("partitionkey") == "o-9"
        assert isinstance(got.get_time(), datetime)
        assert got.get_id() == (await _again(nats_server, prefix, config))
    finally:
        await nc.close()


async def _again(nats_server: NatsServer, prefix: str, config: Config) -> str:
    """The id another process gives the same business fact (read with the SDK)."""
    nc = await nats.connect(nats_server.url)
    ids: list[str] = []

    async def take(msg: Any) -> None:
        ids.append(ce_http.from_binary_event(ce_http.HTTPMessage(msg.headers, msg.data)).get_id())

    try:
        await nc.subscribe(f"{prefix}.evt.ce.order.placed", cb=take)
        await nc.flush()
        async with running(config=config(kernel={"app": "ce-shop"})) as kernel:
            await kernel.emit(OrderPlaced(order_id="o-9", total=99.0))
            await eventually(lambda: len(ids) == 1)
        return ids[0]
    finally:
        await nc.close()


@pytest.mark.parametrize("mode", ["binary", "structured"])
async def test_an_event_the_sdk_writes_reaches_organelle_handlers(
    nats_server: NatsServer, prefix: str, config: Config, mode: str
) -> None:
    async with running(Orders, config=config()) as kernel:
        orders: Orders = kernel.module("orders")  # type: ignore[assignment]
        nc = await nats.connect(nats_server.url)
        try:
            when = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
            placed = CloudEvent(
                {
                    "id": "sdk-1",
                    "source": "https://billing.example/eu",
                    "type": "ce.order.placed",
                    "specversion": "1.0",
                    "time": when,
                    "datacontenttype": "application/json",
                    "dataversion": "3",
                    "subject": "o-1",
                },
                {"order_id": "o-1", "total": 3.0},
            )
            text = CloudEvent(
                {
                    "id": "sdk-2",
                    "source": "/sdk",
                    "type": "ce.note",
                    "specversion": "1.0",
                    "datacontenttype": "text/plain",
                },
                "hello",
            )
            for ce in (placed, text):
                to = ce_http.to_binary_event if mode == "binary" else ce_http.to_structured_event
                msg = to(ce)
                subject = f"{prefix}.evt.{ce.get_type()}"
                await nc.publish(subject, msg.body, headers=dict(msg.headers))
            await nc.flush()
            await eventually(lambda: orders.got and orders.notes)
        finally:
            await nc.close()
        env = orders.got[0]
        assert env.data == OrderPlaced(order_id="o-1", total=3.0)
        assert (env.id, env.source, env.type, env.subject) == (
            "sdk-1",
            "https://billing.example/eu",
            "ce.order.placed",
            "o-1",
        )
        assert (env.time, env.dataversion) == (when, 3)
        assert orders.notes[0].data == "hello"
        assert orders.notes[0].id == "sdk-2"


async def test_a_plain_nats_event_gets_an_envelope_when_a_handler_asks(
    nats_server: NatsServer, config: Config, prefix: str
) -> None:
    async with running(Orders, config=config()) as kernel:
        orders: Orders = kernel.module("orders")  # type: ignore[assignment]
        nc = await nats.connect(nats_server.url)
        try:
            await nc.publish(f"{prefix}.evt.ce.note", b'{"x": 1}')
            await nc.flush()
            await eventually(lambda: orders.notes)
        finally:
            await nc.close()
        env = orders.notes[0]
        assert env.data == {"x": 1}
        assert env.type == "ce.note"
        assert env.source == "/organelle/foreign"
        assert len(env.id) == 36  # a fresh UUIDv7


async def test_a_broken_cloudevent_is_dropped_not_delivered(
    nats_server: NatsServer, config: Config, prefix: str
) -> None:
    async with running(Orders, config=config()) as kernel:
        orders: Orders = kernel.module("orders")  # type: ignore[assignment]
        nc = await nats.connect(nats_server.url)
        try:
            bad = {"ce-id": "x", "ce-specversion": "1.0"}  # no source, no type
            await nc.publish(f"{prefix}.evt.ce.note", b"{}", headers=bad)
            await nc.publish(f"{prefix}.evt.ce.note", b'{"ok": 1}')
            await nc.flush()
            await eventually(lambda: orders.notes)
            await asyncio.sleep(0)
        finally:
            await nc.close()
        assert [n.data for n in orders.notes] == [{"ok": 1}]
