"""The shop example end to end: every effect of an order, and the failure paths."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from shop.demo import Demo
from shop.inventory import Inventory, LowStock, OutOfStockError
from shop.notifications import Notification, Notifications
from shop.orders import Order, OrderEvent, Orders, OrderStatus
from shop.pricing import Pricing, Quote

from organelle import Kernel, ModuleState, NotFoundError, ValidationError
from organelle.testing import capture, eventually, running

APP = Path(__file__).resolve().parents[2] / "examples" / "shop" / "app.toml"
CONFIG: dict[str, Any] = {
    "modules": {
        "pricing": {
            "tax_rate": 0.2,
            "bulk_qty": 10,
            "bulk_discount": 0.1,
            "prices": {"apple": 0.45, "coffee": 7.9},
        },
        "inventory": {"low_stock": 3, "stock": {"apple": 20, "coffee": 5}},
        "orders": {"currency": "EUR"},
    }
}


@pytest.fixture
async def shop() -> AsyncIterator[Kernel]:
    async with running(Pricing, Inventory, Orders, Notifications, config=CONFIG) as kernel:
        yield kernel


async def notifications(kernel: Kernel) -> list[Notification]:
    await kernel.drain()
    result: list[Notification] = await kernel.call("notifications.list_notifications")
    return result


async def test_quote_applies_discount_and_tax(shop: Kernel) -> None:
    small: Quote = await shop.call("pricing.quote", sku="apple", qty=2)
    assert (small.subtotal, small.discount, small.tax, small.total) == (
        Decimal("0.90"),
        Decimal(0),
        Decimal("0.18"),
        Decimal("1.08"),
    )
    bulk: Quote = await shop.call("pricing.quote", sku="apple", qty=10)
    assert (bulk.subtotal, bulk.discount, bulk.total) == (
        Decimal("4.50"),
        Decimal("0.45"),
        Decimal("4.86"),
    )
    with pytest.raises(ValidationError):
        await shop.call("pricing.quote", sku="apple", qty=0)


async def test_place_order_has_every_effect(shop: Kernel) -> None:
    events = capture(shop, "order.*")
    order: Order = await shop.call(
        "orders.place_order",
        customer="ada",
        lines=[{"sku": "apple", "qty": 2}, {"sku": "coffee", "qty": 1}],
    )
    assert order.total == Decimal("1.08") + Decimal("9.48")
    assert (order.customer, order.currency, order.status) == ("ada", "EUR", OrderStatus.PLACED)
    assert [q.sku for q in order.lines] == ["apple", "coffee"]
    assert len(order.reservations) == 2
    assert await shop.call("inventory.stock", sku="apple") == 18
    assert await shop.call("inventory.stock", sku="coffee") == 4
    assert await shop.call("orders.get_order", order_id=order.id) == order
    sent = await notifications(shop)
    assert events == [
        (
            "order.placed",
            OrderEvent(order_id=order.id, customer="ada", total=order.total, currency="EUR"),
        )
    ]
    assert [(n.topic, n.message) for n in sent] == [
        ("order.placed", f"order {order.id} placed for ada: 10.56 EUR")
    ]


async def test_low_stock_event_when_crossing_the_threshold(shop: Kernel) -> None:
    low = capture(shop, "inventory.low_stock")
    await shop.call("orders.place_order", customer="ada", lines=[{"sku": "coffee", "qty": 1}])
    await shop.drain()
    assert low == []  # 4 left, threshold 3
    await shop.call("orders.place_order", customer="ada", lines=[{"sku": "coffee", "qty": 1}])
    await shop.call("orders.place_order", customer="ada", lines=[{"sku": "coffee", "qty": 1}])
    sent = await notifications(shop)
    assert low == [("inventory.low_stock", LowStock(sku="coffee", available=3, threshold=3))]
    assert "reorder coffee: 3 left (threshold 3)" in [n.message for n in sent]


async def test_failure_releases_reservations(shop: Kernel) -> None:
    events = capture(shop, "order.*")
    with pytest.raises(OutOfStockError, match="only 5 of 'coffee' left, 6 wanted"):
        await shop.call(
            "orders.place_order",
            customer="grace",
            lines=[{"sku": "apple", "qty": 3}, {"sku": "coffee", "qty": 6}],
        )
    # The apple line had been reserved before coffee failed; it is back on the shelf.
    assert await shop.call("inventory.stock", sku="apple") == 20
    assert await shop.call("inventory.stock", sku="coffee") == 5
    sent = await notifications(shop)
    assert [topic for topic, _ in events] == ["order.rejected"]
    assert sent[-1].topic == "order.rejected"
    assert "only 5 of 'coffee' left" in sent[-1].message


async def test_bad_requests_are_refused_before_any_effect(shop: Kernel) -> None:
    with pytest.raises(NotFoundError, match="no price for sku 'tea'"):
        await shop.call("orders.place_order", customer="ada", lines=[{"sku": "tea", "qty": 1}])
    with pytest.raises(ValidationError, match="lines: Expected `array` of length >= 1"):
        await shop.call("orders.place_order", customer="ada", lines=[])
    with pytest.raises(ValidationError) as info:
        await shop.call("orders.place_order", customer="", lines=[{"sku": "apple", "qty": 0}])
    assert [e["field"] for e in info.value.errors] == ["customer", "lines"]
    assert await shop.call("inventory.stock", sku="apple") == 20


async def test_cancel_gives_stock_back_once(shop: Kernel) -> None:
    order: Order = await shop.call(
        "orders.place_order", customer="linus", lines=[{"sku": "apple", "qty": 5}]
    )
    cancelled: Order = await shop.call("orders.cancel_order", order_id=order.id)
    assert cancelled.status is OrderStatus.CANCELLED
    assert await shop.call("orders.cancel_order", order_id=order.id) == cancelled
    assert await shop.call("inventory.stock", sku="apple") == 20
    with pytest.raises(NotFoundError):
        await shop.call("orders.get_order", order_id="nope")


async def test_demo_places_orders_and_restocks() -> None:
    config = {"modules": {**CONFIG["modules"], "demo": {"interval_s": 60, "skus": ["coffee"]}}}
    async with running(Pricing, Inventory, Orders, Notifications, Demo, config=config) as kernel:
        demo = kernel.module("demo")
        assert isinstance(demo, Demo)
        await eventually(lambda: demo._placed > 0)  # the first order goes out as it starts
        # Order n asks for 1 + n % 3 coffees of the 5 in stock: 1, 2, then 3 does not fit,
        # so the demo restocks instead of failing.
        second, third = await demo.place_one(1), await demo.place_one(2)
        assert isinstance(second, Order)
        assert third is None
        assert await kernel.call("inventory.stock", sku="coffee") == 5 - 1 - 2 + 20
    assert kernel.state("demo") is ModuleState.STOPPED


async def test_app_toml_builds_and_runs() -> None:
    kernel = Kernel.from_config(APP, overrides={"modules": {"demo": {"interval_s": 60}}})
    assert kernel.check() == [["pricing", "inventory", "notifications"], ["orders"], ["demo"]]
    assert {n: i.version for n, i in kernel.modules().items()} == {
        "pricing": "1.2.0",
        "inventory": "1.1.0",
        "orders": "1.0.0",
        "notifications": "1.0.0",
        "demo": "1.0.0",
    }
    async with kernel:
        order: Order = await kernel.call(
            "orders.place_order", customer="ada", lines=[{"sku": "pear", "qty": 1}]
        )
        assert order.total == Decimal("0.72")


async def test_orders_memory_is_bounded_by_keep() -> None:
    config: dict[str, Any] = {
        "modules": {**CONFIG["modules"], "orders": {"currency": "EUR", "keep": 3}}
    }
    async with running(Pricing, Inventory, Orders, Notifications, config=config) as kernel:
        placed: list[Order] = [
            await kernel.call(
                "orders.place_order", customer="ada", lines=[{"sku": "apple", "qty": 1}]
            )
            for _ in range(5)
        ]
        for order in placed[-3:]:  # the newest three are kept
            assert await kernel.call("orders.get_order", order_id=order.id) == order
        for order in placed[:2]:  # the oldest are dropped first
            with pytest.raises(NotFoundError):
                await kernel.call("orders.get_order", order_id=order.id)


async def test_reservations_are_bounded_by_keep() -> None:
    config: dict[str, Any] = {
        "modules": {**CONFIG["modules"], "inventory": {"stock": {"apple": 20}, "keep": 2}}
    }
    async with running(Inventory, config=config) as kernel:
        made = [await kernel.call("inventory.reserve", sku="apple", qty=1) for _ in range(3)]
        assert await kernel.call("inventory.stock", sku="apple") == 17
        assert await kernel.call("inventory.release", reservation_id=made[0].id) is False
        assert await kernel.call("inventory.release", reservation_id=made[2].id) is True
        assert await kernel.call("inventory.stock", sku="apple") == 18
