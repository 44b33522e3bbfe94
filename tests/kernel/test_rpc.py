from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import msgspec
import pydantic
import pytest

from organelle import (
    CallTimeoutError,
    InternalError,
    Kernel,
    Module,
    NotFoundError,
    OrganelleError,
    UnavailableError,
    ValidationError,
    context,
    rpc,
)


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Item(msgspec.Struct):
    sku: str
    qty: int = 1


class Customer(pydantic.BaseModel):
    name: str
    vip: bool = False


class OutOfStockError(OrganelleError):
    code = "test.out_of_stock"


class Math(Module):
    name = "math"
    version = "1.0.0"

    @rpc
    async def add(self, a: int, b: int) -> int:
        return a + b

    @rpc
    async def shapes(
        self, p: Point, item: Item, who: Customer, note: str | None = None
    ) -> dict[str, Any]:
        return {"p": p, "item": item, "who": who, "note": note}

    @rpc
    async def kw(self, a: int, *, b: int = 2) -> int:
        return a * b

    @rpc(validate=False)
    async def raw(self, a: Any, b: Any) -> Any:
        return a + b

    @rpc
    async def sleep(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "done"

    @rpc
    async def nested(self, seconds: float) -> str:
        return str(await self.call("math.sleep", seconds=seconds))

    @rpc
    async def remaining(self) -> float:
        r = context().remaining_s()
        assert r is not None
        return r

    @rpc
    async def nested_remaining(self) -> float:
        return float(await self.call("math.remaining"))

    @rpc
    async def fail_own(self) -> None:
        raise OutOfStockError("sku A", details={"sku": "A"})

    @rpc
    async def fail_foreign(self) -> None:
        raise KeyError("boom")

    @rpc
    async def fail_after_await(self) -> None:
        await asyncio.sleep(0)
        raise ZeroDivisionError("late")

    @rpc(timeout_s=0.05)
    async def capped(self) -> str:
        await asyncio.sleep(1)
        return "never"

    @rpc
    async def ids(self) -> dict[str, Any]:
        ctx = context()
        inner = await self.call("math.ctx")
        return {
            "outer": (ctx.request_id, ctx.correlation_id, ctx.causation_id),
            "inner": inner,
            "meta": ctx.meta,
        }

    @rpc
    async def ctx(self) -> tuple[str, str, str | None]:
        c = context()
        return (c.request_id, c.correlation_id, c.causation_id)


@pytest.fixture
async def kernel() -> Any:
    async with Kernel([Math], {"kernel": {"call_timeout_s": 2}}) as k:
        yield k


async def test_call_returns_result(kernel: Kernel) -> None:
    assert await kernel.call("math.add", a=1, b=2) == 3


async def test_params_converted_from_hints(kernel: Kernel) -> None:
    out = await kernel.call(
        "math.shapes", p={"x": 1, "y": 2}, item={"sku": "A"}, who={"name": "Ann", "vip": True}
    )
    assert out == {
        "p": Point(1, 2),
        "item": Item("A", 1),
        "who": Customer(name="Ann", vip=True),
        "note": None,
    }
    assert await kernel.call("math.kw", a=3, b=3) == 9


async def test_instances_pass_through(kernel: Kernel) -> None:
    p, who = Point(3, 4), Customer(name="Bo")
    out = await kernel.call("math.shapes", p=p, item=Item("B", 2), who=who, note="n")
    assert out["p"] is p
    assert out["who"] is who


async def test_validation_error_lists_each_field(kernel: Kernel) -> None:
    with pytest.raises(ValidationError) as info:
        await kernel.call("math.shapes", p={"x": "one"}, who={"vip": "maybe"}, extra=1)
    fields = {e["field"] for e in info.value.errors}
    assert fields == {"extra", "p", "item", "who"}
    assert "math.shapes" in str(info.value)


async def test_validation_off_passes_through(kernel: Kernel) -> None:
    assert await kernel.call("math.raw", a="x", b="y") == "xy"
    with pytest.raises(ValidationError):
        await kernel.call("math.raw", a=1)


async def test_unknown_module_and_method(kernel: Kernel) -> None:
    with pytest.raises(NotFoundError, match="no module named 'nope'"):
        await kernel.call("nope.add")
    with pytest.raises(NotFoundError, match="has no RPC method 'mul'"):
        await kernel.call("math.mul")
    with pytest.raises(ValidationError, match="module.method"):
        await kernel.call("justaname")


async def test_handler_organelle_error_reaches_caller_unchanged(kernel: Kernel) -> None:
    with pytest.raises(OutOfStockError) as info:
        await kernel.call("math.fail_own")
    assert info.value.details == {"sku": "A"}


@pytest.mark.parametrize(
    ("method", "etype"), [("fail_foreign", "KeyError"), ("fail_after_await", "ZeroDivisionError")]
)
async def test_foreign_exception_becomes_internal_error(
    kernel: Kernel, method: str, etype: str
) -> None:
    with pytest.raises(InternalError) as info:
        await kernel.call(f"math.{method}")
    assert info.value.error_type == etype


async def test_timeout(kernel: Kernel) -> None:
    started = time.monotonic()
    with pytest.raises(CallTimeoutError):
        await kernel.call_with("math.sleep", {"seconds": 5}, timeout_s=0.05)
    assert time.monotonic() - started < 1


async def test_method_timeout_caps_call(kernel: Kernel) -> None:
    with pytest.raises(CallTimeoutError):
        await kernel.call("math.capped")


async def test_nested_call_gets_remaining_time_never_more(kernel: Kernel) -> None:
    remaining = await kernel.call_with("math.nested_remaining", timeout_s=0.5)
    assert 0 < remaining <= 0.5
    with pytest.raises(CallTimeoutError):
        await kernel.call_with("math.nested", {"seconds": 1}, timeout_s=0.05)


async def test_default_timeout_from_config(kernel: Kernel) -> None:
    remaining = await kernel.call("math.remaining")
    assert 1.5 < remaining <= 2


async def test_context_links_nested_calls(kernel: Kernel) -> None:
    out = await kernel.call_with("math.ids", meta={"tenant": "t9"})
    outer_rid, outer_corr, outer_cause = out["outer"]
    inner_rid, inner_corr, inner_cause = out["inner"]
    assert outer_cause is None
    assert inner_cause == outer_rid
    assert inner_corr == outer_corr == outer_rid
    assert inner_rid != outer_rid
    assert out["meta"] == {"tenant": "t9"}


async def test_call_options_never_collide_with_params() -> None:
    class Opts(Module):
        name = "opts"

        @rpc
        async def f(self, timeout_s: float, meta: str) -> str:
            return f"{timeout_s}:{meta}"

    async with Kernel([Opts]) as k:
        assert await k.call("opts.f", timeout_s=1.5, meta="m") == "1.5:m"
        assert await k.call_with("opts.f", {"timeout_s": 2, "meta": "x"}, timeout_s=1) == "2.0:x"


async def test_call_with_rejects_non_mapping_params(kernel: Kernel) -> None:
    with pytest.raises(ValidationError):
        await kernel.call_with("math.add", [1, 2])  # type: ignore[arg-type]


async def test_calls_refused_before_start_and_after_stop() -> None:
    k = Kernel([Math])
    with pytest.raises(UnavailableError, match="not running"):
        await k.call("math.add", a=1, b=2)
    async with k:
        assert await k.call("math.add", a=1, b=2) == 3
    with pytest.raises((UnavailableError, NotFoundError)):
        await k.call("math.add", a=1, b=2)


async def test_local_call_is_a_direct_await_without_copies(kernel: Kernel) -> None:
    payload = {"big": list(range(10))}

    class Echo(Module):
        name = "echo"

        @rpc(validate=False)
        async def same(self, obj: Any) -> Any:
            return obj

    async with Kernel([Echo]) as k:
        assert await k.call("echo.same", obj=payload) is payload
        task = asyncio.current_task()

        class Where(Module):
            name = "where"

            @rpc
            async def task_is(self) -> bool:
                return asyncio.current_task() is task

        await k.add_module(Where)
        assert await k.call("where.task_is") is True


async def test_concurrent_suspended_calls(kernel: Kernel) -> None:
    results = await asyncio.gather(*(kernel.call("math.sleep", seconds=0.01) for _ in range(200)))
    assert results == ["done"] * 200


async def test_cancelling_caller_cancels_handler(kernel: Kernel) -> None:
    entered = asyncio.Event()

    class Hold(Module):
        name = "hold"

        @rpc
        async def wait(self) -> None:
            entered.set()
            await asyncio.sleep(5)

    await kernel.add_module(Hold)
    task = asyncio.ensure_future(kernel.call("hold.wait"))
    await entered.wait()  # the handler is running
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_cancelling_caller_stops_the_handler_at_once(kernel: Kernel) -> None:
    entered, stopped = asyncio.Event(), asyncio.Event()

    class Hold(Module):
        name = "hold"

        @rpc
        async def wait(self) -> None:
            entered.set()
            try:
                await asyncio.sleep(5)
            finally:
                stopped.set()

    await kernel.add_module(Hold)
    task = asyncio.ensure_future(kernel.call("hold.wait"))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stopped.is_set()  # its finally ran: it is not left suspended
