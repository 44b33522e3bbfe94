"""``GET /asyncapi.json``: beside ``/openapi.json``, under the same rules, following the modules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from organelle import Kernel, Module, on, rpc
from organelle.gateway import Gateway
from tests.contracts.asyncapi_node import assert_valid
from tests.gateway.apps import RBAC, RS256_AUTH, Things

ROOT = Path(__file__).resolve().parents[2]
HTTP_TOML = ROOT / "examples" / "shop" / "http.toml"
SHOP = ["pricing", "inventory", "orders", "notifications", "gateway"]


class Alerts(Module):
    name = "alerts"
    version = "0.3.0"

    @rpc
    async def mute(self, minutes: int = 5) -> bool:
        return minutes > 0

    @on("alert.>")
    async def on_alert(self, event: dict[str, Any]) -> None: ...


@asynccontextmanager
async def client_for(kernel: Kernel) -> AsyncIterator[httpx.AsyncClient]:
    async with kernel:
        gateway = kernel.module("gateway")
        assert isinstance(gateway, Gateway)
        transport = httpx.ASGITransport(app=gateway.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


async def test_the_shop_serves_a_valid_document_over_http() -> None:
    overrides = {
        "kernel": {"storage": "memory://"},
        "modules": {"gateway": {"port": 0, "title": "shop", "version": "3.0.1"}},
    }
    kernel = Kernel.from_config(HTTP_TOML, overrides=overrides, only=SHOP)
    async with kernel:
        gateway = kernel.module("gateway")
        assert isinstance(gateway, Gateway)
        async with httpx.AsyncClient(base_url=gateway.url) as client:
            response = await client.get("/asyncapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    doc = response.json()
    assert doc["info"]["title"] == "shop"
    assert doc["info"]["version"] == "3.0.1"
    assert {"rpc.orders.place_order", "event.order.any", "event.rest"} <= set(doc["channels"])
    assert "event.gateway.relay" in doc["operations"]  # the gateway's own subscription
    assert_valid(doc)


async def test_it_is_public_like_openapi_and_off_with_the_docs() -> None:
    secured = {"auth": RS256_AUTH, "rbac": RBAC, "docs": True}
    kernel = Kernel([Things, Gateway(serve=False)], {"modules": {"gateway": secured}})
    async with client_for(kernel) as http:
        assert (await http.get("/openapi.json")).status_code == 200
        assert (await http.get("/asyncapi.json")).status_code == 200  # no token needed
    kernel = Kernel([Things, Gateway(serve=False)], {"modules": {"gateway": {"docs": False}}})
    async with client_for(kernel) as http:
        assert (await http.get("/openapi.json")).status_code == 404
        assert (await http.get("/asyncapi.json")).status_code == 404


async def test_it_follows_modules_added_and_removed() -> None:
    kernel = Kernel([Things, Gateway(serve=False)])
    async with client_for(kernel) as http:
        first = (await http.get("/asyncapi.json")).json()
        assert "rpc.alerts.mute" not in first["channels"]
        assert "rpc.things.get_thing" in first["channels"]
        await kernel.add_module(Alerts)
        added = (await http.get("/asyncapi.json")).json()
        assert added["channels"]["event.alert.rest"]["address"] == "org.evt.alert.{rest}"
        assert "rpc.alerts.mute" in added["channels"]
        await kernel.remove_module("alerts")
        removed = (await http.get("/asyncapi.json")).json()
        assert "rpc.alerts.mute" not in removed["channels"]


async def test_route_modules_are_described_too() -> None:
    config = {"modules": {"gateway": {"route_modules": ["tests.gateway.test_asyncapi:Alerts"]}}}
    kernel = Kernel([Things, Gateway(serve=False)], config)
    async with client_for(kernel) as http:
        doc = (await http.get("/asyncapi.json")).json()
    assert {"rpc.alerts.mute", "rpc.things.get_thing"} <= set(doc["channels"])
