"""Cost curves: what one operation costs as the work around it grows.

    python bench/scale.py                  # every curve (several minutes)
    python bench/scale.py --quick          # small sizes, a smoke test (well under a minute)
    python bench/scale.py --only events    # one curve: modules, events, jobs, streams,
                                           # registry, clients

Each curve prints size → cost with the ratio of the largest size's cost to the
smallest's, beside a floor measured in the same rounds where one exists:

* modules: local call and emit with 10 → 5,000 modules (floor: a
  dict-dispatched ``await``), start and stop per module, RSS per module;
* events: emit with 10 → 10,000 subscriptions, a quarter of them wildcards,
  to a cached topic and to topics never routed before;
* jobs: pickup latency (enqueue → handler start, SQLite) with 1,000 →
  1,000,000 jobs waiting for later in the same queue;
* streams: consume rate of one group member with 1 → 64 partitions (SQLite);
* registry and clients (``bench/_scale_net.py``): 100 simulated nodes in the
  NATS registry; memory per idle SSE / WebSocket client.

Rounds are interleaved (each round runs every subject once) and the best of
them is kept, so a slow moment of a shared machine costs all subjects alike.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from _common import RESULTS, Row, percentile, publish

from organelle import Kernel, Module, job, on, rpc

ROUNDS = 5


def rss_mb() -> float:
    """Resident set size of this process now, in MiB (Linux)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096 / 2**20


def flat_ratio(case: str, small: float, large: float, target: str) -> Row:
    """The row that says how much the cost grew from the smallest size to the largest."""
    return Row(case, "cost ratio, largest / smallest size", large / small, unit="×", target=target)


async def best_rates(
    fns: dict[str, Callable[[int], Awaitable[None]]], count: int
) -> dict[str, float]:
    """Best rate of each of ``fns`` over ``ROUNDS`` interleaved rounds, in CPU time.

    The process's CPU time, not the wall clock: on a shared machine the wall
    clock mostly measures the neighbours. Everything timed runs in this process.
    """
    best = dict.fromkeys(fns, 0.0)
    for _ in range(ROUNDS):
        for name, fn in fns.items():
            gc.collect()
            start = time.process_time()
            await fn(count)
            best[name] = max(best[name], count / (time.process_time() - start))
    return best


# -- modules: call, emit, start, stop, RSS --------------------------------------


def make_module(i: int, n_subs: int = 1) -> type[Module]:
    """Module ``m<i>``: one RPC, ``n_subs`` handlers; every fifth has a wildcard too.

    It requires ``m<(i-1)//2>`` (a binary tree of dependencies: log2(n) start levels).
    """

    async def ping(self: Module, n: int) -> int:  # noqa: ARG001 - a method's shape
        return n

    ping.__annotations__ = {"n": "int", "return": "int"}
    ns: dict[str, Any] = {"name": f"m{i}", "ping": rpc(ping), "__module__": __name__}
    if i:
        ns["requires"] = [f"m{(i - 1) // 2}"]
    for j in range(n_subs):
        ns[f"got{j}"] = on(f"topic.m{i}.h{j}")(_handler())
    if i % 5 == 0:
        ns["wild"] = on(f"topic.m{i}.*")(_handler())
    return type(f"M{i}", (Module,), ns)


def _handler() -> Callable[..., Awaitable[None]]:
    async def got(self: Module, payload: Any) -> None:  # noqa: ARG001 - a handler's shape
        return None

    got.__annotations__ = {"payload": "Any", "return": "None"}
    return got


async def modules_size(n: int, count: int, starts: int) -> dict[str, float]:
    classes = [make_module(i) for i in range(n)]
    gc.collect()
    base_rss = rss_mb()
    config = {"kernel": {"max_pending_events": 100_000}}
    start_s = stop_s = start_wall = stop_wall = float("inf")
    for _ in range(starts):  # best of a few starts and stops: the machine is shared
        kernel = Kernel(classes, config)
        began, wall = time.process_time(), time.perf_counter()
        await kernel.start()
        start_s = min(start_s, time.process_time() - began)
        start_wall = time.perf_counter() - wall
        rss = rss_mb() - base_rss
        began, wall = time.process_time(), time.perf_counter()
        await kernel.stop()
        stop_s = min(stop_s, time.process_time() - began)
        stop_wall = time.perf_counter() - wall
        del kernel
        gc.collect()
    # The call and emit rounds, on a kernel frozen as `organelle run` freezes it.
    kernel = Kernel(classes, {"kernel": {**config["kernel"], "gc_freeze": True}})
    await kernel.start()
    target, topic = f"m{n // 2}.ping", f"topic.m{n // 2}.h0"
    call, emit = kernel.call, kernel.emit

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

    rates = await best_rates({"floor": floor, "call": calls, "emit": emits}, count)
    await kernel.stop()
    gc.unfreeze()
    return {
        **rates,
        "start_s": start_s,
        "stop_s": stop_s,
        "start_wall_s": start_wall,
        "stop_wall_s": stop_wall,
        "rss_mb": rss,
    }


