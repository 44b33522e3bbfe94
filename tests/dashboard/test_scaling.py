"""The Scaling view: the controller's latest decisions, asked of it over RPC."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from organelle.scaling import MemoryScaler, ScalingController, ScalingRule, Signals, Target
from tests.dashboard.apps import API, ON, Calc, serve

pytestmark = pytest.mark.timeout(30)


class Fixed:
    """A source answering the same load every time."""

    def __init__(self, queue_depth: float) -> None:
        self.queue_depth = queue_depth

    async def sample(self, at: float) -> Signals:
        return Signals(at=at, queue_depth=self.queue_depth)


async def view(client: httpx.AsyncClient) -> Any:
    r = await client.get(f"{API}/scaling")
    assert r.status_code == 200, r.text
    return r.json()


async def test_decisions_are_listed_newest_first() -> None:
    scaler = MemoryScaler({"workers": 1})
    controller = ScalingController(scaler=scaler)
    async with serve(Calc, controller, dashboard=ON) as (_, client):
        assert await view(client) == {"enabled": True, "decisions": [], "error": None}
        controller.targets["workers"] = Target(
            "workers",
            [ScalingRule(metric="queue_depth", up_above=10, down_below=2)],
            source=Fixed(35),
        )
        await controller.tick(at=1000.0)
        await controller.tick(at=1001.0)  # within the cooldown: held
        shown = await view(client)
    newest, first = shown["decisions"]
    assert (first["at"], first["current"], first["desired"], first["changed"]) == (
        1000.0,
        1,
        4,
        True,
    )
    assert (newest["at"], newest["current"], newest["desired"], newest["changed"]) == (
        1001.0,
        4,
        4,
        False,
    )
    assert newest["reason"] == "within thresholds"
    assert first["signals"] == {"queue_depth": 35.0}


async def test_without_a_controller_the_view_says_so() -> None:
    async with serve(Calc, dashboard=ON) as (_, client):
        assert await view(client) == {"enabled": False, "decisions": [], "error": None}


async def test_the_page_has_the_scaling_section() -> None:
    async with serve(Calc, dashboard=ON) as (_, client):
        page = (await client.get("/_dashboard")).text
        script = (await client.get("/_dashboard/dashboard.js")).text
    assert '<section id="scaling">' in page
    assert '<div id="scaling-table">' in page
    assert '"scaling",' in script.split("const VIEWS")[1].split("];")[0]
