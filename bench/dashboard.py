"""What switching the dashboard on costs local RPC, and what one chart sample costs.

    python bench/dashboard.py            # full run (about half a minute)
    python bench/dashboard.py --quick    # a few seconds

Subjects, measured in one process, rounds interleaved so drift hits all alike;
each round starts a fresh kernel with a gateway, so only one kernel (and only
its sampler) runs while it is measured:
* floor — the gateway without the dashboard: ``kernel.call`` on the inline path;
* dashboard on — the same with ``[modules.gateway.dashboard]`` on: the call
  counters (one increment per call, a histogram slot when the handler
  suspends) and the charts' sampler, here every 0.25 s (eight times the default rate).
Two handlers: one that returns at once (all overhead) and one that awaits once.
Then the time of one chart sample (``History.sample``) with two counted RPC methods and
100 due jobs, beside the sampling period it must fit in many times over.
Target: dashboard on >= 0.85x off.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

# bench/ holds scripts named like stdlib modules (http.py): look there last, not first.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent / "src"))
sys.path.append(str(_BENCH))

from _common import Row, median, publish  # noqa: E402 - after the path fix above

from organelle import Kernel, Module, job, rpc  # noqa: E402
from organelle.dashboard._history import History  # noqa: E402
from organelle.gateway import Gateway  # noqa: E402


class Svc(Module):
    name = "svc"

    @rpc
    async def fast(self, n: int) -> int:
        return n

    @rpc
    async def slow(self, n: int) -> int:
        await asyncio.sleep(0)
        return n

    @job
    async def work(self, n: int) -> int:
        return n


def _config(dashboard: bool) -> dict[str, Any]:
    gateway: dict[str, Any] = {"port": 0}
    if dashboard:
        gateway["dashboard"] = {"enabled": True, "refresh_s": 0.25}
    return {
        "kernel": {"storage": "memory://", "jobs": "memory://", "job_worker": False},
        "modules": {"gateway": gateway},
    }


async def calls_per_s(kernel: Kernel, target: str, calls: int) -> float:
    call = kernel.call
    started = time.perf_counter()
    for i in range(calls):
        await call(target, n=i)
    return calls / (time.perf_counter() - started)


async def one_round(dashboard: bool, calls: int) -> dict[str, float]:
    async with Kernel([Svc, Gateway()], _config(dashboard)) as kernel:
        await calls_per_s(kernel, "svc.slow", calls // 10)  # warm up
        return {
            "svc.fast": await calls_per_s(kernel, "svc.fast", calls),
            "svc.slow": await calls_per_s(kernel, "svc.slow", calls),
        }


async def sample_cost(samples: int) -> list[float]:
    """Seconds per ``History.sample`` on a kernel with two counted methods and 100 due jobs."""
    async with Kernel([Svc, Gateway()], _config(dashboard=True)) as kernel:
        history = History(kernel, period_s=2.0, size=300)
        for i in range(100):
            await kernel.call("svc.slow", n=i)
            await kernel.call("svc.fast", n=i)
            await kernel.enqueue("svc.work", n=i)
        timings = []
        for _ in range(samples):
            started = time.perf_counter()
            await history.sample()
            timings.append(time.perf_counter() - started)
        return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=0)
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 7)
    calls = 5_000 if args.quick else 30_000

    rates: dict[tuple[str, bool], list[float]] = {}
    for _ in range(rounds):
        for on in (False, True):
            for target, rate in asyncio.run(one_round(on, calls)).items():
                rates.setdefault((target, on), []).append(rate)
    timings = asyncio.run(sample_cost(50 if args.quick else 300))

    rows = []
    for target, label in (("svc.fast", "returns at once"), ("svc.slow", "awaits once")):
        floor = median(rates[(target, False)])
        for on in (False, True):
            rate = median(rates[(target, on)])
            rows.append(
                Row(
                    case=f"local RPC, handler {label}",
                    subject="dashboard on" if on else "floor: dashboard off",
                    value=rate,
                    unit="calls/s",
                    baseline="floor" if on else "",
                    ratio=rate / floor,
                    target="≥ 0.85x" if on else "",
                    extra={"rounds": rates[(target, on)]},
                )
            )
    per_sample = median(timings)
    rows.append(
        Row(
            case="one chart sample (2 methods, 100 due jobs)",
            subject="History.sample",
            value=per_sample * 1e6,
            unit="µs/sample",
            baseline="the 2 s default period",
            ratio=2.0 / per_sample,
            extra={"p90_us": sorted(timings)[int(len(timings) * 0.9)] * 1e6},
        )
    )
    notes = (
        "Each rate is the median over interleaved rounds, each round a fresh kernel and "
        "gateway with the dashboard off (the floor) or on; ratio is on over off. On, "
        "every call this node serves bumps its counters and, when the handler suspends, a "
        "histogram slot (those counters came with the read-only dashboard); the charts' "
        "sampler, new with the acting one, runs here every 0.25 s and costs one "
        "`History.sample` each time. The sample row's ratio is how many samples fit in the "
        "default 2 s period. Measured on a shared 2-core machine (rounds vary by ±10 %, "
        "and a run taken while other benchmarks start reads 0.78×): compare ratios within "
        "the run, not absolute figures across runs. Counted with callgrind, which the "
        "load cannot move (a run of 0 calls subtracted from one of 10,000, the handler "
        "that returns at once): 30.2 k instructions a call off, 31.2 k on, +3.3 %.\n"
    )
    publish("dashboard", "Dashboard: the cost of switching it on", rows, notes)


if __name__ == "__main__":
    main()
