"""The shop example split over three `organelle run` processes, joined by one config line."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from shop.orders import Order

from organelle import Kernel
from organelle.testing import eventually
from organelle.testing.servers import NatsServer
from tests.cli.proc import spawn

from .conftest import cluster_sets

APP = "examples/shop/app.toml"


@pytest.fixture(scope="module")
def nats_server() -> Iterator[NatsServer]:
    with NatsServer() as server:
        yield server


async def test_orders_flow_across_three_processes(nats_server: NatsServer, prefix: str) -> None:
    sets = cluster_sets(nats_server.url, prefix)
    async with (
        spawn("run", APP, "--only", "pricing,inventory", *sets) as stock,
        spawn("run", APP, "--only", "orders,notifications", *sets) as orders,
        spawn("run", APP, "--only", "demo", *sets, "--set", "modules.demo.interval_s=0.2") as demo,
    ):
        # The demo's orders go demo -> orders -> pricing + inventory, three processes.
        await demo.wait_for(r"order \w+ placed, total", timeout_s=30)
        await demo.wait_for(r"order \w+ placed, total", timeout_s=10)
        config: dict[str, Any] = {
            "kernel": {
                "transport": nats_server.url,
                "transport_options": {"prefix": prefix, "heartbeat_s": 0.2},
            }
        }
        async with Kernel([], config) as client:
            await client.wait_for("orders", 10)
            before = await client.call("inventory.stock", sku="pear")
            order = await client.call(
                "orders.place_order", customer="zoe", lines=[{"sku": "pear", "qty": 2}]
            )
            # The shop's classes are imported here, so the result is rebuilt as an Order.
            assert isinstance(order, Order)
            assert order.customer == "zoe"
            assert order.total > Decimal(0)
            assert await client.call("orders.get_order", order_id=order.id) == order
            assert await client.call("inventory.stock", sku="pear") <= before - 2
            # order.placed crossed from the orders process to the notifications handler.
            expected = f"order {order.id} placed for zoe"

            async def notified() -> None:
                sent = await client.call("notifications.list_notifications", limit=200)
                assert any(n["message"].startswith(expected) for n in sent), sent

            await eventually(notified, timeout_s=4, interval_s=0.02)
        for child in (stock, orders, demo):
            assert child.proc.returncode is None, child.output
