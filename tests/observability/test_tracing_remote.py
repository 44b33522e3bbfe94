"""A remote RPC gets a CLIENT span on the calling node; the remote SERVER span is its child."""

from __future__ import annotations

import uuid
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from organelle import Kernel, Module, rpc
from organelle.observability.tracing import Tracing
from organelle.testing.servers import NatsServer


class Far(Module):
    name = "far"

    @rpc
    async def ping(self) -> str:
        return "pong"


class Near(Module):
    name = "near"

    @rpc
    async def relay(self) -> str:
        return str(await self.call("far.ping"))


async def test_remote_call_has_client_span_parent_of_server_span() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with NatsServer() as nats:
        options: dict[str, Any] = {"prefix": f"t{uuid.uuid4().hex[:8]}", "heartbeat_s": 0.2}
        config = {"kernel": {"transport": nats.url, "transport_options": options}}
        far, near = Kernel([Far], config), Kernel([Near], config)
        Tracing(far, provider.get_tracer("far")).install()
        Tracing(near, provider.get_tracer("near")).install()
        async with far, near:
            await near.wait_for("far", 10)
            assert await near.call("near.relay") == "pong"
    spans = exporter.get_finished_spans()
    relay = next(s for s in spans if s.name == "near.relay" and s.kind is SpanKind.SERVER)
    client = next(s for s in spans if s.name == "far.ping" and s.kind is SpanKind.CLIENT)
    server = next(s for s in spans if s.name == "far.ping" and s.kind is SpanKind.SERVER)
    assert client.parent is not None
    assert client.parent.span_id == relay.context.span_id
    assert server.parent is not None
    assert server.parent.span_id == client.context.span_id
    assert len({relay.context.trace_id, client.context.trace_id, server.context.trace_id}) == 1
