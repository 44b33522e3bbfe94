"""Orders: places an order by pricing it and reserving its stock, all or nothing."""

from __future__ import annotations

import enum
import uuid
from decimal import Decimal
from typing import Annotated

import msgspec
from pydantic import BaseModel, Field

from organelle import Module, NotFoundError, OrganelleError, ValidationError, rpc
from organelle.codec import convert
from organelle.gateway import route
from shop.inventory import Reservation
from shop.pricing import Quote

Customer = Annotated[str, msgspec.Meta(min_length=1, max_length=80)]


class OrderLine(BaseModel):
    """One line of an order request, validated before any module is called."""

    sku: str = Field(min_length=1, max_length=40)
    qty: int = Field(gt=0, le=1000)


class OrderStatus(enum.StrEnum):
    """Where an order is; only placed orders hold stock."""

    PLACED = "placed"
    CANCELLED = "cancelled"


MAX_LINES = 20
OrderLines = Annotated[list[OrderLine], msgspec.Meta(min_length=1, max_length=MAX_LINES)]
"""1 to 20 lines: in the type, so the OpenAPI schema and the validation say the same."""


class Order(msgspec.Struct, frozen=True, kw_only=True):
    """A placed order: its priced lines, the reservations that back it, and the total."""

    id: str
    customer: str
    lines: list[Quote]
    reservations: list[str]
    total: Decimal
    currency: str
    status: OrderStatus = OrderStatus.PLACED


class OrderEvent(msgspec.Struct, frozen=True, kw_only=True):
    """Payload of ``order.placed``, ``order.rejected`` and ``order.cancelled``."""

    order_id: str
    customer: str
    total: Decimal | None = None
    currency: str = ""
    reason: str = ""


class Orders(Module):
    """Turns a request into a priced order backed by reservations, or into a clean refusal."""

    name = "orders"
    version = "1.0.0"
    requires = ("pricing>=1.0,<2", "inventory>=1.0,<2")

    class Config(BaseModel):
        """Limits, the currency shown on orders, and how many orders memory holds."""

        currency: str = Field(default="EUR", min_length=3, max_length=3)
        max_lines: int = Field(default=MAX_LINES, gt=0, le=MAX_LINES)
        keep: int = Field(default=10_000, gt=0)

    config: Config

    async def on_start(self) -> None:
        """Start with no orders: memory only, the newest ``keep`` of them (a bound, not a leak)."""
        self._orders: dict[str, Order] = {}

    @route.post("/orders", status_code=201)
    @rpc
    async def place_order(self, customer: Customer, lines: OrderLines) -> Order:
        """Price every line, then reserve every line; on any failure release what was reserved.

        Emits ``order.placed`` on success and ``order.rejected`` (with the reason) on failure.

        Raises:
            ValidationError: no lines, or more than ``max_lines`` (the schema says 1 to
                ``MAX_LINES``; config may lower the ceiling).
            NotFoundError: a SKU has no price or no stock record.
            OutOfStockError: a line cannot be reserved (nothing stays reserved).
        """
        if not 0 < len(lines) <= self.config.max_lines:
            message = f"an order needs 1 to {self.config.max_lines} lines, got {len(lines)}"
            raise ValidationError(message, errors=[{"field": "lines", "message": message}])
        order_id = uuid.uuid4().hex[:12]
        reserved: list[Reservation] = []
        try:
            # Price everything first: it has no side effects, so most failures cost nothing.
            quotes = [
                convert(await self.call("pricing.quote", sku=line.sku, qty=line.qty), Quote)
                for line in lines
            ]
            for line in lines:
                reservation = await self.call("inventory.reserve", sku=line.sku, qty=line.qty)
                reserved.append(convert(reservation, Reservation))
        except OrganelleError as exc:
            await self._release(reserved)
            await self.emit(
                "order.rejected", OrderEvent(order_id=order_id, customer=customer, reason=str(exc))
            )
            raise
        order = Order(
            id=order_id,
            customer=customer,
            lines=quotes,
            reservations=[r.id for r in reserved],
            total=sum((q.total for q in quotes), Decimal(0)),
            currency=self.config.currency,
        )
        self._orders[order.id] = order
        if len(self._orders) > self.config.keep:  # dicts keep insertion order: oldest first
            del self._orders[next(iter(self._orders))]
        await self.emit("order.placed", self._event(order))
        return order

    @route.get("/orders/{order_id}")
    @rpc
    async def get_order(self, order_id: str) -> Order:
        """The order with this id.

        Raises:
            NotFoundError: no such order.
        """
        order = self._orders.get(order_id)
        if order is None:
            raise NotFoundError(f"no order {order_id!r}", details={"order_id": order_id})
        return order

    @route.post("/orders/{order_id}/cancel")
    @rpc
    async def cancel_order(self, order_id: str) -> Order:
        """Cancel a placed order and give its stock back; cancelling twice changes nothing."""
        order = await self.get_order(order_id)
        if order.status is OrderStatus.CANCELLED:
            return order
        await self._release_ids(order.reservations)
        order = msgspec.structs.replace(order, status=OrderStatus.CANCELLED)
        self._orders[order_id] = order
        await self.emit("order.cancelled", self._event(order))
        return order

    def _event(self, order: Order) -> OrderEvent:
        return OrderEvent(
            order_id=order.id, customer=order.customer, total=order.total, currency=order.currency
        )

    async def _release(self, reserved: list[Reservation]) -> None:
        await self._release_ids([r.id for r in reserved])

    async def _release_ids(self, ids: list[str]) -> None:
        for reservation_id in ids:
            try:
                await self.call("inventory.release", reservation_id=reservation_id)
            except OrganelleError:
                # The order fails either way; a leaked reservation is logged, not hidden.
                self.log.exception("could not release reservation %s", reservation_id)
