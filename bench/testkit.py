"""What one kernel test costs with ``running()``'s in-memory data beside the on-disk defaults.

A "test" is what a module's test does: start a kernel whose module uses the
Store, a durable job and a stream consumer, make one call that puts a key,
enqueues the job and appends a record, wait with ``drain_jobs()`` and
``drain_streams()``, stop. ``running()`` keeps the Store, job queue and stream
log in memory (the subject); the peer is the same test on the kernel's own
defaults — SQLite files (``organelle.db``, ``organelle-jobs.db``,
``organelle-streams.db``), what ``running()`` used before, each test in a
fresh folder so no state leaks. The floor is a kernel with a module that
touches no data port (start, one call, stop). Rounds are interleaved and the
median round of each side is kept.

Run: ``python bench/testkit.py`` (about half a minute).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _common import Row, median, percentile, publish

from organelle import Module, consume, job, rpc
from organelle.testing import running

ROUNDS = 7
TESTS = 15


class Notes(Module):
    name = "notes"

    @rpc
    async def add(self, text: str) -> None:
        await self.store.put(text, {"text": text})
        await self.enqueue("notes.index", text=text)
        await self.append("notes", {"text": text})

    @job
    async def index(self, text: str) -> None:
        await self.store.put(f"indexed:{text}", {"done": True})

    @consume("notes")
    async def read(self, record: dict[str, Any]) -> None:
        pass


class Plain(Module):
    name = "plain"

    @rpc
    async def ping(self) -> str:
        return "pong"


async def in_memory() -> None:
    async with running(Notes) as k:
        await k.call("notes.add", text="a")
        await k.drain_jobs()
        await k.drain_streams()


async def on_disk() -> None:
    with tempfile.TemporaryDirectory() as folder:
        config = {
            "kernel": {
                "storage": f"sqlite:///{folder}/organelle.db",
                "jobs": f"sqlite:///{folder}/organelle-jobs.db",
                "streams": f"sqlite:///{folder}/organelle-streams.db",
            }
        }
        async with running(Notes, config=config) as k:
            await k.call("notes.add", text="a")
            await k.drain_jobs()
            await k.drain_streams()


async def floor() -> None:
    async with running(Plain) as k:
        await k.call("plain.ping")


async def measure(test: Callable[[], Awaitable[None]]) -> tuple[float, list[float]]:
    lat = []
    start = time.perf_counter()
    for _ in range(TESTS):
        t0 = time.perf_counter()
        await test()
        lat.append(time.perf_counter() - t0)
    return TESTS / (time.perf_counter() - start), lat


async def main() -> None:
    os.chdir(tempfile.mkdtemp(prefix="organelle-bench-testkit-"))
    sides: dict[str, Callable[[], Awaitable[None]]] = {
        "floor": floor,
        "memory": in_memory,
        "disk": on_disk,
    }
    rates: dict[str, list[float]] = {k: [] for k in sides}
    lats: dict[str, list[float]] = {k: [] for k in sides}
    await in_memory()  # warm imports
    await on_disk()
    for r in range(ROUNDS):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        for name in order:
            rate, lat = await measure(sides[name])
            rates[name].append(rate)
            lats[name] += lat
    assert not list(Path.cwd().iterdir()), "running() left files in the working directory"

    def row(name: str, subject: str, baseline: str, ratio: float | None, target: str) -> Row:
        return Row(
            case="kernel test (start, call, job, record, drains, stop)",
            subject=subject,
            value=median(rates[name]),
            unit="tests/s",
            baseline=baseline,
            ratio=ratio,
            p50_us=percentile(lats[name], 50) * 1e6,
            p99_us=percentile(lats[name], 99) * 1e6,
            target=target,
        )

    mem, disk, flo = (median(rates[k]) for k in ("memory", "disk", "floor"))
    rows = [
        row("floor", "floor: a kernel, one call, no data port", "", None, ""),
        row("disk", "kernel defaults: SQLite files", "floor", disk / flo, ""),
        row("memory", "running(): in memory", "SQLite files", mem / disk, "≥ 1×"),
    ]
    notes = (
        "Each test starts and stops its own kernel: the in-memory Store, job queue and stream "
        "log of `running()` against the SQLite files a kernel makes by default (each test in a "
        "fresh folder). The floor is a kernel with a module that touches no data port. "
        f"{ROUNDS} interleaved rounds of {TESTS} tests; the median round is shown. Measured "
        "on a shared 2-core machine while other work ran, so the absolute figures are noisy; "
        "the ratios are the point.\n"
    )
    publish("testkit", "Testing kit: one kernel test", rows, notes)


if __name__ == "__main__":
    asyncio.run(main())