async def modules_curve(quick: bool) -> list[Row]:
    sizes = [10, 100, 1000] if quick else [10, 100, 1000, 5000]
    count = 2_000 if quick else 50_000
    await modules_size(10, 100, 1)  # warm-up: first-use imports stay out of the 10's figures
    results = {n: await modules_size(n, count, 2 if quick else 3) for n in sizes}
    rows: list[Row] = []
    floor = "await handlers[name](**{...})"
    for n, r in results.items():
        rows += [
            Row(
                f"local call, {n:,} modules",
                "kernel.call",
                r["call"],
                baseline=floor,
                ratio=r["call"] / r["floor"],
            ),
            Row(
                f"emit → 1 handler, {n:,} modules",
                "kernel.emit + drain",
                r["emit"],
                baseline=floor,
                ratio=r["emit"] / r["floor"],
            ),
            Row(
                f"start, {n:,} modules",
                "CPU per module",
                r["start_s"] / n * 1e3,
                unit="ms",
                extra={"cpu_s": r["start_s"], "wall_s": r["start_wall_s"]},
            ),
            Row(
                f"stop, {n:,} modules",
                "CPU per module",
                r["stop_s"] / n * 1e3,
                unit="ms",
                extra={"cpu_s": r["stop_s"], "wall_s": r["stop_wall_s"]},
            ),
        ]
    hi = sizes[-1]
    rows += [  # a small size's RSS change is lost in the allocator's noise
        Row(
            f"RSS, {hi:,} modules started",
            "per module",
            results[hi]["rss_mb"] * 1024 / hi,
            unit="KiB",
            extra={"total_mib": results[hi]["rss_mb"]},
        ),
        Row(
            f"start, {hi:,} modules",
            "whole start, wall clock",
            results[hi]["start_wall_s"],
            unit="s",
        ),
    ]
    lo, hi = sizes[0], sizes[-1]
    small, large, mid = results[lo], results[hi], results[sizes[-2]]

    def cost(r: dict[str, float], key: str) -> float:  # per op, in units of the floor's
        return r["floor"] / r[key]

    rows += [
        flat_ratio(
            f"local call cost, {hi:,} vs {lo} modules",
            cost(small, "call"),
            cost(large, "call"),
            "≤ 1.2×",
        ),
        flat_ratio(
            f"emit cost, {hi:,} vs {lo} modules", cost(small, "emit"), cost(large, "emit"), "≤ 1.2×"
        ),
        flat_ratio(
            f"start per module, {hi:,} vs {lo} modules",
            small["start_s"] / lo,
            large["start_s"] / hi,
            "≤ 2×",
        ),
        flat_ratio(
            f"stop per module, {hi:,} vs {lo} modules",
            small["stop_s"] / lo,
            large["stop_s"] / hi,
            "≤ 2×",
        ),
        flat_ratio(
            f"start per module, {hi:,} vs {sizes[-2]:,} modules",
            mid["start_s"] / sizes[-2],
            large["start_s"] / hi,
            "",
        ),
        flat_ratio(
            f"stop per module, {hi:,} vs {sizes[-2]:,} modules",
            mid["stop_s"] / sizes[-2],
            large["stop_s"] / hi,
            "",
        ),
    ]
    return rows


# -- events: routing with many subscriptions ------------------------------------


def events_module(i: int, per: int) -> type[Module]:
    """Module ``e<i>`` with ``per`` handlers; every fourth pattern (counted across modules)
    is a wildcard (``ev.e<i>.*.w<k>``). ``e0`` also has ``ev.e0.*``."""
    ns: dict[str, Any] = {"name": f"e{i}", "__module__": __name__}
    for j in range(per):
        k = i * per + j
        pattern = f"ev.e{i}.*.w{k}" if k % 4 == 3 else f"ev.e{i}.h{j}"
        ns[f"got{j}"] = on(pattern)(_handler())
    if i == 0:
        ns["any"] = on("ev.e0.*")(_handler())
    return type(f"E{i}", (Module,), ns)


