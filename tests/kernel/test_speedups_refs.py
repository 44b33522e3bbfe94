"""The C hot path holds what it uses while Python code may run (see _csrc/speedups.h).

Each case makes Python code run inside a C call at the point where the C code
used to hold a borrowed reference (a Python request-id counter, a property, a
deque subclass, a finalizer the GC runs) and has that code free the object.
Before the fix every case crashed. They run in a subprocess under
``python -X dev``, whose allocator poisons freed memory, so a regression
crashes there (reported here) instead of passing by luck or killing the suite.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from contextvars import ContextVar
from itertools import count
from pathlib import Path
from typing import Any

import pytest

from organelle import Context, Kernel, Module, NotFoundError, UnavailableError, rpc
from organelle._native import speedups

ROOT = Path(__file__).resolve().parents[2]
needs_c = pytest.mark.skipif(speedups is None, reason="C extension not in use")


def _caller(routes: dict[str, Any], counter: Iterator[int], var: ContextVar[Any]) -> Any:
    assert speedups is not None

    def fallback(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the C path should serve this call")

    async def resume(*args: Any) -> Any:
        raise AssertionError("nothing here suspends")

    def failed(entry: Any, exc: BaseException, ran: bool) -> BaseException:
        return exc

    caller = speedups.Caller(routes, var, Context, counter, {}, fallback, resume, failed, 10.0)
    caller.enabled = True
    return caller


def _route(routes: dict[str, Any], fn: Callable[..., Any], stats: Any = None) -> None:
    """Add a route that only ``routes`` refers to (so dropping it frees it)."""
    assert speedups is not None
    entry = speedups.RouteBase()
    entry.fn = fn
    entry.contract = None
    entry.checks = None
    entry.stats = stats
    entry.target = "m.f"
    routes["m.f"] = entry


def _finished(aw: Coroutine[Any, Any, Any]) -> Any:
    with pytest.raises(StopIteration) as stop:
        aw.send(None)
    return stop.value.value


async def _echo(x: Any = None) -> Any:
    return x


class _Calling:
    """A request-id counter that runs ``hook`` each time the C path takes an id."""

    def __init__(self, hook: Callable[[], None]) -> None:
        self.hook = hook
        self.ids = count(1)

    def __iter__(self) -> _Calling:
        return self

    def __next__(self) -> int:
        self.hook()
        return next(self.ids)


def route_dropped_while_the_context_is_made() -> None:
    routes: dict[str, Any] = {}
    caller = _caller(routes, _Calling(routes.clear), ContextVar("v", default=None))
    _route(routes, _echo)
    assert _finished(caller.call("m.f", x=5)) == 5


def route_emptied_while_the_context_is_made() -> None:
    routes: dict[str, Any] = {}

    def empty() -> None:
        del routes["m.f"].fn  # a RouteBase field reads None, and is NULL in C

    caller = _caller(routes, _Calling(empty), ContextVar("v", default=None))
    _route(routes, _echo)
    with pytest.raises(RuntimeError, match="route was changed"):
        _finished(caller.call("m.f", x=5))


def parent_fields_replaced_while_the_context_is_made() -> None:
    var: ContextVar[Any] = ContextVar("v", default=None)

    def replace() -> None:
        parent = var.get()
        parent.meta = {"new": 1}
        parent.principal = None
        parent.corr = None
        parent.seq = 99

    class Principal:
        pass

    seen: list[tuple[Any, ...]] = []

    async def look() -> None:
        ctx = var.get()
        seen.append((dict(ctx.meta), type(ctx.principal), ctx.corr, ctx.cause))

    routes: dict[str, Any] = {}
    caller = _caller(routes, _Calling(replace), var)
    _route(routes, look)
    var.set(Context(7, None, 3000, None, Principal(), {"k": [1, 2]}, None))
    _finished(caller.call("m.f"))
    assert seen == [({"k": [1, 2]}, Principal, 3000, 7)]  # the parent as the call found it


def stats_reset_while_counted() -> None:
    routes: dict[str, Any] = {}

    class Resetting:
        """Counters whose read resets the route's stats, dropping the last reference."""

        @property
        def calls(self) -> int:
            routes["m.f"].stats = None
            return 0

        @calls.setter
        def calls(self, value: int) -> None:
            pass

    caller = _caller(routes, count(1), ContextVar("v", default=None))
    _route(routes, _echo, Resetting())
    assert _finished(caller.call("m.f", x=3)) == 3


