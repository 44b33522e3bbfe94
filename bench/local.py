"""Local (in-process) dispatch: kernel.call and emit beside Python's own floor.

    python bench/local.py            # full run (about a minute)
    python bench/local.py --quick    # a few seconds, for a smoke check

Floors, measured in the same process and the same rounds:
* ``await handlers[name](**{...})`` — a dict-dispatched await with a new params
  dict per call (the floor a local call can never beat);
* for events, the same floor per delivery.
Peers measured on the reference machine (reference/peer-bench.md): Moleculer
0.14 local call 2.16 M/s, local emit to one subscriber 622 k/s, where the same
floor ran at 4.44 M/s. Machines differ from session to session, so the peer is
compared as a fraction of the floor measured in this run (Moleculer: 0.49 of
it for a call, 0.14 for an emit to one handler).

The typed client (``kernel.client(Math).add(a=1, b=2)``) is measured beside
the ``kernel.call`` it wraps, for a result the wire keeps as it is (``int``:
the client returns the call's awaitable) and for a Struct result (one more
coroutine and an ``isinstance``).

Both organelle paths are measured: the C hot path (``organelle._speedups``,
what ``kernel.call``/``kernel.emit`` are when it is built) and the pure Python
path it falls back to (``Dispatcher.python_call`` / ``python_emit`` called directly).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import msgspec
from _common import Row, peak_rss_mb, publish

from organelle import Kernel, Module, on, rpc
from organelle._native import speedups
from organelle.module._client import client_of

MOLECULER_CALL = 2.16e6
MOLECULER_EMIT = 622e3
REFERENCE_FLOOR = 4.44e6  # the same floor on the machine Moleculer was measured on
PATH = "C path" if speedups is not None else "pure Python (no C extension)"


# A timeout + breaker + bulkhead policy (issue 13's benchmark: ≤ 10 % over no policy).
GUARD = {"timeout_s": 5, "breaker": {"failures": 5}, "bulkhead": {"max_concurrent": 1000}}


class Math(Module):
    name = "math"
    version = "1.0.0"

    @rpc
    async def add(self, a: int, b: int) -> int:
        return a + b

    @rpc(validate=False)
    async def add_raw(self, a: int, b: int) -> int:
        return a + b

    @rpc(policy=GUARD)
    async def add_guarded(self, a: int, b: int) -> int:
        return a + b

    @rpc
    async def pair(self, a: int, b: int) -> Pair:
        return Pair(a, b)


class Pair(msgspec.Struct):
    a: int
    b: int


def make_listeners(n: int) -> type[Module]:
    counter = [0]

    def handler_factory() -> Any:
        async def handler(_self: Module, _value: int) -> None:
            counter[0] += 1

        return on("bench.tick")(handler)

    ns: dict[str, Any] = {"name": f"listen{n}", "counter": counter}
    ns.update({f"h{i}": handler_factory() for i in range(n)})
    return type(f"Listen{n}", (Module,), ns)


async def best_rate(fn: Callable[[int], Awaitable[None]], n: int, rounds: int) -> float:
    best = 0.0
    for _ in range(rounds):
        gc.collect()
        t0 = time.perf_counter()
        await fn(n)
        best = max(best, n / (time.perf_counter() - t0))
    return best


async def rpc_rows(n: int, rounds: int) -> list[Row]:
    async def handler(a: int, b: int) -> int:
        return a + b

    handlers = {"math.add": handler}

    async def floor(count: int) -> None:
        # A new params dict per call, dispatched by name: what a local call must do.
        for _ in range(count):
            params = {"a": 1, "b": 2}
            await handlers["math.add"](**params)

    async with Kernel([Math]) as kernel:
        call = kernel.call
        pure = kernel._dispatcher.python_call

        async def raw(count: int) -> None:
            for _ in range(count):
                await call("math.add_raw", a=1, b=2)

        async def validated(count: int) -> None:
            for _ in range(count):
                await call("math.add", a=1, b=2)

        async def guarded(count: int) -> None:
            for _ in range(count):
                await call("math.add_guarded", a=1, b=2)

        async def pure_raw(count: int) -> None:
            for _ in range(count):
                await pure("math.add_raw", a=1, b=2)

        async def pure_validated(count: int) -> None:
            for _ in range(count):
                await pure("math.add", a=1, b=2)

        async def pure_guarded(count: int) -> None:
            for _ in range(count):
                await pure("math.add_guarded", a=1, b=2)

        math = kernel.client(Math)
        # The generated Python methods (what runs without the C extension), same rounds.
        math_py = client_of(Math, kernel.call, pure=True)

        async def typed(count: int) -> None:
            for _ in range(count):
                await math.add(a=1, b=2)

        async def typed_py(count: int) -> None:
            for _ in range(count):
                await math_py.add(a=1, b=2)

        async def struct_call(count: int) -> None:
            for _ in range(count):
                await call("math.pair", a=1, b=2)

        async def struct_typed(count: int) -> None:
            for _ in range(count):
                await math.pair(a=1, b=2)

        async def struct_typed_py(count: int) -> None:
            for _ in range(count):
                await math_py.pair(a=1, b=2)

        cases = {
            "floor": floor,
            "raw": raw,
            "valid": validated,
            "guarded": guarded,
            "typed": typed,
            "typed_py": typed_py,
            "struct_call": struct_call,
            "struct_typed": struct_typed,
            "struct_typed_py": struct_typed_py,
            "pure_raw": pure_raw,
            "pure_valid": pure_validated,
            "pure_guarded": pure_guarded,
        }
        rates: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(rounds):  # interleave so drift hits all of them alike
            for key, fn in cases.items():
                rates[key].append(await best_rate(fn, n, 1))
        rss = peak_rss_mb()
    best = {k: max(v) for k, v in rates.items()}
    f = best["floor"]
    floor_name = "await handlers[name](**{...})"
    moleculer = MOLECULER_CALL / REFERENCE_FLOOR
    rows = [Row("local call", floor_name, f, baseline="floor", ratio=1.0)]
    for key, label, target in (
        ("raw", "validation off", "≥ 0.5× floor"),
        ("valid", "validation on", "≥ 0.25× floor"),
    ):
        rows.append(
            Row(
                f"local call, {label}",
                f"kernel.call ({PATH})",
                best[key],
                baseline=floor_name,
                ratio=best[key] / f,
                target=target,
                extra={"vs_moleculer": best[key] / f / moleculer, "peak_rss_mb": rss},
            )
        )
    # The policy target is a ratio within one run: the median of the per-round
    # ratios (each round runs both back to back), with their spread.
    for key, base, subject in (
        ("guarded", "valid", f"kernel.call ({PATH})"),
        ("pure_guarded", "pure_valid", "Dispatcher.python_call (pure Python path)"),
    ):
        per_round = sorted(g / v for g, v in zip(rates[key], rates[base], strict=True))
        rows.append(
            Row(
                "local call, validation on, timeout + breaker + bulkhead policy",
                subject,
                statistics.median(rates[key]),
                baseline="the same path, validation on, no policy (median of rounds)",
                ratio=statistics.median(per_round),
                target="≥ 0.9× no policy" if key == "guarded" else "",
                extra={
                    "per_round_ratios": per_round,
                    "best_ratio": best[key] / best[base],
                    "no_policy_median": statistics.median(rates[base]),
                },
            )
        )
    typed_c = "C ClientCall" if speedups is not None else "generated Python methods"
    for key, base, label, subject in (
        ("typed", "valid", "int result", f"kernel.client(Math) ({typed_c})"),
        ("typed_py", "valid", "int result", "generated Python methods (pure=True)"),
        ("struct_typed", "struct_call", "Struct result", f"kernel.client(Math) ({typed_c})"),
        ("struct_typed_py", "struct_call", "Struct result", "generated Python methods (pure=True)"),
    ):
        per_round = sorted(t / k for t, k in zip(rates[key], rates[base], strict=True))
        rows.append(
            Row(
                f"local call via typed client, {label}",
                subject,
                best[key],
                baseline=f"kernel.call ({PATH})",
                ratio=best[key] / best[base],
                target="≥ 0.95× kernel.call" if not key.endswith("_py") else "",
                extra={
                    "kernel_call": best[base],
                    "vs_floor": best[key] / f,
                    "per_round_ratios": per_round,
                    "median_ratio": statistics.median(per_round),
                },
            )
        )
    for key, label in (("pure_raw", "validation off"), ("pure_valid", "validation on")):
        rows.append(
            Row(
                f"local call, {label}",
                "Dispatcher.python_call (pure Python path)",
                best[key],
                baseline=floor_name,
                ratio=best[key] / f,
            )
        )
    rows.append(
        Row(
            "local call (peer)",
            "Moleculer 0.14, scaled to this floor",
            moleculer * f,
            baseline=floor_name,
            ratio=moleculer,
            extra={"measured": MOLECULER_CALL, "reference_floor": REFERENCE_FLOOR},
        )
    )
    return rows


async def emit_rows(n: int, rounds: int, call_floor: float) -> list[Row]:
    rows: list[Row] = []
    for listeners in (1, 10):
        cls = make_listeners(listeners)

        async def handler(value: int) -> None:
            pass

        handlers = [handler] * listeners

        async def floor(count: int, handlers: list[Any] = handlers) -> None:
            for _ in range(count):
                for h in handlers:
                    await h(1)

        async with Kernel([cls]) as kernel:
            c_emit = kernel.emit
            py_emit = kernel._dispatcher.python_emit
            bus = kernel._bus
            deliver = bus.deliver

            async def emitting(
                count: int,
                emit: Any = c_emit,
                kernel: Kernel = kernel,
                bus: Any = bus,
                deliver: Any = deliver,
            ) -> None:
                bus.deliver = deliver
                for i in range(count):
                    await emit("bench.tick", i)
                await kernel.drain()

            async def pure_emitting(
                count: int, emit: Any = py_emit, kernel: Kernel = kernel, bus: Any = bus
            ) -> None:
                bus.deliver = None
                for i in range(count):
                    await emit("bench.tick", i)
                await kernel.drain()

            count = max(1000, n // listeners)
            f = e = p = 0.0
            for _ in range(rounds):
                f = max(f, await best_rate(floor, count, 1) * listeners)
                e = max(e, await best_rate(emitting, count, 1) * listeners)
                p = max(p, await best_rate(pure_emitting, count, 1) * listeners)
            assert cls.counter[0] >= 2 * count * listeners * rounds  # type: ignore[attr-defined]
        moleculer = MOLECULER_EMIT / REFERENCE_FLOOR
        rows += [
            Row(
                f"emit → {listeners} handler(s), deliveries/s",
                f"kernel.emit + drain ({PATH})",
                e,
                baseline="await handler(payload)",
                ratio=e / f,
                target="≥ Moleculer scaled" if listeners == 1 else "",
                extra={"floor": f, "vs_call_floor": e / call_floor},
            ),
            Row(
                f"emit → {listeners} handler(s), deliveries/s",
                "pure Python path",
                p,
                baseline="await handler(payload)",
                ratio=p / f,
            ),
        ]
        if listeners == 1:
            rows.append(
                Row(
                    "emit → 1 handler(s), deliveries/s (peer)",
                    "Moleculer 0.14, scaled to this call floor",
                    moleculer * call_floor,
                    baseline="await handler(payload)",
                    ratio=moleculer * call_floor / f,
                    extra={"measured": MOLECULER_EMIT, "reference_floor": REFERENCE_FLOOR},
                )
            )
    return rows


async def lifecycle_rows(rounds: int) -> list[Row]:
    mods: list[type[Module]] = []
    for i in range(200):
        requires = (f"m{i - 1}",) if i else ()
        mods.append(type(f"M{i}", (Module,), {"name": f"m{i}", "requires": requires}))
    best = float("inf")
    for _ in range(rounds):
        kernel = Kernel(mods)
        t0 = time.perf_counter()
        await kernel.start()
        await kernel.stop()
        best = min(best, time.perf_counter() - t0)
    return [Row("start + stop, 200 modules in a chain", "Kernel", best * 1000, unit="ms")]


def import_rows() -> list[Row]:
    code = "import time; t = time.perf_counter(); import {m}; print(time.perf_counter() - t)"

    def best(module: str) -> float:
        return min(
            float(
                subprocess.run(
                    [sys.executable, "-c", code.format(m=module)],
                    capture_output=True,
                    text=True,
                    check=True,
                    env={**os.environ, "PYTHONPATH": "src"},
                ).stdout
            )
            for _ in range(5)
        )

    org, aio = best("organelle"), best("asyncio")
    return [
        Row(
            "import time",
            "import organelle",
            org * 1000,
            unit="ms",
            baseline="import asyncio",
            ratio=org / aio,
            target="< 200 ms",
            extra={"asyncio_ms": aio * 1000},
        ),
    ]


def example_rss_rows() -> list[Row]:
    script = (
        "import asyncio, resource\n"
        "from organelle import Kernel\n"
        "async def main():\n"
        "    async with Kernel.from_config('examples/shop/app.toml', overrides={'modules': {'demo': {'interval_s': 3600}}}) as k:\n"
        "        await asyncio.sleep(0.2)\n"
        "        idle = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "        for _ in range(200000):\n"
        "            await k.call('pricing.quote', sku='apple', qty=1)\n"
        "        busy = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "        print(idle, busy)\n"
        "asyncio.run(main())\n"
    )
    if not Path("examples/shop/app.toml").exists():
        return []
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        print(out.stderr[-2000:])
        return []
    idle, busy = (float(x) for x in out.stdout.split()[-2:])
    return [
        Row("peak RSS, example app idle", "examples/shop", idle, unit="MiB"),
        Row("peak RSS, example app after 200 k local calls", "examples/shop", busy, unit="MiB"),
    ]


def fmt_spread(rows: list[Row]) -> str:
    """The per-round policy ratios of each path, for the notes."""
    parts = []
    for row in rows:
        ratios = row.extra.get("per_round_ratios", [])
        path = "C path" if "kernel.call" in row.subject else "pure Python path"
        parts.append(f"{path}: rounds {min(ratios):.2f}–{max(ratios):.2f}×")
    return "; ".join(parts)


def fmt_typed(rows: list[Row]) -> str:
    """The typed client rows' median per-round ratios, for the notes."""
    parts = []
    for row in rows:
        if row.case.startswith("local call via typed client"):
            ratios = row.extra["per_round_ratios"]
            kind = "C" if "ClientCall" in row.subject else "Python"
            parts.append(
                f"{kind} {row.case.rsplit(', ', 1)[1]} median {row.extra['median_ratio']:.2f}× "
                f"(rounds {min(ratios):.2f}–{max(ratios):.2f}×)"
            )
    return "; ".join(parts)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, rounds = (20_000, 2) if args.quick else (200_000, 7)
    try:
        import uvloop

        loop_name = f"uvloop {uvloop.__version__}"
    except ImportError:  # pragma: no cover
        loop_name = "asyncio"
    rows = await rpc_rows(n, rounds)
    rows += await emit_rows(n, rounds, rows[0].value)
    rows += await lifecycle_rows(3 if args.quick else 5)
    rows += import_rows()
    rows += example_rss_rows()
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    rows_by_case = [r for r in rows if "policy" in r.case]
    publish(
        "local",
        "Local dispatch (one process)",
        rows,
        notes=(
            f"Event loop: {loop_name}. Floors are measured in the same run and the same rounds; "
            "Moleculer's figures come from reference/peer-bench.md, measured on a machine where "
            "the call floor ran at 4.44 M/s; they are scaled to this run's floor. "
            "`python bench/local.py` reproduces it. The typed client rows compare "
            "`kernel.client(Math).add(a=1, b=2)` with the `kernel.call` it wraps, in the same "
            "rounds: an `int` result (the C `ClientCall` binds the arguments and returns the "
            "call's awaitable) and a Struct result (the finished call's value already is a "
            "`Pair`: returned as it is); beside them the generated Python methods that run "
            "without the extension (`pure=True`: one Python function more, and a coroutine "
            "with an `isinstance` for the Struct). Their ratio is best round against best "
            f"round; the medians of the per-round ratios: {fmt_typed(rows)}. "
            "The policy rows run `@rpc(policy={timeout_s, breaker, bulkhead})` beside the same "
            "method without one, in the same rounds; the ratio is the median of the per-round "
            f"ratios ({fmt_spread(rows_by_case)}). "
            "Measured on a shared 2-core machine with other jobs running "
            f"(load average {load}): the ratios, taken within one run, are the figures to read.\n"
        ),
    )


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
