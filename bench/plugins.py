"""The price of a plugin's manifest: a call and an emit from a guarded module beside a free one.

    python bench/plugins.py            # full run (about half a minute)
    python bench/plugins.py --quick    # a few seconds, for a smoke check

Three callers in one kernel, measured in the same interleaved rounds, each a
loop of ``await self.call("math.add", a=1, b=2)`` inside one of its own
handlers (and the same with ``await self.emit("tick", n)`` plus a drain):

* floor — ``await handler(a=1, b=2)`` on the module's bound method, no kernel;
* free — a module without a manifest: ``self.call`` is the kernel's own call;
* plugin — a module with ``Manifest(rpc=("math.add",), emit=("tick",))``: its
  ``self.call`` checks the target against the manifest (a set lookup once the
  target has been seen) before the kernel's call.

The ratio that matters is plugin / free.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from _common import Row, median, publish

from organelle import Kernel, Module, on, rpc
from organelle._native import speedups
from organelle.plugins import Manifest

PATH = "C path" if speedups is not None else "pure Python (no C extension)"


class Math(Module):
    name = "math"

    @rpc
    async def add(self, a: int, b: int) -> int:
        return a + b

    @on("tick")
    async def on_tick(self, n: int) -> None:
        pass


class Caller(Module):
    """Loops of calls and emits, timed inside the module (no outer call in the figure)."""

    name = "free"

    @rpc
    async def calls(self, n: int) -> float:
        call = self.call
        began = time.perf_counter()
        for _ in range(n):
            await call("math.add", a=1, b=2)
        return time.perf_counter() - began

    @rpc
    async def emits(self, n: int) -> float:
        emit = self.emit
        began = time.perf_counter()
        for i in range(n):
            await emit("tick", i)
        return time.perf_counter() - began

    @rpc
    async def floor(self, n: int) -> float:
        add = self.kernel_math.add
        began = time.perf_counter()
        for _ in range(n):
            await add(a=1, b=2)
        return time.perf_counter() - began

    kernel_math: Any


class PluginCaller(Caller):
    name = "plugin"
    manifest = Manifest(kernel=">=0.1,<1", rpc=("math.add",), emit=("tick",))


async def measure(quick: bool) -> list[Row]:
    rounds = 5 if quick else 15
    n = 20_000 if quick else 100_000
    config = {"kernel": {"storage": "memory://"}}
    async with Kernel([Math, Caller, PluginCaller], config) as kernel:
        math = kernel.module("math")
        for name in ("free", "plugin"):
            kernel.module(name).kernel_math = math  # type: ignore[attr-defined]
        cases = [
            ("call", "floor: await handler()", "free.floor"),
            ("call", "free module: self.call", "free.calls"),
            ("call", "plugin module: self.call", "plugin.calls"),
            ("emit", "free module: self.emit", "free.emits"),
            ("emit", "plugin module: self.emit", "plugin.emits"),
        ]
        times: dict[str, list[float]] = {label: [] for _, label, _ in cases}
        for target in {t for _, _, t in cases}:  # warm up: first matches, caches, the C path
            await kernel.call(target, n=1000)
        await kernel.drain()
        for _ in range(rounds):
            order = list(cases)
            random.shuffle(order)  # interleaved, in a new order each round
            for _kind, label, target in order:
                gc.collect()
                took = await kernel.call(target, n=n)
                if target.endswith("emits"):
                    began = time.perf_counter()
                    await kernel.drain()  # the deliveries are part of an emit's cost
                    took += time.perf_counter() - began
                times[label].append(n / took)
    rate = {label: median(v) for label, v in times.items()}
    rows = []
    for kind, label, _ in cases:
        if label.startswith("floor"):
            rows.append(Row(kind, label, rate[label]))
        elif label.startswith("free"):
            base = "floor: await handler()" if kind == "call" else ""
            rows.append(
                Row(
                    kind,
                    label,
                    rate[label],
                    baseline=base,
                    ratio=rate[label] / rate[base] if base else None,
                )
            )
        else:
            base = f"free module: self.{kind}"
            rows.append(
                Row(
                    kind,
                    label,
                    rate[label],
                    baseline=base,
                    ratio=rate[label] / rate[base],
                )
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rows = asyncio.run(measure(args.quick))
    rounds = 5 if args.quick else 15
    notes = (
        f"Kernel {PATH}, one process, `memory://` Store; each figure is the median of {rounds} "
        "interleaved rounds (a new order each round) of a loop timed inside the calling "
        "module's handler. An emit's figure includes delivering it to one subscriber "
        "(`drain()`). Measured on a shared 2-core machine with other work running: compare "
        "the ratios, not the absolute rates. A plugin's call goes through one more Python "
        "function (the manifest check: a set lookup after the first use of a target) which "
        "forwards `**params` to the kernel's compiled call; most of the gap is that "
        "forwarding, not the check. A module without a manifest is attached to the kernel "
        "itself and pays nothing.\n"
    )
    publish(
        "plugins", "Plugin permissions: a guarded call and emit beside a free module", rows, notes
    )


if __name__ == "__main__":
    main()
