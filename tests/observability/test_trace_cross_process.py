"""One request followed across two processes over NATS: RPC → event → job, one trace."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from organelle import Kernel, Module, rpc
from organelle.observability.tracing import Tracing
from organelle.testing.servers import NatsServer

ROOT = Path(__file__).resolve().parents[2]


class Front(Module):
    name = "front"

    @rpc
    async def go(self, n: int) -> int:
        await self.emit("trace.hop", {"n": n})
        return n


async def _read_until(stream: asyncio.StreamReader, marker: str, timeout_s: float) -> str:
    seen: list[str] = []
    async with asyncio.timeout(timeout_s):
        while True:
            line = (await stream.readline()).decode()
            if not line:
                raise AssertionError("child exited early: " + "".join(seen))
            seen.append(line)
            if marker in line:
                return line


async def test_rpc_event_job_one_trace_across_processes(tmp_path: Path) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    out = tmp_path / "child-spans.json"
    with NatsServer() as nats:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.observability.trace_child",
            nats.url,
            prefix,
            str(tmp_path / "jobs.db"),
            str(out),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            assert child.stdout is not None
            await _read_until(child.stdout, "ready", 20)
            exporter = InMemorySpanExporter()
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            config: dict[str, Any] = {
                "kernel": {
                    "transport": nats.url,
                    "transport_options": {"prefix": prefix, "heartbeat_s": 0.2},
                }
            }
            kernel = Kernel([Front], config)
            Tracing(kernel, provider.get_tracer("parent")).install()
            async with kernel:
                await kernel.wait_for("back", 10)
                assert await kernel.call("front.go", n=7) == 7
                await _read_until(child.stdout, "worked 7", 20)
        finally:
            if child.returncode is None:
                child.send_signal(signal.SIGTERM)
            await asyncio.wait_for(child.wait(), 20)
    parent_spans = {s.name: s for s in exporter.get_finished_spans()}
    go = parent_spans["front.go"]
    assert go.kind is SpanKind.SERVER
    trace_id = go.context.trace_id
    child_spans = json.loads(out.read_text())
    consumer = next(s for s in child_spans if s["name"] == "trace.hop process")
    enqueue = next(s for s in child_spans if s["name"] == "back.work enqueue")
    job_run = next(s for s in child_spans if s["name"] == "back.work process")
    assert consumer["trace_id"] == trace_id == enqueue["trace_id"] == job_run["trace_id"]
    assert consumer["parent"] == go.context.span_id  # the event's handler is a child of the RPC
    assert enqueue["parent"] == consumer["span_id"]  # the handler enqueued the job
    assert job_run["parent"] == enqueue["span_id"]  # the job run follows from the enqueue
    assert consumer["kind"] == "CONSUMER"
