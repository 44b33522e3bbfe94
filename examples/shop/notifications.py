"""Notifications: turns order and stock events into messages a person would read."""

from __future__ import annotations

import time
from collections import deque

import msgspec
from pydantic import BaseModel, Field

from organelle import Module, context, on, rpc
from organelle.gateway import route
from shop.inventory import LowStock
from shop.orders import OrderEvent


class Notification(msgspec.Struct, frozen=True, kw_only=True):
    """One message sent (here: kept and logged) because of an event."""

    topic: str
    message: str
    at: float


class Notifications(Module):
    """Listens to orders and stock; a real one would send mail, this one keeps a log."""

    name = "notifications"
    version = "1.0.0"

    class Config(BaseModel):
        """How many notifications to keep in memory (oldest are dropped first)."""

        keep: int = Field(default=100, gt=0)

    config: Config

    async def on_start(self) -> None:
        """Start with an empty, bounded history so a long-running app never grows without end."""
        self._sent: deque[Notification] = deque(maxlen=self.config.keep)

    @on("order.*")
    async def on_order(self, event: OrderEvent) -> None:
        """Tell the customer what happened to their order."""
        topic = context().topic or "order"
        action = topic.rpartition(".")[2]
        text = f"order {event.order_id} {action} for {event.customer}"
        if event.total is not None:
            text += f": {event.total} {event.currency}"
        if event.reason:
            text += f" ({event.reason})"
        self._send(topic, text)

    @on("inventory.low_stock")
    async def on_low_stock(self, event: LowStock) -> None:
        """Tell the buyer to reorder."""
        self._send(
            "inventory.low_stock",
            f"reorder {event.sku}: {event.available} left (threshold {event.threshold})",
        )

    @route.get("/notifications")
    @rpc
    async def list_notifications(self, limit: int = 50) -> list[Notification]:
        """The latest ``limit`` notifications, oldest first."""
        return list(self._sent)[-limit:] if limit > 0 else []

    def _send(self, topic: str, message: str) -> None:
        self._sent.append(Notification(topic=topic, message=message, at=time.time()))
        self.log.info("%s", message)
