"""The optional C hot path (organelle._speedups) against the pure Python path.

Every case runs the same call or emit through both paths of one kernel and
compares what the caller sees: result, error type, code and message, context
links, counters. The pure path also runs the core suite in a subprocess.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from organelle import (
    CallTimeoutError,
    Context,
    InternalError,
    Kernel,
    Module,
    NotFoundError,
    OrganelleError,
    ValidationError,
    context,
    on,
    rpc,
)
from organelle._native import speedups
from organelle.kernel import BaseListener
from organelle.testing import capture

ROOT = Path(__file__).resolve().parents[2]
PURE = os.environ.get("ORGANELLE_PURE", "") not in ("", "0")
needs_c = pytest.mark.skipif(speedups is None, reason="C extension not in use")


class Denied(OrganelleError):
    code = "test.denied"


class Calc(Module):
    name = "calc"
    seen: list[Context]

    async def on_load(self) -> None:
        self.seen = []

    @rpc
    async def add(self, a: int, b: int = 0) -> int:
        self.seen.append(context())
        return a + b

    @rpc
    async def maybe(self, a: float, b: str | None = None) -> str:
        return f"{a}:{b}"

    @rpc(validate=False)
    async def raw(self, a: int) -> int:
        return a * 2

    @rpc
    async def nested(self, a: int) -> tuple[float | None, str, str | None]:
        inner = await self.call("calc.who")
        ctx = context()
        return ctx.deadline, inner, ctx.request_id

    @rpc
    async def who(self) -> str:
        return context().causation_id or ""

    @rpc
    async def sleepy(self, s: float) -> str:
        await asyncio.sleep(s)
        return context().request_id

    @rpc
    async def denied(self) -> None:
        raise Denied("no")

    @rpc
    async def broken(self) -> None:
        raise KeyError("k")

    @rpc
    async def typed(self, items: list[int]) -> int:
        return sum(items)


class Listener(Module):
    name = "listener"
    got: list[tuple[Any, str | None, str | None]]

    async def on_load(self) -> None:
        self.got = []

    @on("t.plain")
    async def plain(self, payload: Any) -> None:
        self.got.append((payload, context().topic, context().causation_id))

    @on("t.typed")
    async def typed(self, payload: float) -> None:
        self.got.append((repr(payload), context().topic, None))

    @on("t.slow")
    async def slow(self, payload: Any) -> None:
        await asyncio.sleep(0.001)
        self.got.append((payload, context().topic, None))

    @on("t.bad")
    async def bad(self, payload: Any) -> None:
        raise ValueError("boom")

    @on("t.filtered", filter=lambda p: p > 1)
    async def filtered(self, payload: int) -> None:
        self.got.append((payload, context().topic, None))


Path_ = Callable[[Kernel], Callable[..., Awaitable[Any]]]


def c_call(kernel: Kernel) -> Callable[..., Awaitable[Any]]:
    return kernel.call


def py_call(kernel: Kernel) -> Callable[..., Awaitable[Any]]:
    call: Callable[..., Awaitable[Any]] = kernel._dispatcher.python_call
    return call


PATHS = [pytest.param(c_call, id="c", marks=needs_c), pytest.param(py_call, id="python")]


async def outcome(aw: Awaitable[Any]) -> tuple[str, Any]:
    try:
        return "ok", await aw
    except OrganelleError as exc:
        return exc.code, str(exc)


@pytest.mark.parametrize("path", PATHS)
async def test_results_and_errors_match(path: Path_) -> None:
    async with Kernel([Calc]) as kernel:
        call = path(kernel)
        assert await outcome(call("calc.add", a=1, b=2)) == ("ok", 3)
        assert await outcome(call("calc.add", a=1)) == ("ok", 1)
        assert await outcome(call("calc.maybe", a=1.5, b=None)) == ("ok", "1.5:None")
        assert await outcome(call("calc.maybe", a=2)) == ("ok", "2.0:None")  # int → float
        assert await outcome(call("calc.typed", items=[1, 2])) == ("ok", 3)
        assert await outcome(call("calc.raw", a=4)) == ("ok", 8)
        code, msg = await outcome(call("calc.add", a="x"))
        assert code == ValidationError.code
        assert "a: Expected `int`" in msg
        code, msg = await outcome(call("calc.add", b=1, c=2))
        assert "c: unexpected parameter" in msg
        assert "a: missing required parameter" in msg
        code, msg = await outcome(call("calc.raw", b=1))
        assert code == ValidationError.code
        assert "unexpected keyword argument 'b'" in msg
        assert await outcome(call("calc.denied")) == ("test.denied", "no")
        code, msg = await outcome(call("calc.broken"))
        assert code == InternalError.code
        assert msg == "KeyError: 'k'"
        code, _ = await outcome(call("calc.nope"))
        assert code == NotFoundError.code
        code, _ = await outcome(call("nodot"))
        assert code == ValidationError.code


@pytest.mark.parametrize("path", PATHS)
async def test_context_links_and_deadlines(path: Path_) -> None:
    async with Kernel([Calc], {"kernel": {"call_timeout_s": 5}}) as kernel:
        call = path(kernel)
        before = time.monotonic()
        deadline, cause, rid = await call("calc.nested", a=1)
        assert before + 4 < deadline <= time.monotonic() + 5
        assert cause == rid  # the nested call names its caller as its cause
        mod = kernel.module("calc")
        assert isinstance(mod, Calc)
        await call("calc.add", a=1)
        assert mod.seen[-1].causation_id is None
        assert mod.seen[-1].topic is None
        assert isinstance(mod.seen[-1], Context)


@pytest.mark.parametrize("path", PATHS)
async def test_suspending_handler_keeps_its_context_and_deadline(path: Path_) -> None:
    async with Kernel([Calc], {"kernel": {"call_timeout_s": 0.05}}) as kernel:
        call = path(kernel)
        rid = await call("calc.sleepy", s=0.001)
        assert isinstance(rid, str)
        with pytest.raises(CallTimeoutError):
            await call("calc.sleepy", s=1)
        a, b = await asyncio.gather(call("calc.sleepy", s=0.001), call("calc.sleepy", s=0.001))
        assert a != b


@pytest.mark.parametrize("path", PATHS)
async def test_call_stats_count_both_paths(path: Path_) -> None:
    class Counting(BaseListener):
        call_buckets = (0.001, 1.0)

    async with Kernel([Calc]) as kernel:
        kernel.listen(Counting())
        stats = kernel.call_stats
        assert stats is not None
        call = path(kernel)
        await call("calc.add", a=1)
        await call("calc.sleepy", s=0.001)
        with pytest.raises(Denied):
            await call("calc.denied")
        with pytest.raises(InternalError):
            await call("calc.broken")
        assert stats["calc.add"].calls == 1
        assert stats["calc.sleepy"].calls == 1
        assert sum(stats["calc.sleepy"].counts) == 1  # suspended calls are timed
        assert stats["calc.denied"].errors == {"test.denied": 1}
        assert stats["calc.broken"].errors == {InternalError.code: 1}


@needs_c
async def test_kernel_call_and_emit_are_the_c_path() -> None:
    async with Kernel([Calc]) as kernel:
        assert speedups is not None
        caller = speedups.Caller
        mod = kernel.module("calc")  # modules bind the same entry points
        for fn in (kernel.call, kernel.emit, mod.call, mod.emit):
            assert type(getattr(fn, "__self__", None)) is caller


@needs_c
async def test_finished_call_behaves_like_a_coroutine() -> None:
    async with Kernel([Calc]) as kernel:
        pending = kernel.call("calc.add", a=2)
        assert await asyncio.create_task(pending) == 2  # create_task takes it
        assert await asyncio.wait_for(kernel.call("calc.add", a=3), 1) == 3
        results = await asyncio.gather(
            kernel.call("calc.denied"), kernel.call("calc.add", a=1), return_exceptions=True
        )
        assert isinstance(results[0], Denied)
        assert results[1] == 1
        once = kernel.call("calc.add", a=1)
        assert await once == 1
        with pytest.raises(RuntimeError, match="already awaited"):
            await once
        thrown = kernel.call("calc.add", a=1)
        with pytest.raises(KeyError):
            thrown.throw(KeyError("x"))
        kernel.call("calc.add", a=1).close()


@needs_c
async def test_a_call_starts_eagerly() -> None:
    async with Kernel([Calc]) as kernel:
        mod = kernel.module("calc")
        assert isinstance(mod, Calc)
        pending = kernel.call("calc.add", a=7)
        assert len(mod.seen) == 1  # ran already; the result waits for the await
        assert await pending == 7


@needs_c
async def test_draining_and_middleware_take_the_python_path() -> None:
    seen: list[str] = []

    async def mw(inv: Any, call_next: Any) -> Any:
        seen.append(inv.target)
        return await call_next(inv)

    async with Kernel([Calc]) as kernel:
        assert kernel._dispatcher._caller.enabled
        kernel.use(mw)
        assert not kernel._dispatcher._caller.enabled
        assert await kernel.call("calc.add", a=1) == 1
        assert seen == ["calc.add"]
    assert not kernel._dispatcher._caller.enabled  # stopped: nothing is accepted


E_PATHS = [pytest.param(True, id="c", marks=needs_c), pytest.param(False, id="python")]


def event_path(kernel: Kernel, c: bool) -> Callable[..., Awaitable[Any]]:
    if not c:
        kernel._bus.deliver = None
        emit: Callable[..., Awaitable[Any]] = kernel._dispatcher.python_emit
        return emit
    return kernel.emit


@pytest.mark.parametrize("c", E_PATHS)
async def test_events_match(c: bool) -> None:
    async with Kernel([Listener]) as kernel:
        emit = event_path(kernel, c)
        lis = kernel.module("listener")
        assert isinstance(lis, Listener)
        for i in range(3):
            await emit("t.plain", i)
        await emit("t.typed", 5.5)
        await emit("t.typed", 5)  # converted to 5.0 by the Python path
        await emit("t.slow", "s")
        await emit("t.bad", 1)
        await emit("t.filtered", 1)
        await emit("t.filtered", 2)
        await emit("t.nobody", 2)
        await kernel.drain()
        got = sorted(lis.got, key=repr)
        assert got == sorted(
            [
                (0, "t.plain", None),
                (1, "t.plain", None),
                (2, "t.plain", None),
                ("5.5", "t.typed", None),
                ("5.0", "t.typed", None),
                ("s", "t.slow", None),
                (2, "t.filtered", None),
            ],
            key=repr,
        )
        stats = {s.handler: s for s in kernel.subscriptions()}
        assert stats["plain"].delivered == 3
        assert stats["bad"].failed == 1
        assert stats["bad"].last_error is not None
        assert stats["bad"].last_error["code"] == InternalError.code
        assert stats["filtered"].skipped == 1
        assert stats["slow"].delivered == 1


class Ranked(Module):
    """Handlers of one topic that the C first step takes in different ways."""

    name = "ranked"
    order: list[str]

    async def on_load(self) -> None:
        self.order = []

    @on("rank.it", priority=0)
    async def plain(self, payload: Any) -> None:
        self.order.append("plain")

    @on("rank.it", priority=10, filter=lambda p: p > 0)
    async def filtered(self, payload: float) -> None:
        self.order.append("filtered")

    @on("rank.it", priority=5)
    async def converted(self, payload: float) -> None:  # an int payload is converted
        self.order.append("converted")

    @on("rank.it", priority=7)
    async def bare(self) -> None:
        self.order.append("bare")

    @on("rank.it", priority=3)
    async def suspends(self, payload: Any) -> None:
        self.order.append("suspends")
        await asyncio.sleep(0)
        self.order.append("resumed")

    @on("rank.it", priority=-1, filter=lambda p: p < 0)
    async def skipped(self, payload: float) -> None:
        self.order.append("skipped")


@pytest.mark.parametrize("c", E_PATHS)
@pytest.mark.parametrize("payload", [1, 1.5], ids=["converted", "as-is"])
async def test_handlers_start_in_priority_order(c: bool, payload: float) -> None:
    # Regression: the C first step ran the subscriptions it could take as they
    # are before those that need a filter, a conversion or no payload.
    async with Kernel([Ranked]) as kernel:
        emit = event_path(kernel, c)
        mod = kernel.module("ranked")
        assert isinstance(mod, Ranked)
        await emit("rank.it", payload)
        await kernel.drain()
        assert mod.order == ["filtered", "bare", "converted", "suspends", "plain", "resumed"]
        stats = {s.handler: s for s in kernel.subscriptions()}
        assert stats["skipped"].skipped == 1
        assert stats["filtered"].delivered == stats["suspends"].delivered == 1


class Relay(Module):
    name = "relay"
    got: list[tuple[str | None, str | None]]

    async def on_load(self) -> None:
        self.got = []

    @rpc
    async def start(self) -> str:
        await self.emit("r.one", 1)
        return context().request_id

    @on("r.one")
    async def one(self, payload: int) -> None:
        self.got.append((context().causation_id, context().correlation_id))


@pytest.mark.parametrize("c", E_PATHS)
async def test_emit_inside_a_call_links_to_it(c: bool) -> None:
    async with Kernel([Relay]) as kernel:
        event_path(kernel, c)
        rid = await kernel.call("relay.start")
        await kernel.drain()
        mod = kernel.module("relay")
        assert isinstance(mod, Relay)
        assert mod.got == [(rid, rid)]


@needs_c
async def test_emit_waits_for_room_when_the_queue_is_full() -> None:
    cfg = {"kernel": {"max_pending_events": 4}}
    async with Kernel([Listener], cfg) as kernel:
        lis = kernel.module("listener")
        assert isinstance(lis, Listener)
        for i in range(50):  # the C path hands a full queue to Python, which waits
            await kernel.emit("t.plain", i)
        await kernel.drain()
        assert [g[0] for g in lis.got] == list(range(50))


@needs_c
def test_context_fields_live_in_c() -> None:
    ctx = Context(1)
    assert (ctx.deadline, ctx.corr, ctx.cause, ctx.principal, ctx.topic) == (None,) * 5
    assert ctx.meta == {}
    assert Context(2).meta is not ctx.meta
    ctx.deadline = 5.0
    assert ctx == Context(1, 5.0)
    assert "deadline=5.0" in repr(ctx)
    with pytest.raises(TypeError):
        Context()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        hash(ctx)


@pytest.mark.skipif(PURE or bool(os.environ.get("ORGANELLE_NO_EXTENSIONS")), reason="pure run")
def test_extension_is_built_from_the_current_source() -> None:
    spec = importlib.util.spec_from_file_location("hatch_build", ROOT / "hatch_build.py")
    assert spec is not None
    assert spec.loader is not None
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    assert speedups is not None, "organelle._speedups is missing: reinstall (pip install -e .)"
    assert hook.source_hash() == speedups.SOURCE_HASH, (
        "organelle._speedups is stale: run `python hatch_build.py`"
    )


CORE = [
    "tests/test_bad_input.py",
    "tests/test_context.py",
    "tests/kernel/test_events.py",
    "tests/kernel/test_features.py",
    "tests/kernel/test_rpc.py",
    "tests/kernel/test_runtime.py",
    "tests/kernel/test_lifecycle.py",
    "tests/kernel/test_supervision.py",
    "tests/kernel/test_bindings.py",
    "tests/kernel/test_speedups.py",
    "tests/test_testing.py",
    "tests/examples",
]


@pytest.mark.skipif(PURE, reason="already the pure run")
@pytest.mark.timeout(180)
def test_core_suite_passes_on_the_pure_python_path() -> None:
    env = {**os.environ, "ORGANELLE_PURE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *CORE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


class Holder(Module):
    name = "holder"

    @rpc(validate=False)
    async def echo(self, x: Any) -> Any:
        return x

    @rpc(validate=False)
    async def later(self, x: Any) -> Any:
        await asyncio.sleep(0)
        return x

    @rpc(validate=False)
    async def fail(self, x: Any) -> None:
        raise ValueError("no")

    @on("hold.it")
    async def take(self, payload: Any) -> None:
        pass


@needs_c
async def test_the_c_path_leaks_no_references() -> None:
    import gc
    import sys

    async def rounds(kernel: Kernel, held: object, n: int) -> int:
        for _ in range(n):
            assert await kernel.call("holder.echo", x=held) is held
            assert await kernel.call("holder.later", x=held) is held
            with pytest.raises(InternalError):
                await kernel.call("holder.fail", x=held)
            await kernel.emit("hold.it", held)
        await kernel.drain()
        gc.collect()
        return sys.getrefcount(held)

    async with Kernel([Holder]) as kernel:
        held = object()
        # The dispatcher may still hold the last event it handled: compare
        # after a first round, so only growth per call would show.
        first = await rounds(kernel, held, 10)
        assert await rounds(kernel, held, 300) == first


@needs_c
def test_a_caller_that_is_not_set_up_raises_instead_of_crashing() -> None:
    assert speedups is not None
    bare = speedups.Caller.__new__(speedups.Caller)
    with pytest.raises(RuntimeError, match="not set up"):
        bare.call("x.y")
    with pytest.raises(RuntimeError, match="not set up"):
        bare.emit("x")


@pytest.mark.parametrize("c", E_PATHS)
async def test_taps_see_each_event_once_on_both_paths(c: bool) -> None:
    cfg = {"kernel": {"max_pending_events": 2}}
    async with Kernel([Listener], cfg) as kernel:
        emit = event_path(kernel, c)
        seen = capture(kernel, "t.>")  # a listener added while running: the C path still runs
        if c:
            assert kernel._dispatcher._caller.emit_enabled
        for i in range(20):  # a small queue: some emits wait for room (the Python path)
            await emit("t.plain", i)
        await emit("t.nobody", 99)
        await kernel.drain()
        assert seen == [("t.plain", i) for i in range(20)] + [("t.nobody", 99)]
        kernel.unlisten(seen)
        await emit("t.plain", 100)
        await kernel.drain()
        assert len(seen) == 21
        lis = kernel.module("listener")
        assert isinstance(lis, Listener)
        assert [g[0] for g in lis.got] == [*range(20), 100]


class Nested(Module):
    """r1 calls r2, which suspends, then calls r3: r3 must be caused by r2 on either path."""

    name = "nested"

    @rpc
    async def r1(self) -> tuple[str, str | None]:
        result: tuple[str, str | None] = await self.call("nested.r2")
        return result

    @rpc
    async def r2(self) -> tuple[str, str | None]:
        me = context().request_id
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        cause: str | None = await self.call("nested.r3")
        return me, cause

    @rpc
    async def r3(self) -> str | None:
        return context().causation_id


@pytest.mark.parametrize("pure", [False, True])
async def test_a_handler_resumes_in_its_own_context_inside_another_call(pure: bool) -> None:
    async with Kernel([Nested]) as k:
        call = k._dispatcher.python_call if pure else k.call
        me, cause = await call("nested.r1")
        assert cause == me


# ------------------------------------------------- policies on both paths
# A timeout + breaker + bulkhead policy runs its common case in C (speedups
# policy.c); the rest goes to the Python Guard. Both share one state, so every
# case below must see the same results, errors and breaker history on each path.

FAST = {
    "timeout_s": 5,
    "breaker": {"failures": 3, "reset_s": 60},
    "bulkhead": {"max_concurrent": 4},
}
PROBE = {
    "breaker": {"failures": 2, "reset_s": 0.2, "probes": 1},
    "bulkhead": {"max_concurrent": 4},
}
WINDOW = {"breaker": {"failures": 100, "window": 4, "min_calls": 4, "failure_ratio": 0.5}}
NARROW = {"timeout_s": 0.05, "bulkhead": {"max_concurrent": 1, "max_queue": 1}}
GATED = {"timeout_s": 10, "bulkhead": {"max_concurrent": 1, "max_queue": 1}}


class Guarded(Module):
    name = "guarded"
    gate: asyncio.Event

    async def on_load(self) -> None:
        self.gate = asyncio.Event()

    @rpc(policy=GATED)
    async def gated(self) -> str:
        await self.gate.wait()
        return "done"

    @rpc(policy=FAST)
    async def add(self, a: int, b: int = 0) -> int:
        return a + b

    @rpc(policy=FAST)
    async def step(self, fail: bool) -> str:
        if fail:
            raise KeyError("k")
        return "ok"

    @rpc(policy=PROBE)
    async def probe(self, fail: bool) -> str:
        if fail:
            raise KeyError("k")
        return "ok"

    @rpc(policy=WINDOW)
    async def window(self, fail: bool) -> str:
        if fail:
            raise KeyError("k")
        return "ok"

    @rpc(policy=NARROW)
    async def slow(self, s: float) -> str:
        await asyncio.sleep(s)
        return "done"

    @rpc(policy={"fallback_value": "spare", "breaker": {"failures": 1, "reset_s": 60}})
    async def spare(self) -> str:
        raise KeyError("k")


def breaker_of(kernel: Kernel, target: str) -> dict[str, Any]:
    found: dict[str, Any] = kernel.policy_stats()["breakers"][target]
    return found


def slots_taken(kernel: Kernel, target: str) -> int:
    guard = kernel._router.local[target].policy
    assert guard is not None
    assert guard.bulkhead is not None
    return guard.bulkhead.active


@pytest.mark.parametrize("path", PATHS)
async def test_failures_open_the_breaker_and_a_success_resets_the_count(path: Path_) -> None:
    async with Kernel([Guarded]) as kernel:
        call = path(kernel)
        got = [await outcome(call("guarded.step", fail=f)) for f in (True, True, False)]
        assert breaker_of(kernel, "guarded.step")["consecutive_failures"] == 0  # the success
        got += [await outcome(call("guarded.step", fail=True)) for _ in range(4)]
        internal = InternalError.code
        expected = [
            internal,
            internal,
            "ok",
            internal,
            internal,
            internal,
            "organelle.circuit_open",
        ]
        assert [g[0] for g in got] == expected
        assert breaker_of(kernel, "guarded.step")["changes"] == {
            "closed": 0,
            "open": 1,
            "half_open": 0,
        }
        assert slots_taken(kernel, "guarded.step") == 0
        assert await call("guarded.add", a=2, b=3) == 5  # another target's breaker


@pytest.mark.parametrize("path", PATHS)
async def test_the_failure_ratio_counts_successes_recorded_by_either_path(path: Path_) -> None:
    async with Kernel([Guarded]) as kernel:
        call = path(kernel)
        py = kernel._dispatcher.python_call
        # ok (this path), ok (Python), fail, fail: 2 of the last 4 failed -> open
        assert await call("guarded.window", fail=False) == "ok"
        assert await py("guarded.window", fail=False) == "ok"
        for _ in range(2):
            assert (await outcome(call("guarded.window", fail=True)))[0] == "organelle.internal"
        assert breaker_of(kernel, "guarded.window")["state"] == "open"


@pytest.mark.parametrize("path", PATHS)
async def test_a_half_open_breaker_lets_one_probe_through(path: Path_) -> None:
    async with Kernel([Guarded]) as kernel:
        call = path(kernel)
        for _ in range(2):
            assert (await outcome(call("guarded.probe", fail=True)))[0] == "organelle.internal"
        assert (await outcome(call("guarded.probe", fail=False)))[0] == "organelle.circuit_open"
        await asyncio.sleep(0.25)
        assert (await outcome(call("guarded.probe", fail=True)))[0] == "organelle.internal"
        assert breaker_of(kernel, "guarded.probe")["changes"]["open"] == 2  # the probe failed
        await asyncio.sleep(0.25)
        assert await call("guarded.probe", fail=False) == "ok"  # this probe closes it
        assert await call("guarded.probe", fail=False) == "ok"
        assert breaker_of(kernel, "guarded.probe")["changes"] == {
            "closed": 1,
            "open": 2,
            "half_open": 2,
        }
        assert slots_taken(kernel, "guarded.probe") == 0


@pytest.mark.parametrize("path", PATHS)
async def test_a_full_bulkhead_queues_one_and_refuses_the_next(path: Path_) -> None:
    async with Kernel([Guarded]) as kernel:
        call = path(kernel)
        tasks = [asyncio.ensure_future(outcome(call("guarded.gated"))) for _ in range(3)]
        for _ in range(200):  # until one runs, one waits and one is refused
            if kernel.policy_stats()["bulkhead_rejected"]:
                break
            await asyncio.sleep(0.005)
        assert slots_taken(kernel, "guarded.gated") == 1
        module = kernel.module("guarded")
        assert isinstance(module, Guarded)
        module.gate.set()
        got = await asyncio.wait_for(asyncio.gather(*tasks), 5)
        assert sorted(g[0] for g in got) == ["ok", "ok", "organelle.bulkhead_full"]
        assert kernel.policy_stats()["bulkhead_rejected"] == {"guarded.gated": 1}
        assert slots_taken(kernel, "guarded.gated") == 0


@pytest.mark.parametrize("path", PATHS)
async def test_a_handler_that_suspends_past_the_policy_timeout_is_cut(path: Path_) -> None:
    async with Kernel([Guarded]) as kernel:
        call = path(kernel)
        started = time.monotonic()
        code, _ = await asyncio.wait_for(outcome(call("guarded.slow", s=2.0)), 5)
        assert code == CallTimeoutError.code
        assert time.monotonic() - started < 1.5  # the policy's 0.05 s, not the handler's 2 s
        assert slots_taken(kernel, "guarded.slow") == 0
        assert await call("guarded.slow", s=0.0) == "done"


@pytest.mark.parametrize("path", PATHS)
async def test_a_fallback_answers_on_both_paths(path: Path_) -> None:
    async with Kernel([Guarded]) as kernel:
        call = path(kernel)
        got = [await outcome(call("guarded.spare")) for _ in range(3)]
        # The failure opens the breaker; the refused calls get the fallback value.
        assert [g[0] for g in got] == ["organelle.internal", "ok", "ok"]
        assert [g[1] for g in got[1:]] == ["spare", "spare"]
        assert kernel.policy_stats()["fallbacks"] == {"guarded.spare": 2}
        assert breaker_of(kernel, "guarded.spare")["state"] == "open"


@needs_c
async def test_the_c_path_runs_a_timeout_breaker_bulkhead_policy_itself() -> None:
    async with Kernel([Guarded]) as kernel:
        assert speedups is not None
        pending = kernel.call("guarded.add", a=1, b=2)
        assert type(pending) is speedups.Finished  # not handed to the Python call
        assert slots_taken(kernel, "guarded.add") == 0  # left when it finished
        assert await pending == 3
        with pytest.raises(TypeError):  # the route's policy is checked when set
            kernel._router.local["guarded.add"].policy = object()  # type: ignore[assignment]
