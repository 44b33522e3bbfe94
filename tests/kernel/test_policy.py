"""Call policies on local calls: each part does what it says, layers override, reload applies."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from organelle import CallTimeoutError, InternalError, Kernel, Module, UnavailableError, rpc
from organelle.config.policy import BreakerPolicy, BulkheadPolicy, CallRetryPolicy, Policy
from organelle.errors import (
    BulkheadFullError,
    CircuitOpenError,
    DefinitionError,
    NotServedError,
    RateLimitedError,
    ValidationError,
)
from organelle.kernel._policy import Breaker, Bulkhead, RetryBudget, TokenBucket, did_not_run
from organelle.testing import running


class Flaky(Module):
    """Fails the first ``fails`` calls of each method, then answers."""

    name = "flaky"

    async def on_start(self) -> None:
        self.calls: dict[str, int] = {}
        self.fails = 2
        self.gate = asyncio.Event()

    def _count(self, method: str) -> int:
        self.calls[method] = self.calls.get(method, 0) + 1
        return self.calls[method]

    @rpc(idempotent=True, policy={"retry": {"attempts": 3, "backoff_s": 0.001}})
    async def read(self) -> str:
        if self._count("read") <= self.fails:
            raise RuntimeError("transient")
        return "ok"

    @rpc(policy={"retry": {"attempts": 3, "backoff_s": 0.001}})
    async def write(self) -> str:
        if self._count("write") <= self.fails:
            raise RuntimeError("transient")
        return "ok"

    @rpc(policy={"retry": {"attempts": 3, "backoff_s": 0.001}})
    async def refused(self) -> str:
        if self._count("refused") <= self.fails:
            raise UnavailableError("not now")  # turned away: it did not run
        return "ok"

    @rpc(policy={"timeout_s": 0.05})
    async def slow(self) -> str:
        await asyncio.sleep(1)
        return "late"

    @rpc(policy={"bulkhead": {"max_concurrent": 2, "max_queue": 1}})
    async def narrow(self) -> str:
        await self.gate.wait()
        return "done"

    @rpc(policy={"fallback_value": {"price": 0}})
    async def price(self) -> dict[str, Any]:
        raise UnavailableError("pricing is down")

    @rpc(policy={"fallback": "flaky.cached"})
    async def quote(self, sku: str) -> str:
        raise UnavailableError("down")

    @rpc
    async def cached(self, sku: str) -> str:
        return f"cached {sku}"

    @rpc(policy={"fallback_value": 0})
    async def strict(self, n: int) -> int:
        return n

    @rpc(policy={"breaker": {"failures": 3, "reset_s": 0.1}})
    async def broken(self) -> str:
        self._count("broken")
        raise RuntimeError("broken")

    @rpc
    async def plain(self) -> str:
        return "plain"


def plain_path_left(k: Kernel, target: str) -> bool:
    return bool(k._router.local[target].slow)


def flaky(k: Kernel) -> Flaky:
    module = k.module("flaky")
    assert isinstance(module, Flaky)
    return module


async def test_an_idempotent_method_is_retried_until_it_answers() -> None:
    async with Kernel([Flaky]) as k:
        assert await k.call("flaky.read") == "ok"
        assert flaky(k).calls["read"] == 3
        assert k.policy_stats()["retries"] == {"flaky.read": 2}


async def test_a_method_not_declared_idempotent_is_not_retried_after_it_ran() -> None:
    async with Kernel([Flaky]) as k:
        with pytest.raises(InternalError):
            await k.call("flaky.write")
        assert flaky(k).calls["write"] == 1


async def test_an_error_saying_the_call_did_not_run_is_retried_for_any_method() -> None:
    async with Kernel([Flaky]) as k:
        assert await k.call("flaky.refused") == "ok"
        assert flaky(k).calls["refused"] == 3


async def test_retries_stop_at_the_attempts() -> None:
    async with Kernel([Flaky]) as k:
        flaky(k).fails = 5
        with pytest.raises(InternalError):
            await k.call("flaky.read")
        assert flaky(k).calls["read"] == 3


async def test_the_policy_timeout_cuts_the_call() -> None:
    async with Kernel([Flaky]) as k:
        started = time.monotonic()
        with pytest.raises(CallTimeoutError):
            await k.call("flaky.slow")
        assert time.monotonic() - started < 0.5


async def test_the_bulkhead_runs_two_queues_one_and_refuses_the_rest() -> None:
    async with Kernel([Flaky]) as k:
        mod = flaky(k)
        calls = [asyncio.create_task(k.call("flaky.narrow")) for _ in range(3)]
        await asyncio.sleep(0.02)
        with pytest.raises(BulkheadFullError) as caught:
            await k.call("flaky.narrow")
        assert caught.value.code == "organelle.bulkhead_full"
        mod.gate.set()
        assert await asyncio.gather(*calls) == ["done"] * 3
        assert k.policy_stats()["bulkhead_rejected"] == {"flaky.narrow": 1}


async def test_a_fallback_value_answers_instead_of_an_unavailable_callee() -> None:
    async with Kernel([Flaky]) as k:
        assert await k.call("flaky.price") == {"price": 0}
        assert k.policy_stats()["fallbacks"] == {"flaky.price": 1}


async def test_a_fallback_method_gets_the_same_params() -> None:
    async with Kernel([Flaky]) as k:
        assert await k.call("flaky.quote", sku="a1") == "cached a1"


async def test_a_validation_error_is_not_answered_by_the_fallback() -> None:
    async with Kernel([Flaky]) as k:
        with pytest.raises(ValidationError):
            await k.call("flaky.strict", n="not a number")


async def test_the_breaker_opens_refuses_and_half_opens() -> None:
    async with Kernel([Flaky]) as k:
        mod = flaky(k)
        for _ in range(3):
            with pytest.raises(InternalError):
                await k.call("flaky.broken")
        with pytest.raises(CircuitOpenError) as caught:
            await k.call("flaky.broken")
        assert mod.calls["broken"] == 3  # refused without running
        assert caught.value.details["retry_after_s"] <= 0.1
        assert k.policy_stats()["breakers"]["flaky.broken"]["state"] == "open"
        await asyncio.sleep(0.12)
        with pytest.raises(InternalError):  # the probe goes through, fails, reopens
            await k.call("flaky.broken")
        assert mod.calls["broken"] == 4
        changes = k.policy_stats()["breakers"]["flaky.broken"]["changes"]
        assert changes == {"closed": 0, "open": 2, "half_open": 1}


async def test_a_method_without_policy_keeps_the_plain_path() -> None:
    async with Kernel([Flaky]) as k:
        assert not plain_path_left(k, "flaky.plain")
        assert plain_path_left(k, "flaky.read")
        assert await k.call("flaky.plain") == "plain"


class Orders(Module):
    name = "orders"
    requires = ("flaky",)

    @rpc
    async def place(self) -> Any:
        return await self.call("flaky.plain")

    @rpc
    async def price(self) -> Any:
        return await self.call("flaky.price")


async def test_config_overrides_the_callee_and_a_caller_gets_its_own() -> None:
    config = {
        "policies": {
            "flaky.price": {"fallback_value": {"price": 1}},
            "orders -> flaky.price": {"fallback_value": {"price": 2}},
            "orders -> flaky.plain": {"rate_limit": {"rate": 1, "burst": 1}},
        }
    }
    async with Kernel([Flaky, Orders], config) as k:
        assert await k.call("flaky.price") == {"price": 1}
        assert await k.call("orders.price") == {"price": 2}
        assert await k.call("orders.place") == "plain"
        with pytest.raises(RateLimitedError):
            await k.call("orders.place")
        assert await k.call("flaky.plain") == "plain"  # not orders: no limit
        assert k.policy_stats()["rate_limited"] == {"flaky.plain": 1}


async def test_a_reload_changes_policies_live() -> None:
    async with Kernel([Flaky, Orders]) as k:
        assert not plain_path_left(k, "flaky.plain")
        await k.reload_config({"policies": {"flaky.plain": {"fallback_value": "x"}}})
        assert plain_path_left(k, "flaky.plain")
        await k.reload_config({"policies": {"orders -> flaky.price": {"fallback_value": 3}}})
        assert await k.call("orders.price") == 3
        assert not plain_path_left(k, "flaky.plain")
        await k.reload_config({})
        assert await k.call("orders.price") == {"price": 0}


async def test_an_invalid_policy_rejects_the_reload_and_keeps_the_old() -> None:
    config = {"policies": {"flaky.price": {"fallback_value": 7}}}
    async with Kernel([Flaky], config) as k:
        with pytest.raises(Exception, match="policies.flaky.price"):
            await k.reload_config({"policies": {"flaky.price": {"retry": {"attempts": 0}}}})
        with pytest.raises(Exception, match="policies.nope -> "):
            await k.reload_config({"policies": {"nope -> ": {}}})
        assert await k.call("flaky.price") == 7


def test_a_bad_policy_on_rpc_is_reported_where_it_is_written() -> None:
    with pytest.raises(DefinitionError, match="bulkhead"):
        rpc(policy={"bulkhead": {"max_concurrent": 0}})


# the parts alone ---------------------------------------------------------------
def test_breaker_opens_on_the_failure_ratio_of_its_window() -> None:
    b = Breaker("t", BreakerPolicy(failures=100, window=10, min_calls=10, failure_ratio=0.5))
    for i in range(10):
        assert b.allow(0.0)
        b.record(ok=i % 2 == 0, now=0.0)
    assert b.state == "open"


def test_breaker_closes_after_its_probes_succeed() -> None:
    b = Breaker("t", BreakerPolicy(failures=1, reset_s=1.0, probes=2))
    b.record(ok=False, now=0.0)
    assert not b.allow(0.5)
    assert b.allow(1.0)
    assert b.allow(1.0)
    assert not b.allow(1.0)  # two probes out, no third
    b.record(ok=True, now=1.1)
    assert b.state == "half_open"
    b.record(ok=True, now=1.1)
    assert b.state == "closed"


def test_token_bucket_refills_at_its_rate() -> None:
    from organelle.config.policy import RateLimitPolicy

    bucket = TokenBucket(RateLimitPolicy(rate=10, burst=2))
    now = bucket.last
    assert bucket.take(now) == 0
    assert bucket.take(now) == 0
    assert bucket.take(now) == pytest.approx(0.1)
    assert bucket.take(now + 0.1) == 0


def test_retry_budget_bounds_retries_to_a_share_of_calls() -> None:
    budget = RetryBudget(CallRetryPolicy(budget=0.1, min_per_s=0, budget_window_s=10))
    for _ in range(100):
        budget.called(5.0)
    allowed = sum(budget.spend(5.0) for _ in range(50))
    assert allowed == 10


async def test_bulkhead_passes_a_slot_to_the_next_waiter_in_order() -> None:
    bulkhead = Bulkhead(BulkheadPolicy(max_concurrent=1, max_queue=2))
    order: list[int] = []
    await bulkhead.acquire(time.monotonic() + 1, "t")

    async def wait(i: int) -> None:
        await bulkhead.acquire(time.monotonic() + 1, "t")
        order.append(i)
        bulkhead.release()

    waiting = [asyncio.create_task(wait(i)) for i in range(2)]
    await asyncio.sleep(0.01)
    bulkhead.release()
    await asyncio.gather(*waiting)
    assert order == [0, 1]
    assert bulkhead.active == 0


async def test_a_waiter_cancelled_in_the_queue_leaves_no_slot_taken() -> None:
    bulkhead = Bulkhead(BulkheadPolicy(max_concurrent=1, max_queue=1))
    await bulkhead.acquire(time.monotonic() + 1, "t")
    waiter = asyncio.create_task(bulkhead.acquire(time.monotonic() + 1, "t"))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    bulkhead.release()
    assert bulkhead.active == 0
    assert not bulkhead.waiters


def test_which_errors_prove_the_call_did_not_run() -> None:
    assert did_not_run(NotServedError("x"))
    assert did_not_run(UnavailableError("draining"))
    assert did_not_run(CircuitOpenError("x"))
    assert not did_not_run(UnavailableError("lost", details={"in_flight": True}))
    assert not did_not_run(CallTimeoutError("x"))
    assert not did_not_run(InternalError("x"))


def test_layers_replace_what_they_name() -> None:
    base = Policy(timeout_s=1, retry=CallRetryPolicy(attempts=5), fallback_value=1)
    top = Policy(retry=False, bulkhead=BulkheadPolicy(max_concurrent=3))
    merged = top.over(base)
    assert merged.timeout_s == 1
    assert merged.retry is False
    assert merged.bulkhead == BulkheadPolicy(max_concurrent=3)
    assert merged.fallback_value == 1


class SlowStrict(Module):
    name = "quotes"

    @rpc(policy={"timeout_s": 0.05})
    async def quote(self) -> str:
        await asyncio.sleep(0.3)
        return "late"


class SlowLenient(Module):
    name = "quotes"

    @rpc
    async def quote(self) -> str:
        await asyncio.sleep(0.06)
        return "on time"


class OtherStrict(Module):
    name = "quotes2"  # a name that shares the prefix: its guard is its own

    @rpc(policy={"timeout_s": 0.05})
    async def quote(self) -> str:
        await asyncio.sleep(0.3)
        return "late"


async def test_a_module_replaced_at_run_time_brings_its_own_declared_policy() -> None:
    async with Kernel([SlowStrict, OtherStrict]) as kernel:
        with pytest.raises(CallTimeoutError):
            await kernel.call("quotes.quote")
        with pytest.raises(CallTimeoutError):
            await kernel.call("quotes2.quote")
        await kernel.remove_module("quotes")
        await kernel.add_module(SlowLenient)
        assert await kernel.call("quotes.quote") == "on time"  # the old guard was forgotten
        with pytest.raises(CallTimeoutError):
            await kernel.call("quotes2.quote")  # the other module's guard stands


def test_a_half_open_breaker_with_its_probe_out_refuses() -> None:
    b = Breaker("t", BreakerPolicy(failures=1, reset_s=1.0, probes=1))
    b.record(ok=False, now=0.0)
    assert b.refuses(0.5)  # open
    assert not b.refuses(1.0)  # due to half-open: a probe may go
    assert b.allow(1.0)  # the probe goes out
    assert b.refuses(1.0)  # half-open, nothing more to let through
    b.record(ok=True, now=1.1)
    assert not b.refuses(1.1)  # closed


class Quoter(Module):
    name = "quoter"

    @rpc
    async def quote(self) -> str:
        return "ok"


async def test_a_node_whose_probe_is_out_is_skipped_not_an_error() -> None:
    """Two nodes serve; one's per-node breaker is half-open with its probe out: calls go to the other."""
    cluster = f"memory://half-open-{time.monotonic_ns()}"
    policy = {"timeout_s": 5, "breaker": {"failures": 5, "probes": 1}}

    def node(name: str, **extra: Any) -> dict[str, Any]:
        return {"kernel": {"transport": cluster, "node": name, "prefer_local": False}, **extra}

    async with (
        running(Quoter, config=node("a")),
        running(Quoter, config=node("b")),
        running(config=node("caller", policies={"quoter.quote": policy})) as caller,
    ):
        async with asyncio.timeout(5):
            while len(caller.transport.versions("quoter")) < 2:
                await asyncio.sleep(0.01)
        guard = caller._policies.guard(None, "quoter.quote")
        assert guard is not None
        assert guard.per_node
        sick = guard.node_breaker("a")
        for _ in range(5):
            sick.record(ok=False, now=time.monotonic() - 60)  # opened long ago: due to half-open
        assert sick.allow(time.monotonic())  # its one probe is out (never answered here)
        results = await asyncio.gather(*(caller.call("quoter.quote") for _ in range(50)))
        assert results == ["ok"] * 50
        assert sick.probing == 1  # no call went to the sick node
