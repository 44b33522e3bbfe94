from __future__ import annotations

import asyncio
import time
from typing import Any

import pydantic
import pytest

from organelle import (
    DefinitionError,
    DependencyError,
    Kernel,
    LifecycleError,
    Module,
    ModuleState,
    NotFoundError,
    UnavailableError,
    on,
    rpc,
)
from organelle.context import root_context
from organelle.testing import eventually


class Pricing(Module):
    name = "pricing"
    version = "1.2.0"

    class Config(pydantic.BaseModel):
        price: float = 1.0

    @rpc
    async def quote(self) -> float:
        return float(self.config.price)


class PricingV2(Pricing):
    version = "2.0.0"


class BrokenPricing(Pricing):
    async def on_start(self) -> None:
        raise RuntimeError("cannot start")


class Orders(Module):
    name = "orders"
    requires = ("pricing>=1,<2",)

    @rpc
    async def total(self, qty: int) -> float:
        return qty * float(await self.call("pricing.quote"))


class Audit(Module):
    name = "audit"
    requires = ("orders",)


class Mail(Module):
    name = "mail"
    optional = ("orders",)


async def test_add_module_at_runtime() -> None:
    async with Kernel([Pricing]) as k:
        await k.add_module(Orders)
        assert await k.call("orders.total", qty=3) == 3.0
        with pytest.raises(DefinitionError, match="already registered"):
            await k.add_module(Orders)


async def test_add_module_with_missing_dependency_refused() -> None:
    async with Kernel([]) as k:
        with pytest.raises(DependencyError, match="requires 'pricing'"):
            await k.add_module(Orders)
        assert "orders" not in k.modules()


async def test_add_module_that_fails_is_not_kept() -> None:
    async with Kernel([]) as k:
        with pytest.raises(LifecycleError):
            await k.add_module(BrokenPricing)
        assert "pricing" not in k.modules()


async def test_remove_refused_while_required_then_cascade() -> None:
    async with Kernel([Pricing, Orders, Audit, Mail]) as k:
        with pytest.raises(DependencyError, match="required by active modules orders, audit"):
            await k.remove_module("pricing")
        removed = await k.remove_module("pricing", cascade=True)
        assert removed == ["audit", "orders", "pricing"]
        assert sorted(k.modules()) == ["mail"]
        with pytest.raises(NotFoundError):
            await k.call("orders.total", qty=1)
        with pytest.raises(NotFoundError):
            await k.remove_module("pricing")


async def test_remove_leaf_module() -> None:
    async with Kernel([Pricing, Orders]) as k:
        assert await k.remove_module("orders") == ["orders"]
        assert await k.call("pricing.quote") == 1.0


async def test_reload_with_new_config() -> None:
    async with Kernel([Pricing, Orders]) as k:
        old = k.module("pricing")
        await k.reload_module("pricing", config={"price": 2.5})
        assert k.module("pricing") is not old
        assert await k.call("orders.total", qty=2) == 5.0
        assert k.state("pricing") is ModuleState.ACTIVE


async def test_reload_failure_keeps_old_instance_serving() -> None:
    async with Kernel([Pricing, Orders], {"modules": {"pricing": {"price": 3}}}) as k:
        old = k.module("pricing")
        with pytest.raises(LifecycleError, match="cannot start"):
            await k.reload_module("pricing", BrokenPricing)
        assert k.module("pricing") is old
        assert await k.call("orders.total", qty=1) == 3.0
        assert k.state("pricing") is ModuleState.ACTIVE


async def test_reload_refused_when_it_breaks_a_dependent() -> None:
    async with Kernel([Pricing, Orders]) as k:
        with pytest.raises(DependencyError, match="version 2.0.0"):
            await k.reload_module("pricing", PricingV2)
        assert await k.call("pricing.quote") == 1.0


async def test_reload_with_invalid_config_refused() -> None:
    async with Kernel([Pricing]) as k:
        with pytest.raises(ValueError, match="modules.pricing.price"):
            await k.reload_module("pricing", config={"price": "free"})


async def test_reload_serves_without_gap() -> None:
    class SlowStart(Pricing):
        async def on_start(self) -> None:
            await asyncio.sleep(0.05)

    async with Kernel([Pricing]) as k:
        stop = asyncio.Event()
        failures: list[BaseException] = []

        async def hammer() -> None:
            while not stop.is_set():
                try:
                    await k.call("pricing.quote")
                except Exception as exc:
                    failures.append(exc)
                await asyncio.sleep(0)

        task = asyncio.ensure_future(hammer())
        await k.reload_module("pricing", SlowStart, config={"price": 9})
        stop.set()
        await task
        assert failures == []
        assert await k.call("pricing.quote") == 9.0


async def test_reload_moves_subscriptions() -> None:
    got: list[str] = []

    class Sub(Module):
        name = "sub"

        @on("ping")
        async def ping(self) -> None:
            got.append(str(id(self)))

    async with Kernel([Sub]) as k:
        await k.emit("ping")
        await k.drain()
        await k.reload_module("sub")
        await k.emit("ping")
        await k.drain()
    assert len(got) == 2
    assert got[0] != got[1]