def topic_cache_dropped_while_emitting() -> None:
    topics: dict[str, Any] = {}

    class Clearing(deque[Any]):
        def __len__(self) -> int:
            topics.clear()
            return super().__len__()

    queue = Clearing()
    caller = _caller({}, count(1), ContextVar("v", default=None))
    caller.bind_events(lambda *a, **k: None, topics, queue, [None], 100, [], lambda t, p: None)
    caller.emit_enabled = True
    handlers = [object() for _ in range(25)]  # past the tuple free lists: freed for real
    topics["t"] = tuple(handlers)
    _finished(caller.emit("t", 1))
    subs, payload, ctx = queue[0]
    assert list(subs) == handlers
    assert (payload, ctx.topic) == (1, "t")


class _M(Module):
    name = "m"

    @rpc(validate=False)
    async def f(self, x: int) -> int:
        return x


def finalizer_unroutes_during_a_kernel_call() -> None:
    # A collection at nearly every allocation: the one PyContextVar_Set makes
    # inside kernel.call finds the cycle and runs its __del__, which unroutes.
    async def main() -> None:
        async with Kernel([_M]) as kernel:

            class Unrouting:
                me: Unrouting

                def __del__(self) -> None:
                    kernel._router.local.pop("m.f", None)
                    kernel._router.serving.pop("m.f", None)

            old = gc.get_threshold()
            gc.set_threshold(1)
            mid_call = 0
            try:
                for i in range(200):
                    kernel._router.bind(kernel._slots["m"])
                    cycle = Unrouting()
                    cycle.me = cycle
                    del cycle
                    try:
                        assert await kernel.call("m.f", x=i) == i
                    except (NotFoundError, UnavailableError):
                        continue  # collected before the call looked the route up
                    mid_call += "m.f" not in kernel._router.local
            finally:
                gc.set_threshold(*old)
            assert mid_call > 0, "no call saw its route dropped: the case tests nothing"

    asyncio.run(main())


class _Box:
    def __init__(self, x: Any) -> None:
        self.x = x


async def _boxed(x: Any = None, y: Any = None) -> _Box:
    return _Box(x)


def _client_call(call: Callable[..., Any], hint: type | None = _Box) -> Any:
    """A ClientCall of m.f(x, y=<not given>) through ``call``."""
    assert speedups is not None

    async def finish(aw: Any) -> Any:
        return await aw

    return speedups.ClientCall(
        call, "m.f", ("x", "y"), (0, 1), 1, None, print, finish, hint, subclasses=True
    )


def client_call_dropped_while_it_calls() -> None:
    # The call drops every other reference to the method and collects; the
    # method then reads its finisher and class hint (borrowed: set once).
    routes: dict[str, Any] = {}
    caller = _caller(routes, count(1), ContextVar("v", default=None))
    _route(routes, _boxed)
    held: dict[str, Any] = {}

    def call(target: str, /, **params: Any) -> Any:
        held.clear()
        gc.collect()
        return caller.call(target, **params)

    for i in range(50):
        held["m"] = _client_call(call)
        held["m"].__dict__["cycle"] = held  # collectable once nothing else holds it
        assert _finished(held["m"](i)).x == i
        held["m"] = _client_call(call)
        held["m"].__dict__["cycle"] = held
        assert _finished(held["m"](x=i, y=None)).x == i


