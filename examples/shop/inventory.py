"""Inventory: stock levels in memory, reservations, and a low-stock alert."""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec
from pydantic import BaseModel, Field

from organelle import Module, NotFoundError, OrganelleError, rpc
from organelle.gateway import route

Positive = Annotated[int, msgspec.Meta(gt=0)]


class OutOfStockError(OrganelleError):
    """Not enough stock to reserve; callers catch it by class, locally or remotely."""

    code = "shop.out_of_stock"
    http_status = 409  # a conflict with the current stock, not a server fault


class Reservation(msgspec.Struct, frozen=True, kw_only=True):
    """Units set aside for an order until it is cancelled."""

    id: str
    sku: str
    qty: int


class LowStock(msgspec.Struct, frozen=True, kw_only=True):
    """Emitted as ``inventory.low_stock`` when a SKU's stock falls to the threshold."""

    sku: str
    available: int
    threshold: int


class Inventory(Module):
    """Owns stock levels; reserving is the only way stock goes down, so none is sold twice."""

    name = "inventory"
    version = "1.1.0"

    class Config(BaseModel):
        """Starting stock, the level at which someone should reorder, reservations kept."""

        low_stock: int = Field(default=5, ge=0)
        stock: dict[str, int] = Field(default_factory=dict)
        keep: int = Field(default=10_000, gt=0)

    config: Config

    async def on_start(self) -> None:
        """Fill the shelves from config; a restart starts from config again (memory only)."""
        self._stock: dict[str, int] = dict(self.config.stock)
        self._reservations: dict[str, Reservation] = {}

    @route.get("/inventory/{sku}")
    @rpc
    async def stock(self, sku: str) -> int:
        """Units of ``sku`` available (not reserved).

        Raises:
            NotFoundError: the SKU is not stocked here.
        """
        return self._available(sku)

    @rpc
    async def reserve(self, sku: str, qty: Positive) -> Reservation:
        """Set ``qty`` units of ``sku`` aside; emit ``inventory.low_stock`` when it gets low.

        Raises:
            NotFoundError: the SKU is not stocked here.
            OutOfStockError: fewer than ``qty`` units are available.
        """
        before = self._available(sku)
        if qty > before:
            raise OutOfStockError(
                f"only {before} of {sku!r} left, {qty} wanted",
                details={"sku": sku, "available": before, "wanted": qty},
            )
        # No await between the check and the update: two orders cannot both take the last unit.
        after = self._stock[sku] = before - qty
        reservation = Reservation(id=uuid.uuid4().hex[:12], sku=sku, qty=qty)
        self._reservations[reservation.id] = reservation
        if len(self._reservations) > self.config.keep:
            # Memory only, so bounded: the oldest reservation is final (it can no longer be
            # released), as an order the orders module no longer keeps cannot be cancelled.
            del self._reservations[next(iter(self._reservations))]
        threshold = self.config.low_stock
        if before > threshold >= after:
            self.log.warning("%s is low: %d left (threshold %d)", sku, after, threshold)
            await self.emit(
                "inventory.low_stock", LowStock(sku=sku, available=after, threshold=threshold)
            )
        return reservation

    @rpc
    async def release(self, reservation_id: str) -> bool:
        """Put a reservation's units back; ``False`` if it was already released (idempotent)."""
        reservation = self._reservations.pop(reservation_id, None)
        if reservation is None:
            return False
        self._stock[reservation.sku] += reservation.qty
        return True

    @route.post("/inventory/{sku}/restock")
    @rpc
    async def restock(self, sku: str, qty: Positive) -> int:
        """Add ``qty`` units of ``sku`` (a new SKU is fine); return the units now available."""
        self._stock[sku] = self._stock.get(sku, 0) + qty
        return self._stock[sku]

    def _available(self, sku: str) -> int:
        try:
            return self._stock[sku]
        except KeyError:
            raise NotFoundError(f"sku {sku!r} is not stocked", details={"sku": sku}) from None
