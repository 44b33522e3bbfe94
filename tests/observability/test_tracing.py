"""Tracing: spans for RPC, events and lifecycle, linked through meta["traceparent"]."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from organelle import Kernel, Module, context, on, rpc
from organelle.observability.tracing import (
    Tracing,
    format_traceparent,
    parse_traceparent,
)
from organelle.ops import Ops

SEEN: list[dict[str, Any]] = []


class Pricing(Module):
    name = "pricing"

    @rpc
    async def quote(self, sku: str) -> float:
        return 2.0

    @rpc
    async def broken(self) -> None:
        raise RuntimeError("no price")


class Orders(Module):
    name = "orders"
    requires = ("pricing",)

    @rpc
    async def place(self, sku: str) -> float:
        price: float = await self.call("pricing.quote", sku=sku)
        await self.emit("order.placed", {"sku": sku})
        return price

    @on("order.placed")
    async def audit(self, event: dict[str, Any]) -> None:
        SEEN.append(dict(context().meta))


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    SEEN.clear()
    exp = InMemorySpanExporter()
    yield exp
    exp.clear()


def tracer(exp: InMemorySpanExporter) -> Any:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    return provider.get_tracer("test")


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


async def test_rpc_nested_rpc_and_event_share_one_trace(exporter: InMemorySpanExporter) -> None:
    kernel = Kernel([Pricing, Orders])
    Tracing(kernel, tracer(exporter)).install()
    async with kernel:
        assert await kernel.call("orders.place", sku="A1") == 2.0
        await kernel.drain()
    spans = exporter.get_finished_spans()
    place = by_name(spans, "orders.place")
    quote = by_name(spans, "pricing.quote")
    publish = by_name(spans, "order.placed publish")
    handle = by_name(spans, "order.placed process")
    assert place.parent is None
    assert place.kind is SpanKind.SERVER
    trace_id = place.context.trace_id
    for child in (quote, publish, handle):
        assert child.context.trace_id == trace_id
        assert child.parent is not None
        assert child.parent.span_id == place.context.span_id
    assert handle.kind is SpanKind.CONSUMER
    assert publish.kind is SpanKind.PRODUCER
    # the handler's context carries its own span as traceparent (what nested work inherits)
    assert SEEN[0]["traceparent"] == format_traceparent(handle.context)
    # lifecycle hooks have spans too
    names = {s.name for s in spans}
    assert {"pricing on_start", "orders on_start", "orders on_stop"} <= names


async def test_incoming_traceparent_is_the_parent(exporter: InMemorySpanExporter) -> None:
    kernel = Kernel([Pricing])
    Tracing(kernel, tracer(exporter)).install()
    incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with kernel:
        await kernel.call_with("pricing.quote", {"sku": "x"}, meta={"traceparent": incoming})
    span = by_name(exporter.get_finished_spans(), "pricing.quote")
    assert f"{span.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == "b7ad6b7169203331"


async def test_errors_mark_the_span(exporter: InMemorySpanExporter) -> None:
    kernel = Kernel([Pricing])
    Tracing(kernel, tracer(exporter)).install()
    async with kernel:
        with pytest.raises(Exception, match="no price"):
            await kernel.call("pricing.broken")
    span = by_name(exporter.get_finished_spans(), "pricing.broken")
    assert span.status.status_code is StatusCode.ERROR
    assert span.events[0].name == "exception"


def test_traceparent_parsing() -> None:
    good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    ctx = parse_traceparent(good)
    assert ctx is not None
    assert format_traceparent(ctx) == good
    for bad in (None, 3, "", "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                "00-00000000000000000000000000000000-b7ad6b7169203331-01",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333z-01",
                "00-0af7651916cd43dd8448eb211c80319c+b7ad6b7169203331-01"):  # fmt: skip
        assert parse_traceparent(bad) is None


async def test_tracing_off_installs_nothing() -> None:
    kernel = Kernel([Pricing])
    async with Ops(kernel, metrics=False):
        assert kernel.middleware == ()
        assert [type(x).__name__ for x in kernel._listeners.all] == ["StateLog"]  # logs only


async def test_http_requests_and_enqueues_get_spans(exporter: InMemorySpanExporter) -> None:
    import httpx

    from organelle import job, route
    from organelle.gateway import Gateway

    class Shop(Module):
        name = "shop"

        @route.get("/price/{sku}")
        async def price(self, sku: str) -> float:
            await self.enqueue("shop.restock", sku=sku)
            return 2.0

        @job
        async def restock(self, sku: str) -> None:
            pass

    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    config = {"kernel": {"jobs": "memory://"}, "modules": {"gateway": {"port": 0}}}
    kernel = Kernel([Shop, Gateway], config)
    Tracing(kernel, tracer(exporter)).install()
    async with kernel:
        app = kernel.module("gateway").app  # type: ignore[attr-defined]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            r = await client.get("/price/A1", headers={"traceparent": traceparent})
        assert r.json() == 2.0
        await kernel.drain_jobs()
    spans = exporter.get_finished_spans()
    http = by_name(spans, "GET /price/{sku}")
    served = by_name(spans, "shop.price")
    enqueue = by_name(spans, "shop.restock enqueue")
    assert http.kind is SpanKind.SERVER
    assert http.parent is not None
    assert f"{http.parent.trace_id:032x}" == traceparent.split("-")[1]  # the client's trace
    assert served.parent is not None
    assert served.parent.span_id == http.context.span_id
    assert enqueue.kind is SpanKind.PRODUCER
    assert enqueue.parent is not None
    assert enqueue.parent.span_id == served.context.span_id