CASES: dict[str, Callable[[], None]] = {
    f.__name__: f
    for f in (
        route_dropped_while_the_context_is_made,
        route_emptied_while_the_context_is_made,
        parent_fields_replaced_while_the_context_is_made,
        stats_reset_while_counted,
        topic_cache_dropped_while_emitting,
        finalizer_unroutes_during_a_kernel_call,
        client_call_dropped_while_it_calls,
    )
}


@needs_c
@pytest.mark.timeout(60)
def test_finalizers_cannot_free_what_a_call_uses() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    proc = subprocess.run(
        [sys.executable, "-X", "dev", "-m", "tests.kernel.test_speedups_refs", *CASES],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    passed = [line.removeprefix("ok ") for line in proc.stdout.splitlines()]
    assert proc.returncode == 0, (
        f"exit {proc.returncode} after {passed}\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}"
    )
    assert passed == list(CASES)


@needs_c
def test_a_caller_is_set_up_once() -> None:
    # The hot paths read a Caller's fields borrowed: a second set-up would free them.
    assert speedups is not None
    routes: dict[str, Any] = {}
    var: ContextVar[Any] = ContextVar("v", default=None)
    caller = _caller(routes, count(1), var)
    with pytest.raises(RuntimeError, match="set up once"):
        caller.__init__(routes, var, Context, count(1), {}, print, print, print, 1.0)
    bind: tuple[Any, ...] = (print, {}, deque[Any](), [None], 10, [], print)
    caller.bind_events(*bind)
    with pytest.raises(RuntimeError, match="bound once"):
        caller.bind_events(*bind)


@needs_c
def test_an_exhausted_id_counter_raises() -> None:
    routes: dict[str, Any] = {}
    caller = _caller(routes, iter(()), ContextVar("v", default=None))
    _route(routes, _echo)
    with pytest.raises(RuntimeError, match="exhausted"):
        caller.call("m.f", x=1)


@needs_c
def test_a_client_call_is_set_up_once_and_raises_when_it_is_not() -> None:
    # client_vectorcall reads its fields borrowed: a second set-up would free them.
    assert speedups is not None
    method = _client_call(print)
    with pytest.raises(RuntimeError, match="set up once"):
        method.__init__(print, "m.f", (), (), 0, None, print, None, None, subclasses=False)
    bare = speedups.ClientCall.__new__(speedups.ClientCall)
    with pytest.raises(RuntimeError, match="not set up"):
        bare(1)
    assert repr(bare).startswith("<function None at 0x")


@needs_c
def test_a_client_call_leaks_no_references() -> None:
    routes: dict[str, Any] = {}
    caller = _caller(routes, count(1), ContextVar("v", default=None))
    _route(routes, _boxed)
    boxed, plain = _client_call(caller.call), _client_call(caller.call, hint=None)
    held = object()

    def rounds(n: int) -> int:
        for _ in range(n):
            assert _finished(boxed(held)).x is held  # the Finished, as it is
            assert _finished(boxed(x=held, y=held)).x is held  # a new keywords tuple
            assert _finished(plain(held)).x is held  # through the finisher
            with pytest.raises(TypeError):
                boxed(held, x=held)  # to the Python method (print: a TypeError)
        gc.collect()
        return sys.getrefcount(held)

    first = rounds(10)
    assert rounds(300) == first


@needs_c
def test_a_client_in_a_cycle_is_collected() -> None:
    # TypedClient (on ClientBase) and ClientCall both take part in the GC.
    import weakref

    from organelle.module._client import client_of

    class Echo(Module):
        name = "echo"

        @rpc
        async def echo(self, x: int) -> int:
            return x

    client: Any = client_of(Echo, print)
    assert type(client).__mro__[1] is speedups.ClientBase  # type: ignore[union-attr]
    client.echo.__dict__["back"] = client  # client -> its dict -> method -> its dict -> client
    gone = weakref.ref(client)
    del client
    gc.collect()
    assert gone() is None


if __name__ == "__main__":
    for name in sys.argv[1:]:
        CASES[name]()
        print("ok", name, flush=True)
