"""Sagas on the dashboard: the unfinished ones with their steps, state and errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from organelle import Module, rpc
from organelle.config.secrets import MASK
from organelle.sagas import Saga, Step
from tests.dashboard.apps import API, ON, Calc, serve

pytestmark = pytest.mark.timeout(30)


class Pay(Module):
    name = "pay"

    @rpc
    async def charge(self, password: str) -> None:
        return None

    @rpc
    async def refund(self, password: str) -> None:
        raise RuntimeError("bank down")

    @rpc
    async def ship(self, password: str) -> None:
        raise RuntimeError("no truck")

    checkout = Saga(
        "checkout",
        steps=[
            Step("charge", action="pay.charge", compensate="pay.refund", compensate_attempts=1),
            Step("ship", action="pay.ship", max_attempts=1),
        ],
    )


async def view(client: httpx.AsyncClient) -> Any:
    r = await client.get(f"{API}/sagas")
    assert r.status_code == 200, r.text
    return r.json()


async def test_a_stuck_saga_is_listed_with_its_steps_and_masked_params(tmp_path: Path) -> None:
    jobs, storage = f"sqlite:///{tmp_path}/j.db", f"sqlite:///{tmp_path}/s.db"
    async with serve(Pay, dashboard=ON, jobs=jobs, storage=storage) as (k, client):
        assert (await view(client))["sagas"] == []
        sid = await k.sagas.start("pay.checkout", {"password": "pw-1"})
        await k.drain_jobs(timeout_s=10)
        shown = await view(client)
    assert shown["enabled"] is True
    assert shown["declared"] == ["pay.checkout"]
    (saga,) = shown["sagas"]
    assert (saga["id"], saga["state"]) == (sid, "stuck")
    assert "bank down" in saga["error"]
    assert saga["params"]["password"] == MASK
    assert [(s["name"], s["state"]) for s in saga["steps"]] == [
        ("charge", "done"),
        ("ship", "failed"),
    ]
    assert saga["steps"][0]["error"].startswith("compensation: ")  # its refund failed
    assert "bank down" in saga["steps"][0]["error"]
    assert not saga["steps"][1]["error"].startswith("compensation")  # the action's own
    assert "no truck" in saga["steps"][1]["error"]


async def test_a_node_without_sagas_says_so() -> None:
    async with serve(Calc, dashboard=ON) as (_, client):
        shown = await view(client)
    assert (shown["enabled"], shown["sagas"]) == (False, [])
