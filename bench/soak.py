"""Soak: the shop split over three processes on NATS, under mixed load, for minutes.

Three ``organelle run`` processes serve the shop (pricing + inventory, orders +
notifications, the demo placing its own orders), joined by one NATS server
this script starts on loopback. A client kernel here drives a steady, paced
mix of calls (place, get and cancel orders, quotes, stock, restocks, the
notification log), and every order crosses processes as RPC and as events.

Every interval it prints, per process, the resident memory, and per call
kind the p50 / p99 / max latency and the counts of successes, expected
refusals (out of stock, an order the shop no longer keeps) and unexpected
errors. At the end it fits each process's memory over the intervals after the
warm-up and reports the growth per minute; "bounded" means the second half of
the run climbs, projected over an hour, less than 16 MiB or 10 % of the
process (caches fill up and level off; a leak keeps climbing).

    python bench/soak.py                 # 10 minutes, 60 s intervals
    python bench/soak.py --minutes 2 --interval-s 10
    python bench/soak.py --quick         # 3 intervals of 2.5 s, not published

The whole run is bounded: each call has a deadline, each phase a timeout, and
the processes it started are stopped (and killed if they linger) on any exit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import ROOT, Row, percentile, publish

APP = ROOT / "examples" / "shop" / "app.toml"
SKUS = ("apple", "pear", "coffee")
CUSTOMERS = ("ada", "grace", "linus", "barbara", "edsger", "margaret")
# Call kinds and their share of the mix.
MIX: dict[str, float] = {
    "place_order": 0.35,
    "get_order": 0.20,
    "quote": 0.15,
    "stock": 0.10,
    "cancel_order": 0.08,
    "restock": 0.07,
    "list_notifications": 0.05,
}
# Refusals the shop gives by design: they are counted apart from errors.
EXPECTED = {"shop.out_of_stock", "organelle.not_found"}
# A process may grow by this much an hour (projected from the second half of the run)
# and still count as bounded: allocator noise, not a leak.
HOURLY_MARGIN_MIB = 16.0
HOURLY_FACTOR = 0.10
# The driver keeps every latency sample for the whole-run percentiles: measured, not judged.
UNJUDGED = {"driver"}
MIN_SAMPLES = 6  # intervals after the warm-up before memory is judged at all


@dataclass
class Window:
    """What one interval saw, per call kind."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    ok: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    refused: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def rss_mib(pid: int) -> float:
    """Resident memory of a process from /proc (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Child:
    """One ``organelle run`` process whose output is drained (and kept short) in the background."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.tail: list[str] = []
        self._reader = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.tail = [*self.tail[-40:], line.decode(errors="replace").rstrip()]

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._reader.cancel()


async def start_child(name: str, only: str, sets: list[str], cwd: Path) -> Child:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORGANELLE__")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "organelle.cli",
        "run",
        str(APP),
        "--only",
        only,
        *sets,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=cwd,
        env=env,
    )
    return Child(name, proc)