async def test_graceful_shutdown_waits_for_inflight_and_refuses_new() -> None:
    started = asyncio.Event()
    finished: list[str] = []

    class Slow(Module):
        name = "slow"

        @rpc
        async def work(self) -> str:
            started.set()
            await asyncio.sleep(0.1)
            finished.append("work")
            return "ok"

        @on("slow.evt")
        async def evt(self) -> None:
            await asyncio.sleep(0.1)
            finished.append("evt")

    k = Kernel([Slow])
    await k.start()
    call = asyncio.ensure_future(k.call("slow.work"))
    await k.emit("slow.evt")
    await started.wait()
    stopping = asyncio.ensure_future(k.stop())
    await eventually(lambda: not k.accepting)  # stop() began: it drains
    with pytest.raises(UnavailableError, match="draining"):
        await k.call("slow.work")
    assert await call == "ok"
    await stopping
    assert sorted(finished) == ["evt", "work"]


async def test_drain_timeout_bounds_shutdown() -> None:
    class Stuck(Module):
        name = "stuck"

        @on("stuck")
        async def forever(self) -> None:
            await asyncio.sleep(60)

    k = Kernel([Stuck], {"kernel": {"drain_timeout_s": 0.1}})
    await k.start()
    await k.emit("stuck")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await k.stop()
    assert loop.time() - t0 < 2


async def test_modules_info() -> None:
    async with Kernel([Pricing, Orders]) as k:
        info = k.modules()
        assert info["orders"].requires == ("pricing<2,>=1",)
        assert info["pricing"].rpc_methods == ("quote",)
        assert info["pricing"].version == "1.2.0"
        assert k.check() == [["pricing"], ["orders"]]


def test_module_lookup_errors() -> None:
    k = Kernel([Pricing])
    with pytest.raises(NotFoundError):
        k.state("nope")
    with pytest.raises(NotFoundError):
        k.module("nope")


async def test_middleware_wraps_rpc_and_events() -> None:
    seen: list[tuple[str, str]] = []

    async def recorder(inv: Any, call_next: Any) -> Any:
        seen.append((inv.kind, inv.target))
        result = await call_next(inv)
        if inv.kind == "rpc":
            return result * 10
        return result

    class M(Module):
        name = "m"

        @rpc
        async def one(self) -> int:
            return 1

        @on("m.evt")
        async def evt(self) -> None:
            pass

    k = Kernel([M], middleware=[recorder])
    async with k:
        assert await k.call("m.one") == 10
        await k.emit("m.evt")
        await k.drain()
    assert ("rpc", "m.one") in seen
    assert ("event", "m.evt") in seen


async def test_middleware_can_short_circuit_and_order_is_onion() -> None:
    order: list[str] = []

    def named(tag: str) -> Any:
        async def mw(inv: Any, call_next: Any) -> Any:
            order.append(f"in:{tag}")
            try:
                return await call_next(inv)
            finally:
                order.append(f"out:{tag}")

        return mw

    async def deny(inv: Any, call_next: Any) -> Any:
        if inv.params and inv.params.get("blocked"):
            return "denied"
        return await call_next(inv)

    class M(Module):
        name = "m"

        @rpc
        async def f(self, blocked: bool = False) -> str:
            order.append("handler")
            return "ran"

    k = Kernel([M], middleware=[named("a"), named("b")])
    k.use(deny)
    async with k:
        assert await k.call("m.f") == "ran"
        assert await k.call("m.f", blocked=True) == "denied"
    assert order[:5] == ["in:a", "in:b", "handler", "out:b", "out:a"]


async def test_a_call_while_starting_says_starting_not_draining() -> None:
    entered, gate = asyncio.Event(), asyncio.Event()

    class Late(Module):
        name = "late"

        async def on_start(self) -> None:
            entered.set()
            await gate.wait()

        @rpc
        async def ping(self) -> str:
            return "pong"

    k = Kernel([Late])
    start = asyncio.create_task(k.start())
    await entered.wait()
    with pytest.raises(UnavailableError, match="kernel is starting"):
        await k.call("late.ping")
    gate.set()
    await start
    assert await k.call("late.ping") == "pong"
    await k.stop()
    with pytest.raises(UnavailableError, match="not running"):
        await k.call("late.ping")


async def test_a_call_from_the_wire_waits_while_the_node_finishes_starting() -> None:
    """A node is announced before its start ends; a remote call in that window waits."""

    class Late(Module):
        name = "late"

        @rpc
        async def ping(self) -> str:
            return "pong"

    k = Kernel([Late])
    async with k:
        d = k._dispatcher
        d.accepting, d.starting = False, True  # back in the window between serve and open
        waiting = asyncio.create_task(
            k.dispatch("late.ping", {}, root_context(time.monotonic() + 5))
        )
        await asyncio.sleep(0.05)
        assert not waiting.done()
        d.accepting, d.starting = True, False
        assert await asyncio.wait_for(waiting, 5) == "pong"

        d.accepting, d.starting = False, True
        with pytest.raises(UnavailableError, match="kernel is starting"):
            await k.dispatch("late.ping", {}, root_context(time.monotonic() + 0.05))
        d.starting = False  # draining: refused at once, whatever the deadline
        began = time.monotonic()
        with pytest.raises(UnavailableError, match="draining"):
            await k.dispatch("late.ping", {}, root_context(time.monotonic() + 5))
        assert time.monotonic() - began < 1
        d.accepting = True
