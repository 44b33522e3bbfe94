"""What weighted routing costs a remote call, beside the bare transport request (its floor).

    python bench/routing.py            # full run
    python bench/routing.py --quick    # a few seconds

One nats-server on loopback; two nodes serve ``echo`` 1.0.0 and 2.0.0, two
callers share the process (one without a ``[routing]`` table, one with a
90 / 10 table, sticky by a parameter). Each round runs every case for the
same number of sequential calls, in turn (interleaved rounds); a round's
rate is 1 / its median call (a loaded machine's stalls stay in p99), and
the median round is kept:

* floor: ``transport.request`` (what ``Router.send`` did before routing);
* no table: ``Router.send`` with no ``[routing]`` (must cost the floor);
* weighted: ``Router.send`` picking a node by the 90 / 10 weights;
* sticky: the same, the version chosen by the hash of ``user_id``;
* mirrored: no weights, a shadow copy of every call to 2.0.0 (``percent = 100``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from _common import Row, percentile, publish

from organelle import Kernel, Module, rpc
from organelle.context import root_context
from organelle.testing.servers import NatsServer

PARAMS = {"n": 1, "text": "hello organelle"}


class EchoV1(Module):
    name = "echo"
    version = "1.0.0"

    @rpc
    async def echo(self, n: int, text: str) -> dict[str, Any]:
        return {"n": n, "text": text}


class EchoV2(EchoV1):
    version = "2.0.0"


class Caller(Module):
    name = "caller"


def node(url: str, routing: dict[str, Any] | None = None) -> dict[str, Any]:
    options = {"prefix": "benchroute", "heartbeat_s": 0.5, "registry_ttl_s": 6.0}
    kernel = {"transport": url, "transport_options": options, "prefer_local": False}
    return {"kernel": kernel, "routing": routing or {}}


async def timed(call: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        began = time.perf_counter()
        await call()
        out.append(time.perf_counter() - began)
    return out


async def main(quick: bool) -> None:
    rounds, calls = (5, 500) if quick else (9, 3000)
    async with NatsServer() as server:
        url = server.url
        kernels = [Kernel([EchoV1], node(url)), Kernel([EchoV2], node(url))]
        plain = Kernel([Caller], node(url))
        weighted = Kernel([Caller], node(url, {"echo": {"weights": {"1.0.0": 90, "2.0.0": 10}}}))
        sticky = Kernel(
            [Caller],
            node(url, {"echo": {"weights": {"1.0.0": 90, "2.0.0": 10}, "sticky": "param:n"}}),
        )
        mirrored = Kernel(
            [Caller], node(url, {"echo": {"mirror": {"version": "2.0.0", "percent": 100}}})
        )
        everyone = [*kernels, plain, weighted, sticky, mirrored]
        for kernel in everyone:
            await kernel.start()
        try:
            for kernel in (weighted, sticky, mirrored):
                while len(kernel.transport.versions("echo")) < 2:
                    await asyncio.sleep(0.05)
            cases: dict[str, Callable[[], Awaitable[Any]]] = {
                "floor: transport.request": lambda: plain.transport.request(
                    "echo.echo", dict(PARAMS), root_context()
                ),
                "no table: Router.send": lambda: plain._router.send(
                    "echo.echo", dict(PARAMS), root_context()
                ),
                "weighted 90/10": lambda: weighted._router.send(
                    "echo.echo", dict(PARAMS), root_context()
                ),
                "sticky 90/10": lambda: sticky._router.send(
                    "echo.echo", dict(PARAMS), root_context()
                ),
                "mirror 100 %": lambda: mirrored._router.send(
                    "echo.echo", dict(PARAMS), root_context()
                ),
            }
            picks = []
            ctx = root_context()
            for _ in range(rounds):  # the pick alone, no I/O: its CPU cost per call
                for kernel in (weighted, sticky):
                    routing = kernel._router.routing
                    began = time.perf_counter()
                    for _ in range(20_000):
                        routing.pick("echo.echo", PARAMS, ctx)
                    picks.append((time.perf_counter() - began) / 20_000)
            for call in cases.values():  # warm up
                await timed(call, 200)
            per_round: dict[str, list[float]] = {name: [] for name in cases}
            samples: dict[str, list[float]] = {name: [] for name in cases}
            for _ in range(rounds):
                for name, call in cases.items():
                    got = await timed(call, calls)
                    per_round[name].append(1 / statistics.median(got))
                    samples[name] += got
                    await asyncio.sleep(0.05)  # let shadow copies finish between cases
        finally:
            for kernel in reversed(everyone):
                await kernel.stop()
    floor = statistics.median(per_round["floor: transport.request"])
    rows = []
    for name in cases:
        rate = statistics.median(per_round[name])
        rows.append(
            Row(
                case="remote call, 1 in flight",
                subject=name,
                value=rate,
                unit="calls/s",
                baseline="floor" if not name.startswith("floor") else "",
                ratio=rate / floor,
                p50_us=percentile(samples[name], 50) * 1e6,
                p99_us=percentile(samples[name], 99) * 1e6,
                target="≥ 0.97× floor" if name.startswith("no table") else "",
            )
        )
    rows.append(
        Row(
            case="Routing.pick alone (CPU)",
            subject="weighted and sticky, 20,000 picks",
            value=1 / statistics.median(picks),
            unit="picks/s",
            p50_us=statistics.median(picks) * 1e6,
        )
    )
    publish(
        "routing",
        "Weighted routing: the cost of a remote call over NATS",
        rows,
        notes=(
            f"{rounds} interleaved rounds of {calls} sequential calls per case; a round's rate "
            "is 1 / its median call, the median round is shown; "
            "callers and servers share one process and event loop with nats-server on "
            "loopback. Ratio: calls/s over the floor (higher is better). Measured on a shared "
            "2-core machine while other work ran: read the ratios, not the absolute rates. "
            "The no-table row is the path every call without `[routing]` takes; a routed call "
            "adds the pick (the last row: a few µs of CPU, no I/O) and its counters. The "
            "mirror row doubles the calls and the servers run in the same process, so the "
            "copy's work lands on the caller's loop here; across processes a caller pays "
            "only the task that sends the copy.\n"
            f"{'Quick run. ' if quick else ''}\n"
        ),
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    asyncio.run(main(parser.parse_args().quick))
