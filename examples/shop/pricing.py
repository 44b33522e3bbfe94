"""Pricing: quotes a price for a quantity of a SKU, with config-driven tax and bulk discount."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated

import msgspec
from pydantic import BaseModel, Field

from organelle import Module, NotFoundError, rpc
from organelle.gateway import route

CENT = Decimal("0.01")
Positive = Annotated[int, msgspec.Meta(gt=0)]
"""A count of at least one; the kernel rejects ``qty=0`` before the handler runs."""


def money(value: Decimal) -> Decimal:
    """Round to cents the way a till does (half up), so totals add up on receipts."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


class Quote(msgspec.Struct, frozen=True, kw_only=True):
    """A priced order line; all amounts in the shop's currency, rounded to cents."""

    sku: str
    qty: int
    unit_price: Decimal
    subtotal: Decimal
    discount: Decimal
    tax: Decimal
    total: Decimal


class Pricing(Module):
    """Owns the price list; every other module asks it rather than keeping its own copy."""

    name = "pricing"
    version = "1.2.0"

    class Config(BaseModel):
        """Prices and rules; change them in app.toml, not in code."""

        tax_rate: Decimal = Field(default=Decimal("0.20"), ge=0, le=1)
        bulk_qty: int = Field(default=10, gt=0)
        bulk_discount: Decimal = Field(default=Decimal("0.10"), ge=0, lt=1)
        prices: dict[str, Decimal] = Field(default_factory=dict)

    config: Config

    @route.get("/prices/{sku}")
    @rpc
    async def quote(self, sku: str, qty: Positive = 1) -> Quote:
        """Price ``qty`` units of ``sku``: subtotal, bulk discount, then tax.

        Raises:
            NotFoundError: the SKU has no price.
        """
        cfg = self.config
        unit = cfg.prices.get(sku)
        if unit is None:
            raise NotFoundError(f"no price for sku {sku!r}", details={"sku": sku})
        subtotal = money(unit * qty)
        discount = money(subtotal * cfg.bulk_discount) if qty >= cfg.bulk_qty else Decimal(0)
        tax = money((subtotal - discount) * cfg.tax_rate)
        return Quote(
            sku=sku,
            qty=qty,
            unit_price=unit,
            subtotal=subtotal,
            discount=discount,
            tax=tax,
            total=subtotal - discount + tax,
        )

    @route.get("/prices", cache_ttl_s=5)
    @rpc
    async def price_list(self) -> dict[str, Decimal]:
        """Every SKU with its unit price before tax."""
        return dict(self.config.prices)
