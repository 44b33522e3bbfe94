"""Nodes: this one alone in process; every node of the cluster over a real NATS server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from organelle import Kernel
from organelle.gateway import Gateway
from organelle.testing import eventually
from organelle.testing.servers import NatsServer, shared_nats
from tests.dashboard.apps import API, ON, Audit, Calc, config, serve

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def nats_server() -> Iterator[NatsServer]:
    with shared_nats() as server:
        yield server


def cluster(url: str, prefix: str, node: str, **more: Any) -> dict[str, Any]:
    options = {"prefix": prefix, "heartbeat_s": 0.2, "registry_ttl_s": 1.0}
    return {"kernel": {"transport": url, "transport_options": options, "node": node, **more}}


async def test_without_a_transport_only_this_node_is_listed() -> None:
    async with serve(Calc, dashboard=ON, node="solo") as (_, client):
        nodes = (await client.get(f"{API}/nodes")).json()
    assert (nodes["clustered"], nodes["this"], nodes["error"]) == (False, "solo", None)
    (me,) = nodes["nodes"]
    assert (me["node"], me["local"], me["alive"]) == ("solo", True, True)
    assert me["modules"]["calc"] == {"version": "2.1.0", "methods": ["add", "lookup"], "events": []}
    assert set(me["modules"]) == {"calc", "gateway"}


async def test_every_node_of_the_cluster_is_listed(nats_server: NatsServer) -> None:
    prefix = f"d{uuid.uuid4().hex[:10]}"
    gw = Gateway()
    board = config(ON)
    board["kernel"] = {
        **cluster(nats_server.url, prefix, "board")["kernel"],
        "storage": "memory://",
    }
    async with (
        Kernel([Calc], cluster(nats_server.url, prefix, "worker-1")),
        Kernel([Audit, gw], board) as kernel,
        httpx.AsyncClient(base_url=gw.url, timeout=10) as client,
    ):

        async def both_listed() -> dict[str, Any]:  # announcements land on the heartbeat
            nodes: dict[str, Any] = (await client.get(f"{API}/nodes")).json()
            listed = {n["node"]: n for n in nodes["nodes"]}
            assert set(listed) == {"board", "worker-1"}
            assert set(listed["board"]["modules"]) == {"audit", "gateway"}
            return nodes

        nodes = await eventually(both_listed, interval_s=0.05)
        overview = (await client.get(f"{API}/overview")).json()
        await kernel.call("calc.add", a=1, b=2)  # served on the other node
        rpc = (await client.get(f"{API}/rpc")).json()
    assert (nodes["clustered"], nodes["this"], nodes["error"]) == (True, "board", None)
    listed = {n["node"]: n for n in nodes["nodes"]}
    assert set(listed) == {"board", "worker-1"}
    assert listed["board"]["local"] is True
    assert listed["worker-1"]["local"] is False
    assert all(n["alive"] for n in listed.values())
    assert listed["worker-1"]["modules"]["calc"]["version"] == "2.1.0"
    assert sorted(listed["worker-1"]["modules"]["calc"]["methods"]) == ["add", "lookup"]
    assert set(listed["board"]["modules"]) == {"audit", "gateway"}
    assert overview["node"] == "board"
    assert overview["transport"] == nats_server.url
    # Only what this node serves is counted here; calc runs on the other node.
    assert [m["target"] for m in rpc["methods"]] == []


async def test_a_registry_that_cannot_be_read_does_not_blank_the_page() -> None:
    class Broken:
        node = "lonely"
        solo = False

        async def nodes(self) -> list[Any]:
            await asyncio.sleep(0)
            raise ConnectionError("registry bucket gone")

    async with serve(Calc, dashboard=ON) as (kernel, client):
        real, kernel._router.transport = kernel.transport, Broken()  # type: ignore[assignment]
        try:
            nodes = (await client.get(f"{API}/nodes")).json()
        finally:
            kernel._router.transport = real
    assert nodes["clustered"] is True
    assert "registry bucket gone" in nodes["error"]
    assert [n["node"] for n in nodes["nodes"]] == ["lonely"]
