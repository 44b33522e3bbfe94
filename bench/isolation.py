"""The price of process isolation: a call to an isolated module beside the same call in process.

    python bench/isolation.py            # full run (about half a minute)
    python bench/isolation.py --quick    # a few seconds, for a smoke check

One kernel runs the same module class twice: ``adder`` in process and
``isolated_adder`` with ``isolate = true`` (a child process reached over the
kernel's private socketpair channel). Measured in the same interleaved rounds:

* sequential — a loop of ``await kernel.call("<m>.add", a=1, b=2)``: one call
  in flight, so the isolated figure is a full round trip between processes;
* concurrent — the same calls 64 at a time (``asyncio.gather``): the channel
  pipelines them, so the figure is throughput.

The floor of an isolated call is the process boundary itself: the same rounds
time a bare echo child (a framed message over a socketpair and back, no
kernel on either side; 64 frames written before reading for the concurrent
case). The ratios that matter are isolated / in process (the price of
isolation) and isolated / floor (what organelle adds to the boundary).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from _common import Row, median, percentile, publish
from _isolated import Adder, IsolatedAdder

from organelle import Kernel
from organelle._native import speedups

PATH = "C path" if speedups is not None else "pure Python (no C extension)"
BATCH = 64
FLOOR = "floor: echo child, no kernel"
ECHO = """
import asyncio, socket, sys
async def main():
    r, w = await asyncio.open_connection(sock=socket.socket(fileno=int(sys.argv[1])))
    while True:
        head = await r.readexactly(4)
        w.write(head + await r.readexactly(int.from_bytes(head, "big")))
asyncio.run(main())
"""


class Echo:
    """A bare child process that echoes length-prefixed frames: the boundary's floor."""

    async def start(self) -> None:
        ours, theirs = socket.socketpair()
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", ECHO, str(theirs.fileno()), pass_fds=(theirs.fileno(),)
        )
        theirs.close()
        self.reader, self.writer = await asyncio.open_connection(sock=ours)
        body = b"\x95\xa4call\x01\xaaadder.add\x82\xa1a\x01\xa1b\x02\xc0"  # a call's size
        self.frame = len(body).to_bytes(4, "big") + body

    async def sequential(self, n: int, latencies: list[float]) -> float:
        perf = time.perf_counter
        size = len(self.frame)
        began = perf()
        for _ in range(n):
            start = perf()
            self.writer.write(self.frame)
            await self.reader.readexactly(size)
            latencies.append(perf() - start)
        return n / (perf() - began)

    async def concurrent(self, n: int) -> float:
        size = len(self.frame)
        began = time.perf_counter()
        for _ in range(n // BATCH):
            self.writer.write(self.frame * BATCH)
            await self.reader.readexactly(size * BATCH)
        return (n // BATCH) * BATCH / (time.perf_counter() - began)

    async def stop(self) -> None:
        self.process.kill()
        await self.process.wait()
        self.writer.close()


async def sequential(kernel: Kernel, target: str, n: int, latencies: list[float]) -> float:
    call = kernel.call
    perf = time.perf_counter
    began = perf()
    for _ in range(n):
        start = perf()
        await call(target, a=1, b=2)
        latencies.append(perf() - start)
    return n / (perf() - began)


async def concurrent(kernel: Kernel, target: str, n: int) -> float:
    call = kernel.call
    began = time.perf_counter()
    for _ in range(n // BATCH):
        await asyncio.gather(*(call(target, a=1, b=2) for _ in range(BATCH)))
    return (n // BATCH) * BATCH / (time.perf_counter() - began)


async def measure(quick: bool) -> list[Row]:
    rounds = 5 if quick else 15
    n = 2_000 if quick else 10_000
    config = {
        "kernel": {"storage": "memory://"},
        "modules": {"isolated_adder": {"isolate": True}},
    }
    labels = {"adder": "in process", "isolated_adder": "isolated (child process)", "": FLOOR}
    echo = Echo()
    await echo.start()
    async with Kernel([Adder, IsolatedAdder], config) as kernel:

        async def run(kind: str, module: str, n: int, latencies: list[float]) -> float:
            if not module:
                if kind == "sequential":
                    return await echo.sequential(n, latencies)
                return await echo.concurrent(n)
            if kind == "sequential":
                return await sequential(kernel, f"{module}.add", n, latencies)
            return await concurrent(kernel, f"{module}.add", n)

        for kind in ("sequential", "concurrent"):  # warm up: caches, the C path, the child
            for module in labels:
                await run(kind, module, 500, [])
        rates: dict[tuple[str, str], list[float]] = {}
        latencies: dict[str, list[float]] = {m: [] for m in labels}  # sequential only
        for _ in range(rounds):
            order = [(kind, m) for kind in ("sequential", "concurrent") for m in labels]
            random.shuffle(order)  # interleaved, in a new order each round
            for kind, module in order:
                gc.collect()
                rate = await run(kind, module, n, latencies[module])
                rates.setdefault((kind, module), []).append(rate)
    await echo.stop()
    rows = []
    for kind in ("sequential", "concurrent"):
        rate = {m: median(rates[(kind, m)]) for m in labels}
        lat = {m: latencies[m] if kind == "sequential" else [] for m in labels}
        for module, base in (
            ("adder", None),
            ("", None),
            ("isolated_adder", "adder"),
            ("isolated_adder", ""),
        ):
            got = lat[module]
            rows.append(
                Row(
                    kind,
                    labels[module],
                    rate[module],
                    baseline="" if base is None else labels[base],
                    ratio=None if base is None else rate[module] / rate[base],
                    p50_us=percentile(got, 50) * 1e6 if got else None,
                    p99_us=percentile(got, 99) * 1e6 if got else None,
                )
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rows = asyncio.run(measure(args.quick))
    rounds = 5 if args.quick else 15
    by = {(r.case, r.subject, r.baseline): r for r in rows}
    seq = by[("sequential", "isolated (child process)", "in process")]
    seq_floor = by[("sequential", "isolated (child process)", FLOOR)]
    conc = by[("concurrent", "isolated (child process)", "in process")]
    conc_floor = by[("concurrent", "isolated (child process)", FLOOR)]
    notes = (
        f"Kernel {PATH}, `memory://` Store; one kernel runs the same module class in process "
        f"and isolated, beside a bare echo child (the floor); each figure is the median of "
        f"{rounds} interleaved rounds (a new order each round); concurrent = {BATCH} calls in "
        "flight. Latencies are per sequential call, over all rounds. Measured on a shared "
        "2-core machine with other work running: compare the ratios, not the absolute rates. "
        f"One isolated call at a time costs 1/{1 / (seq.ratio or 1):.0f} of an in-process "
        f"call's rate (p50 {seq.p50_us or 0:.0f} µs against under a microsecond): it is a "
        "round trip between two processes, and the bare round trip alone (the floor) takes "
        f"{seq_floor.ratio or 0:.0%} of an isolated call's time; the rest is encoding, the "
        f"stand-in's forward and the child kernel's call. With {BATCH} in flight the channel pipelines them "
        f"(frames of one loop turn leave in one write): {conc.ratio or 0:.2f}× of in process, "
        f"{conc_floor.ratio or 0:.2f}× of the floor, which does no per-call work at all. "
        "Isolate a module for its failures, not for speed; keep chatty calls in process.\n"
    )
    publish(
        "isolation",
        "Process isolation: a call to an isolated module beside the same call",
        rows,
        notes,
    )


if __name__ == "__main__":
    main()
