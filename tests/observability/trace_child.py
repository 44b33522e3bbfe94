"""The second process of the cross-process trace test: handles the event and runs the job.

Run as ``python -m tests.observability.trace_child <nats url> <prefix> <jobs db> <out file>``;
writes every finished span as JSON to ``<out file>`` when it stops (SIGTERM).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from organelle import Kernel, Module, job, on
from organelle.observability.tracing import Tracing


class Back(Module):
    name = "back"

    @on("trace.hop")
    async def hop(self, event: dict[str, Any]) -> None:
        await self.enqueue("back.work", n=int(event["n"]))

    @job(max_attempts=1)
    async def work(self, n: int) -> None:
        print(f"worked {n}", flush=True)


async def main(url: str, prefix: str, jobs_db: str, out: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    config = {
        "kernel": {
            "transport": url,
            "transport_options": {"prefix": prefix, "heartbeat_s": 0.2, "registry_ttl_s": 1.0},
            "jobs": f"sqlite:///{jobs_db}",
        }
    }
    kernel = Kernel([Back], config)
    Tracing(kernel, provider.get_tracer("child")).install()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with kernel:
        print("ready", flush=True)
        await stop.wait()
    spans = [
        {
            "name": s.name,
            "trace_id": s.context.trace_id,
            "span_id": s.context.span_id,
            "parent": s.parent.span_id if s.parent else None,
            "kind": s.kind.name,
        }
        for s in exporter.get_finished_spans()
    ]
    with open(out, "w", encoding="utf-8") as f:  # noqa: PTH123 - once, at exit
        json.dump(spans, f)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