class Driver:
    """Paced callers: ``rate`` calls a second in all, spread over ``workers`` tasks."""

    def __init__(self, kernel: Any, rate: float, workers: int, seed: int) -> None:
        self.kernel = kernel
        self.rate = rate
        self.workers = workers
        self.window = Window()
        self.placed: list[str] = []
        self.rng = random.Random(seed)
        self.kinds = list(MIX)
        self.weights = list(MIX.values())
        self.stopping = False

    def swap(self) -> Window:
        window, self.window = self.window, Window()
        return window

    async def one(self, kind: str) -> None:
        rng, call = self.rng, self.kernel.call
        if kind == "place_order":
            lines = [
                {"sku": rng.choice(SKUS), "qty": rng.randint(1, 3)}
                for _ in range(rng.randint(1, 3))
            ]
            order = await call("orders.place_order", customer=rng.choice(CUSTOMERS), lines=lines)
            self.placed.append(order["id"] if isinstance(order, dict) else order.id)
            del self.placed[:-5000]  # the ids we ask for again later: bounded
        elif kind in ("get_order", "cancel_order"):
            if not self.placed:
                return
            await call(f"orders.{kind}", order_id=rng.choice(self.placed))
        elif kind == "quote":
            await call("pricing.quote", sku=rng.choice(SKUS), qty=rng.randint(1, 12))
        elif kind == "stock":
            await call("inventory.stock", sku=rng.choice(SKUS))
        elif kind == "restock":
            await call("inventory.restock", sku=rng.choice(SKUS), qty=rng.randint(5, 15))
        else:
            await call("notifications.list_notifications", limit=20)

    async def worker(self) -> None:
        from organelle.errors import OrganelleError

        loop = asyncio.get_running_loop()
        period = self.workers / self.rate
        due = loop.time() + self.rng.random() * period
        while not self.stopping:
            kind = self.rng.choices(self.kinds, self.weights)[0]
            window = self.window
            began = time.perf_counter()
            try:
                async with asyncio.timeout(5):
                    await self.one(kind)
            except OrganelleError as exc:
                (window.refused if exc.code in EXPECTED else window.errors)[
                    f"{kind}:{exc.code}"
                ] += 1
            except TimeoutError:
                window.errors[f"{kind}:timeout"] += 1
            else:
                window.latencies[kind].append(time.perf_counter() - began)
                window.ok[kind] += 1
            due += period
            await asyncio.sleep(max(0.0, due - loop.time()))
            if loop.time() - due > 1.0:  # fell behind by a second: do not burst to catch up
                due = loop.time()


async def answering(kernel: Any) -> None:
    """Wait until every module answers, not only is announced (bounded).

    A node announces its modules as it serves them, a moment before its
    kernel takes calls; a call in that window is refused as "starting".
    """
    from organelle.errors import NotFoundError, UnavailableError

    probes = [
        ("pricing.price_list", {}),
        ("inventory.stock", {"sku": "apple"}),
        ("notifications.list_notifications", {"limit": 1}),
        ("orders.get_order", {"order_id": "none"}),
    ]
    deadline = time.monotonic() + 60
    for target, params in probes:
        while True:
            try:
                await kernel.call(target, **params)
            except NotFoundError:
                pass  # an answer: the module takes calls
            except UnavailableError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
                continue
            break


def slope_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) samples, in MiB per minute."""
    n = len(samples)
    if n < 2:
        return 0.0
    mx = sum(t for t, _ in samples) / n
    my = sum(v for _, v in samples) / n
    var = sum((t - mx) ** 2 for t, _ in samples)
    if var == 0:
        return 0.0
    return sum((t - mx) * (v - my) for t, v in samples) / var * 60


def bounded(samples: list[tuple[float, float]]) -> bool:
    """No steady climb: the second half's slope, over an hour, stays within a margin.

    A cache filling up climbs early and levels off; a leak keeps climbing, so
    the fit is taken over the second half of the run only.
    """
    half = samples[len(samples) // 2 :] if len(samples) >= 4 else samples
    if not half:
        return False
    hourly = slope_per_min(half) * 60
    return hourly <= max(HOURLY_MARGIN_MIB, HOURLY_FACTOR * half[0][1])


async def soak(
    minutes: float, interval_s: float, rate: float, workers: int, warmup: int
) -> tuple[list[Row], str, bool]:
    from organelle import Kernel
    from organelle.testing.servers import NatsServer

    intervals = max(warmup + 2, round(minutes * 60 / interval_s))
    prefix = f"soak{os.getpid()}"
    server = NatsServer().start()
    children: list[Child] = []
    driver: Driver | None = None
    tasks: list[asyncio.Task[None]] = []
    try:
        sets = [
            "--set",
            f"kernel.transport={server.url}",
            "--set",
            f"kernel.transport_options.prefix={prefix}",
            "--set",
            "kernel.log_level=WARNING",
            "--set",
            "kernel.drain_timeout_s=3",
            "--set",
            "modules.inventory.stock.apple=100000",
            "--set",
            "modules.inventory.stock.pear=100000",
            "--set",
            "modules.inventory.stock.coffee=100000",
        ]
        work = Path(tempfile.mkdtemp(prefix="organelle-soak-"))
        for name, only, more in (
            ("stock", "pricing,inventory", []),
            ("orders", "orders,notifications", []),
            ("demo", "demo", ["--set", "modules.demo.interval_s=0.05"]),
        ):
            (work / name).mkdir()
            children.append(await start_child(name, only, [*sets, *more], work / name))
        config: dict[str, Any] = {
            "kernel": {
                "transport": server.url,
                "transport_options": {"prefix": prefix},
                "log_level": "WARNING",
            }
        }
        async with Kernel([], config) as kernel:
            for module in ("pricing", "inventory", "orders", "notifications"):
                await kernel.wait_for(module, 60)
            await answering(kernel)
            driver = Driver(kernel, rate, workers, seed=7)
            tasks = [
                asyncio.get_running_loop().create_task(driver.worker()) for _ in range(workers)
            ]
            pids = {c.name: c.proc.pid for c in children}
            pids["nats-server"] = server.pid or 0
            pids["driver"] = os.getpid()
            began = time.perf_counter()
            run = Run(list(pids), rate, intervals, interval_s)
            for i in range(intervals):
                await asyncio.sleep(interval_s)
                check_alive(children)
                now = time.perf_counter() - began
                run.sample(
                    driver.swap(), now, {n: rss_mib(p) for n, p in pids.items()}, i >= warmup
                )
            driver.stopping = True
            await asyncio.wait(tasks, timeout=10)
            run.elapsed = time.perf_counter() - began
    finally:
        if driver is not None:
            driver.stopping = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*(c.stop() for c in children), return_exceptions=True)
        server.close()
    return run.report()


def check_alive(children: list[Child]) -> None:
    """Fail the run, with the child's last lines, as soon as a process is gone."""
    for child in children:
        if child.proc.returncode is not None:
            tail = "\n".join(child.tail)
            raise RuntimeError(f"{child.name} exited ({child.proc.returncode}):\n{tail}")


