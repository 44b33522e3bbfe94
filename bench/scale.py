"""Costs as the number of modules grows: local call, emit, start and stop, RSS.

    python bench/scale.py            # 10 → 5,000 modules (about a minute)
    python bench/scale.py --quick    # 10 → 1,000

Each size builds N modules, each with one RPC method and one ``@on`` handler
of its own topic, starts a kernel, measures one local call and one emit to one
handler (the floor, a dict-dispatched ``await``, measured in the same rounds),
then stops it. A cost is flat when the largest size's figure stays within
1.2 times the smallest one's; start and stop are linear when the per-module
cost at the largest size stays within twice the one at the smallest.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from _common import Row, peak_rss_mb, publish

from organelle import Kernel, Module, on, rpc

ROUNDS = 7


def make_module(i: int) -> type[Module]:
    async def ping(self: Module, n: int) -> int:  # noqa: ARG001 - a method's shape
        return n

    async def got(self: Module, payload: Any) -> None:  # noqa: ARG001 - a handler's shape
        return None

    ping.__annotations__ = {"n": "int", "return": "int"}
    got.__annotations__ = {"payload": "Any", "return": "None"}
    ns = {
        "name": f"m{i}",
        "ping": rpc(ping),
        "got": on(f"topic.m{i}")(got),
        "__module__": __name__,
    }
    return type(f"M{i}", (Module,), ns)


async def timed(fns: dict[str, Any], count: int) -> dict[str, float]:
    """Best rate of each of ``fns`` over ``ROUNDS`` rounds, interleaved.

    Each round runs every function once, so a slow moment of the machine
    costs all of them alike and the ratios to the floor stay fair.
    """
    best = dict.fromkeys(fns, 0.0)
    for _ in range(ROUNDS):
        for name, fn in fns.items():
            gc.collect()
            start = time.perf_counter()
            await fn(count)
            best[name] = max(best[name], count / (time.perf_counter() - start))
    return best


async def one_size(n: int, count: int) -> dict[str, float]:
    classes = [make_module(i) for i in range(n)]
    # gc_freeze as `organelle run` has it: the modules built at start are not rescanned.
    kernel = Kernel(classes, {"kernel": {"max_pending_events": 100_000, "gc_freeze": True}})
    started = time.perf_counter()
    await kernel.start()
    start_s = time.perf_counter() - started
    target = f"m{n // 2}.ping"
    topic = f"topic.m{n // 2}"
    call = kernel.call
    emit = kernel.emit

    async def handler(n: int) -> int:
        return n

    handlers = {target: handler}

    async def floor(k: int) -> None:
        for _ in range(k):
            params = {"n": 1}
            await handlers[target](**params)

    async def calls(k: int) -> None:
        for _ in range(k):
            await call(target, n=1)

    async def emits(k: int) -> None:
        for _ in range(k):
            await emit(topic, 1)
        await kernel.drain()

    rates = await timed({"floor": floor, "call": calls, "emit": emits}, count)
    stopping = time.perf_counter()
    await kernel.stop()
    stop_s = time.perf_counter() - stopping
    gc.unfreeze()
    return {
        "floor": rates["floor"],
        "call": rates["call"],
        "emit": rates["emit"],
        "start_s": start_s,
        "stop_s": stop_s,
        "rss_mb": peak_rss_mb(),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    sizes = [10, 100, 1000] if args.quick else [10, 100, 1000, 5000]
    count = 20_000 if args.quick else 50_000
    results = {n: await one_size(n, count) for n in sizes}
    small, large = results[sizes[0]], results[sizes[-1]]
    rows: list[Row] = []
    for n in sizes:
        r = results[n]
        rows += [
            Row(
                f"local call, {n:,} modules",
                "kernel.call",
                r["call"],
                baseline="await handlers[name](**{...})",
                ratio=r["call"] / r["floor"],
            ),
            Row(
                f"emit → 1 handler, {n:,} modules",
                "kernel.emit + drain",
                r["emit"],
                baseline="await handlers[name](**{...})",
                ratio=r["emit"] / r["floor"],
            ),
            Row(f"start, {n:,} modules", "per module", r["start_s"] / n * 1e3, unit="ms"),
            Row(f"stop, {n:,} modules", "per module", r["stop_s"] / n * 1e3, unit="ms"),
        ]

    def spread(key: str) -> float:
        # Ratios to the floor of the same run cancel the machine's drift between sizes.
        return (small[key] / small["floor"]) / (large[key] / large["floor"])

    def per_module(key: str) -> float:
        return (large[key] / sizes[-1]) / (small[key] / sizes[0])

    rows += [
        Row(
            f"local call cost, {sizes[-1]:,} vs {sizes[0]} modules",
            "cost ratio",
            spread("call"),
            unit="×",
            target="≤ 1.2×",
        ),
        Row(
            f"emit cost, {sizes[-1]:,} vs {sizes[0]} modules",
            "cost ratio",
            spread("emit"),
            unit="×",
            target="≤ 1.2×",
        ),
        Row(
            f"start per module, {sizes[-1]:,} vs {sizes[0]} modules",
            "cost ratio",
            per_module("start_s"),
            unit="×",
            target="≤ 2×",
        ),
        Row(
            f"stop per module, {sizes[-1]:,} vs {sizes[0]} modules",
            "cost ratio",
            per_module("stop_s"),
            unit="×",
            target="≤ 2×",
        ),
        Row(f"peak RSS after {sizes[-1]:,} modules", "process", large["rss_mb"], unit="MiB"),
    ]
    publish(
        "scale",
        "Costs as the number of modules grows",
        rows,
        notes=(
            "Each module has one RPC method and one `@on` handler of its own topic; the call "
            "and the emit go to one of them. Cost ratios divide by the floor measured in the "
            "same size's rounds. `python bench/scale.py` reproduces it.\n"
        ),
    )


if __name__ == "__main__":
    asyncio.run(main())
