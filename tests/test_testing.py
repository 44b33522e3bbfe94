from __future__ import annotations

import asyncio
import time

import pytest

from organelle import DefinitionError, Kernel, Module, ValidationError, rpc
from organelle.testing import capture, eventually, fake_module, running


class Checkout(Module):
    name = "checkout"
    requires = ("pricing>=1",)

    @rpc
    async def pay(self, sku: str) -> float:
        price = await self.call("pricing.quote", sku=sku)
        await self.emit("checkout.paid", {"sku": sku, "price": price})
        return float(price)


async def quote(sku: str) -> float:
    return 4.5 if sku == "A" else 1.0


async def test_fake_dependency_and_capture() -> None:
    Pricing = fake_module("pricing", "1.0.0", quote=quote)
    async with running(Checkout, Pricing) as k:
        events = capture(k, "checkout.*")
        assert await k.call("checkout.pay", sku="A") == 4.5
        await k.drain()
        assert events == [("checkout.paid", {"sku": "A", "price": 4.5})]
        with pytest.raises(ValidationError):
            await k.call("pricing.quote", sku=3)


async def test_running_stops_on_error() -> None:
    kernel: Kernel | None = None
    with pytest.raises(RuntimeError):
        async with running(fake_module("pricing", "1.0.0", quote=quote)) as k:
            kernel = k
            raise RuntimeError
    assert kernel is not None
    assert not kernel.running


def test_fake_module_requires_async() -> None:
    def sync(sku: str) -> float:
        return 1.0

    with pytest.raises(DefinitionError):
        fake_module("pricing", "1.0.0", quote=sync)  # type: ignore[arg-type]


# -- eventually -------------------------------------------------------------------------
async def test_eventually_returns_the_first_passing_value() -> None:
    seen: list[str] = []
    asyncio.get_running_loop().call_later(0.02, seen.append, "order-1")
    assert await eventually(lambda: [s for s in seen if s.startswith("order")]) == ["order-1"]
    assert await eventually(lambda: len(seen) == 1) is True


async def test_eventually_retries_a_check_that_asserts() -> None:
    calls: list[int] = []

    def check() -> None:
        calls.append(1)
        assert len(calls) >= 3, "not yet"

    await eventually(check, interval_s=0.001)
    assert len(calls) == 3


async def test_eventually_awaits_an_async_check() -> None:
    done = asyncio.Event()
    asyncio.get_running_loop().call_later(0.02, done.set)

    async def check() -> str:
        await asyncio.sleep(0)
        assert done.is_set()
        return "ok"

    assert await eventually(check) == "ok"


async def test_eventually_fails_with_the_last_message_after_the_timeout() -> None:
    seen: list[int] = []

    def check() -> None:
        seen.append(len(seen))
        assert False, f"attempt {seen[-1]}"  # noqa: B011, PT015

    start = time.monotonic()
    with pytest.raises(AssertionError) as info:
        await eventually(check, timeout_s=0.05, interval_s=0.01)
    assert time.monotonic() - start < 1.0
    message = str(info.value)
    assert message.startswith("eventually(")
    assert "still failing after 0.05 s" in message
    assert f"attempts): attempt {seen[-1]}" in message  # the last failure, not the first
    assert len(seen) >= 2
    assert isinstance(info.value.__cause__, AssertionError)
    assert str(info.value.__cause__).startswith(f"attempt {seen[-1]}")


async def test_eventually_retries_a_falsy_result() -> None:
    with pytest.raises(AssertionError, match=r"returned \[\]"):
        await eventually(list, timeout_s=0.03)
    seen: list[int] = []
    with pytest.raises(AssertionError, match="returned False"):
        await eventually(lambda: len(seen) == 1, timeout_s=0.03)


async def test_eventually_lets_an_attempt_started_in_time_finish() -> None:
    loop = asyncio.get_running_loop()
    passes_at = loop.time() + 0.05

    async def slow() -> bool:
        await asyncio.sleep(0.03)
        return loop.time() >= passes_at

    assert await eventually(slow, timeout_s=0.05) is True  # its last attempt ends past 0.05 s


async def test_eventually_cancels_an_async_check_that_hangs() -> None:
    async def hangs() -> None:
        await asyncio.Event().wait()

    start = time.monotonic()
    with pytest.raises(AssertionError, match=r"an attempt was still running after 0\.05 s"):
        await eventually(hangs, timeout_s=0.05)
    assert time.monotonic() - start < 1.0


async def test_eventually_does_not_retry_other_errors() -> None:
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await eventually(broken)
    assert calls == [1]

    async def own_timeout() -> None:
        raise TimeoutError

    with pytest.raises(TimeoutError):
        await eventually(own_timeout)


@pytest.mark.parametrize("options", [{"timeout_s": 0}, {"interval_s": -1.0}])
async def test_eventually_rejects_a_non_positive_bound(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        await eventually(lambda: True, **options)
