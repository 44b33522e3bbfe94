"""Streams on the dashboard: layout, group positions and lag, member counters, dead letters."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from organelle import Kernel, Module, consume
from organelle.dashboard import _streams
from organelle.dashboard._kernel import KernelViews
from tests.dashboard.apps import API, ON, Calc, serve
from tests.dashboard.test_http import GATEWAY, GUARDED
from tests.gateway.apps import bearer, rs256

pytestmark = pytest.mark.timeout(30)


class Ledger(Module):
    """Books orders; a record marked bad fails once and is dead-lettered at once."""

    name = "ledger"

    @consume("orders", max_attempts=1)
    async def book(self, order: dict[str, Any]) -> None:
        if order.get("bad"):
            raise ValueError(f"cannot book {order['id']}")


def streams(tmp_path: Path) -> dict[str, Any]:
    return {
        "streams": f"sqlite:///{tmp_path}/s.db",
        "stream_specs": {"orders": {"partitions": 2}},
    }


async def view(client: httpx.AsyncClient, name: str) -> Any:
    r = await client.get(f"{API}/{name}")
    assert r.status_code == 200, r.text
    return r.json()


async def fill(kernel: Kernel, *bad: int, count: int = 8) -> set[int]:
    """Append ``count`` orders (those numbered in ``bad`` fail), wait until they are consumed."""
    placed = {
        (await kernel.append("orders", {"id": f"o{n}", "bad": n in bad}, key=f"o{n}"))[0]
        for n in range(count)
    }
    await kernel.drain_streams(timeout_s=10)
    return placed


async def test_partitions_groups_counters_and_dead_letters(tmp_path: Path) -> None:
    async with serve(Ledger, dashboard=ON, **streams(tmp_path)) as (k, client):
        assert await fill(k, 5) == {0, 1}  # the keys reach both partitions
        await k.streams.seek("replay", "orders", "earliest")  # a group with no member here
        answer = await view(client, "streams")
    assert answer["enabled"] is True
    (orders,) = answer["streams"]
    assert (orders["stream"], orders["error"]) == ("orders", None)
    assert orders["spec"] == {"partitions": 2, "max_age_s": None, "max_records": None}
    parts = orders["partitions"]
    assert [p["partition"] for p in parts] == [0, 1]
    assert sum(p["last"] - p["first"] + 1 for p in parts) == 8  # SQLite: contiguous offsets
    ledger, replay = orders["groups"]
    assert (ledger["group"], ledger["lag"]) == ("ledger", 0)
    assert [(q["partition"], q["next_offset"], q["lag"]) for q in ledger["positions"]] == [
        (p["partition"], p["last"] + 1, 0) for p in parts
    ]
    assert all(q["owner"] for q in ledger["positions"])
    assert ledger["dead_letters"] == {"count": 1, "more": False}
    (member,) = ledger["members"]
    assert (member["module"], member["handler"]) == ("ledger", "book")
    counters = [member[c] for c in ("done", "failed", "dead", "lost", "in_flight")]
    assert counters == [7, 1, 1, 0, 0]
    assert "cannot book o5" in member["last_error"]["error"]
    assert member["last_error"]["attempt"] == 1
    # Another group of the stream is shown with its lag, but no members on this node.
    assert (replay["group"], replay["lag"], replay["members"]) == ("replay", 8, [])
    assert replay["dead_letters"] == {"count": 0, "more": False}


async def test_dead_letters_stop_counting_at_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_streams, "DEAD_CAP", 2)
    async with serve(Ledger, dashboard=ON, **streams(tmp_path)) as (k, client):
        await fill(k, 1, 2, 3)
        (orders,) = (await view(client, "streams"))["streams"]
    assert orders["groups"][0]["dead_letters"] == {"count": 2, "more": True}


async def test_a_log_that_cannot_be_read_is_shown_on_the_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(stream: str) -> Any:
        raise ConnectionError(f"{stream}: log away")

    async with serve(Ledger, dashboard=ON, **streams(tmp_path)) as (k, client):
        await fill(k, count=2)
        monkeypatch.setattr(k.streams, "info", broken)
        answer = await view(client, "streams")
    (orders,) = answer["streams"]
    assert orders["error"] == "the stream log could not be read: ConnectionError: orders: log away"
    assert (orders["spec"], orders["partitions"]) == (None, [])
    (group,) = orders["groups"]  # this node's counters need no read
    assert (group["group"], group["lag"], group["dead_letters"]) == ("ledger", None, None)
    assert group["members"][0]["done"] == 2


async def test_a_node_without_a_stream_log_says_so() -> None:
    async with serve(Calc, dashboard=ON) as (_, client):
        assert await view(client, "streams") == {"enabled": False, "streams": []}


async def test_a_log_without_local_members_lists_no_streams(tmp_path: Path) -> None:
    async with serve(Calc, dashboard=ON, **streams(tmp_path)) as (k, client):
        await k.append("orders", {"id": "o1"})  # the stream exists, but nothing here reads it
        assert await view(client, "streams") == {"enabled": True, "streams": []}


async def test_the_streams_view_needs_a_dashboard_role(tmp_path: Path) -> None:
    async with serve(Ledger, dashboard=GUARDED, gateway=GATEWAY, **streams(tmp_path)) as (_, c):
        r = await c.get(f"{API}/streams")
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] == "organelle.unauthenticated"
        r = await c.get(f"{API}/streams", headers=bearer(rs256(roles=["reader"])))
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "organelle.forbidden"
        r = await c.get(f"{API}/streams", headers=bearer(rs256(roles=["ops"])))
        assert r.status_code == 200, r.text
        assert [s["stream"] for s in r.json()["streams"]] == ["orders"]
        index = (await c.get(API, headers=bearer(rs256(roles=["ops"])))).json()
    assert index["views"]["streams"] == f"{API}/streams"


async def test_uptime_counts_from_the_end_of_kernel_start() -> None:
    async with serve(Calc, dashboard=ON) as (k, client):
        overview = await view(client, "overview")
        (me,) = (await view(client, "nodes"))["nodes"]
        assert k.started_at is not None
        assert overview["started_at"] == me["started"] == k.started_at
    assert 0 <= overview["uptime_s"] <= overview["now"] - overview["started_at"] + 0.001
    assert overview["now"] <= time.time()


def test_before_the_kernel_started_there_is_no_uptime() -> None:
    overview = KernelViews(Kernel([Calc]), refresh_s=1.0).overview()
    assert (overview.started_at, overview.uptime_s, overview.state) == (None, None, "stopped")
