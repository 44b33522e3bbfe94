"""Demo: places an order every few seconds so a person running the app sees it serve."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, Field

from organelle import Module, OrganelleError
from organelle.codec import convert
from shop.inventory import OutOfStockError
from shop.orders import Order


class Demo(Module):
    """A pretend customer: calls ``orders.place_order`` like any client would, over RPC."""

    name = "demo"
    version = "1.0.0"
    requires = ("orders>=1.0,<2", "inventory>=1.0,<2")
    # Start after notifications when it is present, so the first order's message is not missed.
    optional = ("notifications>=1.0,<2",)

    class Config(BaseModel):
        """What to order and how often."""

        interval_s: float = Field(default=2.0, gt=0)
        customers: list[str] = Field(default=["ada", "grace", "linus"], min_length=1)
        skus: list[str] = Field(default=["apple"], min_length=1)
        restock_qty: int = Field(default=20, gt=0)

    config: Config

    async def on_start(self) -> None:
        """Start ordering in the background; on_start must return for the app to come up.

        ``spawn`` gives the loop a fresh context and cancels it when the module
        stops (the kernel stops us before orders and inventory).
        """
        self._placed = 0
        self.spawn(self._loop(), name="shop-demo")

    async def _loop(self) -> None:
        n = 0
        while True:
            await self.place_one(n)
            n += 1
            await asyncio.sleep(self.config.interval_s)

    async def place_one(self, n: int) -> Order | None:
        """Place the ``n``-th demo order; restock and carry on when stock runs out."""
        cfg = self.config
        customer = cfg.customers[n % len(cfg.customers)]
        sku = cfg.skus[n % len(cfg.skus)]
        lines = [{"sku": sku, "qty": 1 + (n // len(cfg.skus)) % 3}]
        try:
            order = convert(
                await self.call("orders.place_order", customer=customer, lines=lines), Order
            )
        except OutOfStockError:
            stock = await self.call("inventory.restock", sku=sku, qty=cfg.restock_qty)
            self.log.info("%s ran out; restocked to %d", sku, stock)
            return None
        except OrganelleError as exc:
            self.log.warning("order failed: %s", exc)
            return None
        self._placed += 1
        self.log.info("order %s placed, total %s %s", order.id, order.total, order.currency)
        return order
