"""Metrics overhead on local RPC: metrics on vs off, lean accumulators vs prometheus-client.

    python bench/metrics_overhead.py            # full run (about a minute)
    python bench/metrics_overhead.py --quick    # a few seconds

Subjects, measured in one process, rounds interleaved so drift hits all alike:
* off — ``kernel.call`` with no middleware (the kernel's inline fast path);
* noop middleware — ``async def mw(inv, call_next): return await call_next(inv)``:
  the price of having any middleware chain at all;
* metrics (lean) — ``organelle.observability.metrics.Metrics``: ints in a
  per-method slot, exported by a Collector at scrape time;
* metrics (prometheus-client) — the same middleware calling ``Counter.inc`` and
  ``Histogram.observe`` on labelled children.
Two handlers: one that returns at once (the worst case: all overhead) and one
that awaits once (``asyncio.sleep(0)``, closer to real handlers doing I/O).
Target: metrics on >= 0.85x metrics off. Peer: Moleculer loses 68 % (0.32x).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from pathlib import Path
from typing import Any

# bench/ holds scripts named like stdlib modules (http.py): look there last, not first.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent / "src"))
sys.path.append(str(_BENCH))

from _common import Row, publish  # noqa: E402 - after the path fix above
from prometheus_client import CollectorRegistry, Counter, Histogram  # noqa: E402

from organelle import Kernel, Module, rpc  # noqa: E402
from organelle.kernel._dispatch import CallNext, Invocation  # noqa: E402
from organelle.observability.metrics import DEFAULT_BUCKETS, Metrics  # noqa: E402

MOLECULER_RATIO = 0.32


class Math(Module):
    name = "math"
    version = "1.0.0"

    @rpc
    async def add(self, a: int, b: int) -> int:
        return a + b

    @rpc
    async def add_io(self, a: int, b: int) -> int:
        await asyncio.sleep(0)
        return a + b


async def noop(inv: Invocation, call_next: CallNext) -> Any:
    return await call_next(inv)


def prometheus_middleware() -> Any:
    registry = CollectorRegistry()
    calls = Counter("rpc_calls", "calls", ["method"], registry=registry)
    errors = Counter("rpc_errors", "errors", ["method"], registry=registry)
    latency = Histogram(
        "rpc_seconds", "latency", ["method"], buckets=DEFAULT_BUCKETS, registry=registry
    )

    async def mw(inv: Invocation, call_next: CallNext) -> Any:
        started = time.perf_counter()
        try:
            return await call_next(inv)
        except Exception:
            errors.labels(inv.target).inc()
            raise
        finally:
            calls.labels(inv.target).inc()
            latency.labels(inv.target).observe(time.perf_counter() - started)

    return mw


async def measure(n: int, rounds: int, target: str) -> dict[str, float]:
    kernels: dict[str, Kernel] = {
        "off": Kernel([Math]),
        "noop middleware": Kernel([Math], middleware=[noop]),
        "metrics (lean)": Kernel([Math]),
        "metrics (prometheus-client)": Kernel([Math], middleware=[prometheus_middleware()]),
    }
    Metrics(kernels["metrics (lean)"]).install()
    for kernel in kernels.values():
        await kernel.start()
    best = dict.fromkeys(kernels, 0.0)
    try:
        for _ in range(rounds):
            for name, kernel in kernels.items():
                call = kernel.call
                gc.collect()
                t0 = time.perf_counter()
                for _ in range(n):
                    await call(target, a=1, b=2)
                best[name] = max(best[name], n / (time.perf_counter() - t0))
    finally:
        for kernel in kernels.values():
            await kernel.stop()
    return best


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, rounds = (10_000, 3) if args.quick else (50_000, 10)
    rows: list[Row] = []
    for label, target in (("returns at once", "math.add"), ("awaits once", "math.add_io")):
        rates = await measure(n, rounds, target)
        off, chain = rates["off"], rates["noop middleware"]
        for name, rate in rates.items():
            rows.append(
                Row(
                    f"local call, handler {label}",
                    name,
                    rate,
                    baseline="off" if name != "off" else "",
                    ratio=rate / off,
                    target="≥ 0.85× off" if name.startswith("metrics") else "",
                    extra={"vs_noop_middleware": rate / chain},
                )
            )
    notes = (
        "Ratios are to `off` (no middleware: the kernel's inline path). "
        "`vs_noop_middleware` in the JSON isolates what the metrics themselves cost "
        "from the cost of having a middleware chain at all. "
        f"Peer: Moleculer with metrics on runs at {MOLECULER_RATIO}× of metrics off.\n"
    )
    for r in rows:
        if r.subject != "off":
            print(
                f"{r.case:40} {r.subject:30} vs off {r.ratio:.2f}×  vs noop chain {r.extra['vs_noop_middleware']:.2f}×"
            )
    publish("metrics_overhead", "Metrics overhead (local RPC)", rows, notes)


if __name__ == "__main__":
    asyncio.run(main())
