"""HTTP routes are a binding kind: they follow add, remove and reload at run time.

The gateway adds its ``HttpRoutes`` binder to the kernel; a module added
later is served over HTTP once active, a removed one answers 404, a reload
serves the new class's routes, and a clash fails the change that brought it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from organelle import DefinitionError, Kernel, LifecycleError, Module, rpc
from organelle.gateway import Gateway, route
from organelle.gateway._live import HttpRoutes


class Prices(Module):
    name = "prices"
    version = "1.0.0"

    @route.get("/prices/{sku}")
    async def price(self, sku: str) -> dict[str, Any]:
        return {"sku": sku, "price": 10}

    @rpc
    async def bump(self, by: int) -> int:
        return by + 1


class PricesV2(Module):
    """The same module, reloaded with a route moved and one added."""

    name = "prices"
    version = "2.0.0"

    @route.get("/v2/prices/{sku}")
    async def price(self, sku: str) -> dict[str, Any]:
        return {"sku": sku, "price": 20}

    @route.get("/prices-count")
    async def count(self) -> int:
        return 7


class Clashing(Module):
    """Claims a path the gateway already serves for ``prices``."""

    name = "clashing"
    version = "1.0.0"

    @route.get("/prices/{item}")
    async def other(self, item: str) -> str:
        return item


class Stock(Module):
    name = "stock"
    version = "1.0.0"

    @route.get("/stock/{sku}")
    async def level(self, sku: str) -> int:
        return len(sku)


CONFIG = {"modules": {"gateway": {"expose": ["prices.bump"], "docs": True}}}


@asynccontextmanager
async def serving(*modules: Any) -> AsyncIterator[tuple[Kernel, Gateway, httpx.AsyncClient]]:
    gateway = Gateway(serve=False)
    async with Kernel([*modules, gateway], CONFIG) as kernel:
        transport = httpx.ASGITransport(app=gateway.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield kernel, gateway, http


def paths(doc: dict[str, Any]) -> set[str]:
    return set(doc["paths"])


async def test_a_module_added_at_run_time_is_served_once_active() -> None:
    async with serving(Stock) as (kernel, _, http):
        assert (await http.get("/prices/a")).status_code == 404
        assert "/prices/{sku}" not in paths((await http.get("/openapi.json")).json())
        await kernel.add_module(Prices)
        assert (await http.get("/prices/a")).json() == {"sku": "a", "price": 10}
        assert (await http.post("/api/prices/bump", json={"by": 1})).json() == 2
        assert "/prices/{sku}" in paths((await http.get("/openapi.json")).json())
        assert (await http.get("/stock/abc")).json() == 3  # the others are untouched


async def test_a_removed_module_answers_404_and_leaves_the_docs() -> None:
    async with serving(Prices, Stock) as (kernel, _, http):
        assert (await http.get("/prices/a")).status_code == 200
        await kernel.remove_module("prices")
        gone = await http.get("/prices/a")
        assert gone.status_code == 404
        assert gone.json()["error"]["code"] == "organelle.not_found"
        assert (await http.post("/api/prices/bump", json={"by": 1})).status_code == 404
        assert "/prices/{sku}" not in paths((await http.get("/openapi.json")).json())
        assert (await http.get("/stock/ab")).json() == 2
        await kernel.add_module(Prices)  # and back
        assert (await http.get("/prices/b")).json()["sku"] == "b"


async def test_a_reload_serves_the_new_class_routes() -> None:
    async with serving(Prices) as (kernel, _, http):
        assert (await http.get("/prices/a")).json()["price"] == 10
        await kernel.reload_module("prices", PricesV2)
        assert (await http.get("/prices/a")).status_code == 404
        assert (await http.get("/v2/prices/a")).json()["price"] == 20
        assert (await http.get("/prices-count")).json() == 7
        assert (await http.post("/api/prices/bump", json={"by": 1})).status_code == 404
        doc = paths((await http.get("/openapi.json")).json())
        assert {"/v2/prices/{sku}", "/prices-count"} <= doc
        assert "/prices/{sku}" not in doc


async def test_a_clash_fails_the_add_and_leaves_the_table_as_it_was() -> None:
    async with serving(Prices) as (kernel, _, http):
        with pytest.raises(DefinitionError, match=r"/prices/\{item\}.*'prices'"):
            await kernel.add_module(Clashing)
        assert "clashing" not in kernel.modules()
        assert (await http.get("/prices/a")).json()["price"] == 10
        await kernel.remove_module("prices")
        await kernel.add_module(Clashing)  # the path is free now
        assert (await http.get("/prices/x")).json() == "x"


async def test_a_module_stopping_with_the_kernel_leaves_the_gateway_first() -> None:
    gateway = Gateway(serve=False)
    kernel = Kernel([Prices, gateway], CONFIG)
    async with kernel:
        routes = gateway._routes
        assert isinstance(routes, HttpRoutes)
        assert routes in kernel._life.binders
        assert [e.target for e in routes.entries()] == ["prices.bump", "prices.price"]
    assert gateway._routes is None
    assert routes not in kernel._life.binders  # the gateway's on_stop took its kind away
    assert not any(routes in slot.bound for slot in kernel._slots.values())


async def test_removing_the_gateway_unbinds_its_routes_from_every_module() -> None:
    async with serving(Prices, Stock) as (kernel, gateway, _):
        routes = gateway._routes
        await kernel.remove_module("gateway")
        assert routes not in kernel._life.binders
        assert not any(routes in slot.bound for slot in kernel._slots.values())
        await kernel.add_module(Clashing)  # no table left to clash with
        gateway2 = Gateway(serve=False)
        with pytest.raises(LifecycleError, match="already served"):  # found at its start
            await kernel.add_module(gateway2)
        assert "gateway" not in kernel.modules()


async def test_a_burst_of_changes_costs_one_rebuild() -> None:
    built: list[int] = []
    async with serving(Prices) as (kernel, gateway, http):
        app = gateway.app
        inner = app._build

        def counting() -> Any:
            built.append(1)
            return inner()

        app._build = counting
        await kernel.add_module(Stock)
        await kernel.remove_module("stock")
        await kernel.add_module(Stock)
        assert built == []  # nothing rebuilt until a request needs it
        assert (await http.get("/stock/xy")).json() == 2
        assert (await http.get("/prices/a")).status_code == 200
        assert built == [1]


class LocalLedger(Module):
    """Runs here under the name of the remote ``ledger``, with a route of its own."""

    name = "ledger"
    version = "1.0.0"

    @route.get("/local-ledger")
    async def here(self) -> str:
        return "here"


async def test_a_local_module_shadows_its_route_modules_entry_while_bound() -> None:
    gateway = Gateway(serve=False)
    config = {"modules": {"gateway": {"route_modules": ["tests.gateway.remote:Ledger"]}}}
    async with Kernel([gateway], config) as kernel:
        routes = gateway._routes
        remote = {e.path for e in routes.entries()}
        assert "/ledger/{account}" in remote
        await kernel.add_module(LocalLedger)
        assert {e.path for e in routes.entries()} == {"/local-ledger"}
        await kernel.remove_module("ledger")
        assert {e.path for e in routes.entries()} == remote  # served by the other node again
