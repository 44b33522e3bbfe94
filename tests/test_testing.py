from __future__ import annotations

import pytest

from organelle import DefinitionError, Kernel, Module, ValidationError, rpc
from organelle.testing import capture, fake_module, running


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