async def events_size(n_subs: int, count: int) -> dict[str, float]:
    per = 10 if n_subs >= 100 else 1
    classes = [events_module(i, per) for i in range(max(1, n_subs // per))]
    kernel = Kernel(classes, {"kernel": {"max_pending_events": 100_000, "gc_freeze": True}})
    await kernel.start()
    subs = len(kernel.subscriptions())
    hot = "ev.e0.h0"  # one exact handler and e0's wildcard: two deliveries at every size
    emit = kernel.emit
    fresh = iter(range(10**9))

    async def handler(_: Any) -> None:
        return None

    handlers = {hot: (handler, handler)}

    async def floor(k: int) -> None:
        for _ in range(k):
            for h in handlers[hot]:
                await h(1)

    async def cached(k: int) -> None:
        for _ in range(k):
            await emit(hot, 1)
        await kernel.drain()

    async def cold(k: int) -> None:  # never routed before: each emit builds its route
        for _ in range(k):
            await emit(f"ev.e0.x{next(fresh)}", 1)  # e0's wildcard takes it
        await kernel.drain()

    rates = await best_rates({"floor": floor, "cached": cached, "cold": cold}, count)
    await kernel.stop()
    gc.unfreeze()
    return {**rates, "subs": float(subs)}


async def events_curve(quick: bool) -> list[Row]:
    sizes = [10, 100, 1000] if quick else [10, 100, 1000, 10_000]
    count = 1_000 if quick else 20_000
    results = {n: await events_size(n, count) for n in sizes}
    rows: list[Row] = []
    floor = "await 2 handlers from a dict"
    for r in results.values():
        subs = int(r["subs"])
        rows += [
            Row(
                f"emit → 2 handlers, {subs:,} subscriptions",
                "kernel.emit + drain, route cached",
                r["cached"],
                baseline=floor,
                ratio=r["cached"] / r["floor"],
            ),
            Row(
                f"emit to a new topic → 1 handler, {subs:,} subscriptions",
                "kernel.emit + drain, route built",
                r["cold"],
                baseline=floor,
                ratio=r["cold"] / r["floor"],
            ),
        ]
    small, large = results[sizes[0]], results[sizes[-1]]
    span = f"{int(large['subs']):,} vs {int(small['subs'])} subscriptions"
    rows += [
        flat_ratio(
            f"emit cost, {span}",
            small["floor"] / small["cached"],
            large["floor"] / large["cached"],
            "≤ 1.2×",
        ),
        flat_ratio(
            f"new-topic emit cost, {span}",
            small["floor"] / small["cold"],
            large["floor"] / large["cold"],
            "≤ 1.2×",
        ),
    ]
    return rows


# -- jobs: pickup latency with a backlog (SQLite) --------------------------------


class Ticker(Module):
    """A job that records when it started, for the pickup latency."""

    name = "ticker"

    def __init__(self) -> None:
        super().__init__()
        self.started: asyncio.Future[float] | None = None

    @job
    async def tick(self) -> None:
        if self.started is not None and not self.started.done():
            self.started.set_result(time.perf_counter())


async def add_backlog(kernel: Kernel, name: str, count: int) -> None:
    """``count`` jobs of the same type due in a day, in batches of 10,000 (one transaction each)."""
    from organelle.jobs.base import NewJob

    queue = kernel.jobs.queue
    later = time.time() + 86_400
    done = 0
    while done < count:
        batch = min(10_000, count - done)
        await queue.enqueue([NewJob(name=name, run_at=later) for _ in range(batch)])
        done += batch


async def jobs_curve(quick: bool) -> list[Row]:
    sizes = [0, 1_000, 10_000] if quick else [0, 1_000, 10_000, 100_000, 1_000_000]
    samples = 50 if quick else 200
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-jobs-"))
    kernel = Kernel([Ticker], {"kernel": {"jobs": f"sqlite:///{tmp}/jobs.db"}})
    await kernel.start()
    ticker = kernel.module("ticker")
    assert isinstance(ticker, Ticker)
    loop = asyncio.get_running_loop()
    rows: list[Row] = []
    p50s: dict[int, float] = {}
    try:
        first = await kernel.enqueue("ticker.tick")
        name = (await kernel.jobs.get(first)).name
        await asyncio.sleep(0.2)
        have = 0
        for size in sizes:
            began = time.perf_counter()
            await add_backlog(kernel, name, size - have)
            fill_s = time.perf_counter() - began
            have = size
            took: list[float] = []
            for _ in range(samples):  # one at a time: light load, the latency alone
                ticker.started = loop.create_future()
                sent = time.perf_counter()
                await kernel.enqueue("ticker.tick")
                took.append(await asyncio.wait_for(ticker.started, 30) - sent)
                await asyncio.sleep(0.002)
            p50s[size] = percentile(took, 50)
            rows.append(
                Row(
                    f"job pickup, {size:,} jobs waiting for later",
                    "SqliteJobQueue, enqueue → handler start",
                    p50s[size] * 1e3,
                    unit="ms p50",
                    p50_us=p50s[size] * 1e6,
                    p99_us=percentile(took, 99) * 1e6,
                    extra={"backlog_fill_s": fill_s},
                )
            )
    finally:
        await kernel.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    lo, hi = sizes[0], sizes[-1]
    rows.append(
        flat_ratio(f"job pickup p50, {hi:,} vs {lo:,} waiting", p50s[lo], p50s[hi], "≤ 1.5×")
    )
    return rows


# -- streams: consume with 1 → 64 partitions (SQLite) ----------------------------


async def streams_curve(quick: bool) -> list[Row]:
    from organelle.streams import StreamSpec
    from organelle.streams.consumer import ConsumerStats, GroupConsumer
    from organelle.streams.sqlite import SqliteStreamLog

    sizes = [1, 4, 16] if quick else [1, 4, 16, 64]
    n = 640 if quick else 6_400
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-streams-"))
    body = b'{"order":"o-1","total":12.5}'
    log = await SqliteStreamLog(tmp / "streams.db").open()
    rates: dict[int, float] = {}
    try:
        for parts in sizes:
            stream = f"s{parts}"
            await log.ensure(stream, StreamSpec(partitions=parts))

            async def producer(w: int, stream: str = stream) -> None:
                for i in range(n // 32):
                    await log.append(stream, body, key=f"k{w}-{i}")

            await asyncio.gather(*(producer(w) for w in range(32)))
            total = n // 32 * 32
            done = asyncio.Event()
            count = 0

            async def handler(_: Any, total: int = total, done: asyncio.Event = done) -> None:
                nonlocal count
                count += 1
                if count >= total:
                    done.set()

            count = 0
            member = GroupConsumer(
                log,
                stream=stream,
                group="bench",
                partitions=parts,
                handler=handler,
                stats=ConsumerStats(stream, "bench", "bench", "handler"),
            )
            began = time.perf_counter()
            member.start()
            await asyncio.wait_for(done.wait(), 300)
            rates[parts] = total / (time.perf_counter() - began)
            await member.stop(5)
    finally:
        await log.close()
        shutil.rmtree(tmp, ignore_errors=True)
    rows = [
        Row(
            f"consume, 1 member × {parts} partitions",
            "SqliteStreamLog + GroupConsumer",
            rate,
            unit="records/s",
            baseline="1 partition",
            ratio=rate / rates[sizes[0]],
        )
        for parts, rate in rates.items()
    ]
    lo, hi = sizes[0], sizes[-1]
    rows.append(
        flat_ratio(
            f"consume cost per record, {hi} vs {lo} partitions",
            1 / rates[lo],
            1 / rates[hi],
            "≤ 1×",
        )
    )
    return rows


# -------------------------------------------------------------------------------

CURVES: dict[str, Callable[[bool], Awaitable[list[Row]]]] = {
    "modules": modules_curve,
    "events": events_curve,
    "jobs": jobs_curve,
    "streams": streams_curve,
}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=[*CURVES, "registry", "clients"])
    parser.add_argument(
        "--republish",
        action="store_true",
        help="with --only: replace that curve's rows (cases starting with its name) "
        "in the published figures, keeping the others",
    )
    args = parser.parse_args()
    import _scale_net

    curves = {**CURVES, "registry": _scale_net.registry_curve, "clients": _scale_net.clients_curve}
    if args.only:
        curves = {args.only: curves[args.only]}
    rows: list[Row] = []
    for name, curve in curves.items():
        began = time.perf_counter()
        got = await curve(args.quick)
        print(f"{name}: {len(got)} rows in {time.perf_counter() - began:.1f} s", flush=True)
        for row in got:
            print(
                f"  {row.case}: {row.value:,.3f} {row.unit}"
                + (f" ({row.ratio:.2f}× {row.baseline})" if row.ratio is not None else ""),
                flush=True,
            )
        rows += got
    if args.only and args.republish:
        rows = merged(args.only, rows)
    elif args.only:
        return  # a partial run prints; only a whole run (or --republish) replaces figures
    publish(
        "scale",
        "Cost curves: what one operation costs as the work around it grows",
        rows,
        notes=NOTES + ("Quick run (--quick): small sizes, noisy.\n" if args.quick else ""),
    )


def merged(curve: str, rows: list[Row]) -> list[Row]:
    """The published rows with ``curve``'s own (cases starting with its name) replaced."""
    published = json.loads((RESULTS / "scale.json").read_text())["rows"]
    old = [Row(**r) for r in published]
    mine = [i for i, r in enumerate(old) if r.case.startswith(f"{curve} ")]
    at = mine[0] if mine else len(old)
    kept = [r for i, r in enumerate(old) if i not in set(mine)]
    return kept[:at] + rows + kept[at:]


NOTES = """\
Measured on a shared 2-core machine while other work ran (load average 7-10). In-process
costs (calls, emits, start, stop) are the process's CPU time (`time.process_time`), the
best of several interleaved rounds, each beside its floor in the same rounds: there the
wall clock mostly measures the neighbours. Latencies and rates that wait on disk or
sockets (jobs, streams, registry) are wall clock. Ratios compare the largest size with
the smallest; "flat" means the cost did not grow with the size.

* **Modules.** Each module has one RPC, one `@on` handler of its own topic, every fifth
  a `*` wildcard too, and requires its parent in a binary tree (13 start levels at
  5,000). What made start and stop grow with the module count, and is gone: every
  wildcard subscription was matched against each new topic (each module's state
  announcement re-routed over all of them; wildcards now sit in a token trie); binding a
  module scanned every cached call-policy guard (now indexed by module); full GC
  collections during the start rescanned everything the process held (the start now
  freezes it first); `@leader` / saga discovery ran `inspect.getmembers` over all of
  `Module` per start (now once per class, own attributes only). A chain of more than
  ~1,000 dependent modules no longer hits Python's recursion limit.
* **Events.** 10 → 10,000 subscriptions over many modules, a quarter of them wildcards.
  A cached topic's route is a dict lookup; a topic never routed before walks the
  wildcard trie (cost of its own length). The floor awaits the same handlers from a dict.
* **Jobs.** Pickup latency (enqueue → handler start, one job at a time, SQLite with
  `synchronous=FULL`) with N jobs of the same type due in a day, added in batches of
  10,000. A claim used to scan every waiting job for due ones (p50 grew 4x from 1,000 to
  10,000 waiting); it now reads one index range per priority.
* **Streams.** One group member, N partitions, records spread by key, SQLite. More
  partitions overlap more commits, up to the single writer's limit.
* **Registry.** One real node (`NatsRegistry` + `Announcer`) among N - 1 simulated ones
  (heartbeats written on one connection); its own traffic counted at the server
  (`/connz`) per heartbeat it made: what it sends, and in all. A node now watches the
  bucket and writes one heartbeat a period; it used to list the bucket and `get` every
  entry each period (at 100 nodes 385 messages and 182 KiB a heartbeat, N + 2 round
  trips one after another). What it sends stays at its one put up to 30 nodes; at 100
  nats-py re-creates the watch's ordered consumer now and then (a consumer create and
  info, counted here: 3-16 messages a heartbeat over runs), which is not ours to tune.
  What it is pushed grows with the cluster — one message per other node per period,
  as long as every node knows every node; a digest kept by one node and watched by the
  rest would make it flat, and is not built.
* **Idle clients.** The gateway (SSE and WebSocket, one pattern each, no auth) and bare
  Starlette + uvicorn in separate server processes; RSS growth per connected client,
  counted from 20 warm-up clients. The growth from 100 to 1,000 clients is the
  allocator's (bare Starlette's moves alike); from 1,000 to 10,000 it is 1.05x (SSE) and
  1.02x (WebSocket).
* The emit ratio at 5,000 modules moved between 0.9x and 1.35x from run to run; the
  call's stayed within 1.05x.
"""


if __name__ == "__main__":
    asyncio.run(main())