class Run:
    """The samples of one soak: per interval memory and latency, and the totals."""

    def __init__(self, names: list[str], rate: float, intervals: int, interval_s: float) -> None:
        self.names = names
        self.rate = rate
        self.intervals = intervals
        self.interval_s = interval_s
        self.memory: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
        self.totals = Window()
        self.p99s: list[float] = []
        self.elapsed = 0.0
        header = "  ".join(f"{n:>11}" for n in names)
        print(
            f"{'t':>6}  {'calls':>7}  {'p50 ms':>7}  {'p99 ms':>7}  {'max ms':>7}  "
            f"{'refused':>7}  {'errors':>6}  RSS MiB: {header}",
            flush=True,
        )

    def sample(self, window: Window, now: float, rss: dict[str, float], counted: bool) -> None:
        """Add one interval; print its line. ``counted``: past the warm-up."""
        lat = [x for xs in window.latencies.values() for x in xs]
        for kind, xs in window.latencies.items():
            self.totals.latencies[kind].extend(xs)
        for src, dst in (
            (window.ok, self.totals.ok),
            (window.refused, self.totals.refused),
            (window.errors, self.totals.errors),
        ):
            for key, count in src.items():
                dst[key] += count
        if counted:
            for name, value in rss.items():
                self.memory[name].append((now, value))
            self.p99s.append(percentile(lat, 99) * 1e3)
        cells = "  ".join(f"{rss[n]:>11.1f}" for n in self.names)
        print(
            f"{now:>5.0f}s  {len(lat):>7}  {percentile(lat, 50) * 1e3:>7.2f}  "
            f"{percentile(lat, 99) * 1e3:>7.2f}  {max(lat, default=0) * 1e3:>7.1f}  "
            f"{sum(window.refused.values()):>7}  {sum(window.errors.values()):>6}  "
            f"RSS MiB: {cells}",
            flush=True,
        )
        if window.errors:
            print(f"        errors: {dict(window.errors)}", flush=True)

    def report(self) -> tuple[list[Row], str, bool]:
        """The published rows, the verdict line, and whether it holds."""
        return report(self)


def verdict_of(name: str, holds: bool, judged: bool) -> str:
    if name in UNJUDGED:
        return "not judged (keeps the samples)"
    if not judged:
        return "too short to judge"
    return "bounded" if holds else "GROWING"


