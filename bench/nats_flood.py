"""A flood of 4 KB events over NATS into one node: organelle (roomy queue, then a full one) beside raw nats-py.

    python bench/nats_flood.py            # 5 interleaved rounds of 12,000 events
    python bench/nats_flood.py --quick    # 2 rounds of 5,000

A raw nats-py client publishes N 4 KB JSON events as fast as it can; the
clock stops when the last one has been handled. Subjects:
* floor: a raw nats-py subscriber whose callback ``json.loads`` and counts;
* organelle, roomy queue: an ``@on`` handler that counts, default
  ``max_pending_events`` (the queue never fills);
* organelle, full queue: the same with ``max_pending_events = 10`` and
  ``max_concurrent_handlers = 1``, so nearly every event goes through the
  transport's backlog (issue 13's setup, without the 2 ms handler).
Every round checks that all N were handled and none counted as dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import nats

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from _common import Row, publish

from organelle import Kernel, Module, on
from organelle.testing.servers import NatsServer

BODY = b'{"pad": "' + b"x" * 4085 + b'"}'


class Sink(Module):
    name = "sink"

    async def on_start(self) -> None:
        self.handled = 0
        self.done = asyncio.Event()
        self.want = 0

    @on("flood.item")
    async def item(self, event: dict[str, Any]) -> None:  # noqa: ARG002 - counted, not read
        self.handled += 1
        if self.handled == self.want:
            self.done.set()


async def _flood(nc: Any, subject: str, n: int) -> None:
    for _ in range(n):
        await nc.publish(subject, BODY)
    await nc.flush(timeout=60)


async def floor(url: str, n: int) -> float:
    sub_nc, pub_nc = await nats.connect(url), await nats.connect(url)
    done = asyncio.Event()
    count = 0

    async def cb(msg: Any) -> None:
        nonlocal count
        json.loads(msg.data)
        count += 1
        if count == n:
            done.set()

    subject = f"f{uuid.uuid4().hex[:8]}.flood"
    await sub_nc.subscribe(subject, cb=cb)
    await sub_nc.flush()
    start = time.perf_counter()
    await _flood(pub_nc, subject, n)
    await asyncio.wait_for(done.wait(), 300)
    elapsed = time.perf_counter() - start
    await sub_nc.close()
    await pub_nc.close()
    return n / elapsed


async def organelle(url: str, n: int, *, full: bool) -> float:
    prefix = f"b{uuid.uuid4().hex[:8]}"
    kernel_opts: dict[str, Any] = {"transport": url, "transport_options": {"prefix": prefix}}
    if full:
        kernel_opts |= {"max_pending_events": 10, "max_concurrent_handlers": 1}
    async with Kernel([Sink], {"kernel": kernel_opts}) as kernel:
        sink = kernel.module("sink")
        assert isinstance(sink, Sink)
        sink.want = n
        pub_nc = await nats.connect(url)
        start = time.perf_counter()
        await _flood(pub_nc, f"{prefix}.evt.flood.item", n)
        rejected = kernel.transport.rejected
        async with asyncio.timeout(300):
            while not sink.done.is_set() and sink.handled + sum(rejected.values()) < n:
                await asyncio.wait({asyncio.ensure_future(sink.done.wait())}, timeout=0.05)
        elapsed = time.perf_counter() - start
        await pub_nc.close()
        rejected = dict(rejected)
        if sink.handled != n or rejected:
            raise SystemExit(f"lost events: handled {sink.handled} of {n}, rejected {rejected}")
    return n / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    # 12,000 x 4 KB stays under the default max_backlog_bytes even if none is handled meanwhile.
    rounds, n = (2, 5_000) if args.quick else (5, 12_000)
    subjects = {
        "raw nats-py": lambda url: floor(url, n),
        "organelle, roomy queue": lambda url: organelle(url, n, full=False),
        "organelle, full queue (backlog)": lambda url: organelle(url, n, full=True),
    }
    rates: dict[str, list[float]] = {name: [] for name in subjects}
    with NatsServer() as server:
        for r in range(rounds):  # interleaved: each round runs every subject once
            for name, run in subjects.items():
                rates[name].append(await run(server.url))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in rates.items()))
    base = statistics.median(rates["raw nats-py"])
    rows = [
        Row(
            case=f"{n:,} × 4 KB events, publish → handled",
            subject=name,
            value=statistics.median(values),
            unit="events/s",
            baseline="" if name == "raw nats-py" else "raw nats-py",
            ratio=None if name == "raw nats-py" else statistics.median(values) / base,
            extra={"rounds": values},
        )
        for name, values in rates.items()
    ]
    notes = (
        f"Median of {rounds} interleaved rounds, one process (publisher and consumer share "
        "a loop), one nats-server on loopback, measured on a shared 2-core machine with "
        "other work running: ratios are steadier than absolute figures. Every organelle "
        "round handled all events with nothing counted as dropped. The full-queue row is "
        "the backpressure path of docs/nats.md (*When a node cannot keep up*): events "
        "wait in the transport's backlog as raw bytes and are decoded when their turn "
        "comes; the socket is read all along.\n"
    )
    publish("nats_flood", "Event flood into one NATS node (backpressure)", rows, notes)


if __name__ == "__main__":
    asyncio.run(main())