def report(run: Run) -> tuple[list[Row], str, bool]:
    """Rows for calls, latency per kind, errors, p99 drift and each process's memory."""
    totals, p99s, memory, elapsed = run.totals, run.p99s, run.memory, run.elapsed
    rate, intervals, interval_s = run.rate, run.intervals, run.interval_s
    rows: list[Row] = []
    calls = sum(totals.ok.values())
    errors = sum(totals.errors.values())
    rows.append(
        Row(
            "calls, all kinds",
            f"{intervals} × {interval_s:g} s at {rate:g}/s offered",
            calls / elapsed,
            unit="calls/s",
            baseline="offered rate",
            ratio=calls / elapsed / rate,
            extra={"calls": calls, "refused": dict(totals.refused), "errors": dict(totals.errors)},
        )
    )
    for kind in MIX:
        xs = totals.latencies.get(kind, [])
        if xs:
            rows.append(
                Row(
                    f"latency, {kind}",
                    "whole run",
                    len(xs),
                    unit="calls",
                    p50_us=percentile(xs, 50) * 1e6,
                    p99_us=percentile(xs, 99) * 1e6,
                )
            )
    rows.append(
        Row(
            "unexpected errors",
            "timeouts and error codes other than out-of-stock / not-found",
            errors,
            unit="errors",
            target="0",
        )
    )
    if len(p99s) >= 2:
        third = max(1, len(p99s) // 3)
        first = sorted(p99s[:third])[third // 2]
        last = sorted(p99s[-third:])[third // 2]
        rows.append(
            Row(
                "p99 latency drift",
                "median p99 of the last third / of the first third (after warm-up)",
                last / first,
                unit="×",
                target="no upward trend",
            )
        )
    ok = errors == 0
    judged = min((len(s) for s in memory.values()), default=0) >= MIN_SAMPLES
    for name, samples in memory.items():
        values = [v for _, v in samples]
        holds = bounded(samples)
        if name not in UNJUDGED and judged:
            ok = ok and holds
        rows.append(
            Row(
                f"RSS, {name}",
                "end of run",
                values[-1] if values else 0.0,
                unit="MiB",
                baseline=f"after warm-up {values[0]:.1f} MiB" if values else "",
                ratio=values[-1] / values[0] if values and values[0] else None,
                target=f"growth {slope_per_min(samples):+.2f} MiB/min; "
                + verdict_of(name, holds, judged),
            )
        )
    if not judged:
        verdict = "no unexpected error; too short to judge memory" if ok else "errors"
    else:
        verdict = "bounded: nothing grew, no unexpected error" if ok else "NOT BOUNDED or errors"
    return rows, verdict, ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--interval-s", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=400.0, help="calls a second, offered")
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=1, help="intervals left out of the fits")
    parser.add_argument("--quick", action="store_true", help="3 intervals of 2.5 s; not published")
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.interval_s, args.rate = 0.125, 2.5, 150.0
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    rows, verdict, ok = asyncio.run(
        asyncio.wait_for(
            soak(args.minutes, args.interval_s, args.rate, args.workers, args.warmup),
            timeout=args.minutes * 60 + 180,
        )
    )
    print(f"\n{verdict}")
    notes = (
        "The shop split over three `organelle run` processes on one NATS server "
        "(pricing + inventory, orders + notifications, the demo placing an order "
        "every 50 ms), driven by a client kernel offering a paced mix of calls "
        f"({', '.join(f'{k} {v:.0%}' for k, v in MIX.items())}). Memory is sampled each "
        "interval after the warm-up; growth is the least-squares slope over the run, and "
        "*bounded* means the slope of the second half, projected over an hour, stays "
        "under 16 MiB or 10 % of the process (a cache filling up levels off; a leak "
        "keeps climbing). The driver keeps every latency sample, so it is not judged. "
        "Refusals the shop gives by design (out of stock, an order it no longer keeps) "
        "are counted apart from errors. `python bench/soak.py` reproduces it "
        "(`--minutes`, `--interval-s`, `--rate`).\n"
        f"Load average at the end (1, 5, 15 min): "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores; "
        "latencies are the machine's as much as organelle's when it is busy.\n"
        f"\nVerdict: **{verdict}**.\n"
    )
    if not args.quick:
        publish("soak", "Soak: the shop over three processes on NATS", rows, notes)
    else:
        for row in rows:
            print(f"  {row.case}: {row.value:,.2f} {row.unit} {row.target}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
