"""The charts' samples and the topology view, read through the API of a running gateway."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import httpx
import pytest

from organelle import Kernel, Module, consume
from organelle.dashboard._history import History
from organelle.testing import eventually
from tests.dashboard.apps import API, Audit, Calc, Mail, serve

pytestmark = pytest.mark.timeout(30)
FAST = {"enabled": True, "refresh_s": 0.25, "history": 10}


async def view(client: httpx.AsyncClient, path: str) -> Any:
    r = await client.get(f"{API}/{path}")
    assert r.status_code == 200, r.text
    return r.json()


async def test_samples_show_the_rate_and_latency_of_the_calls_between_them() -> None:
    async with serve(Calc, dashboard=FAST) as (k, client):
        for i in range(50):
            assert await k.call("calc.add", a=i, b=1) == i + 1

        async def busy() -> dict[str, Any]:
            samples = (await view(client, "history"))["samples"]
            hit = [s for s in samples if s["rpc_rate"]]
            assert hit, samples
            return dict(hit[0])

        point = await eventually(busy, timeout_s=5)
        history = await view(client, "history")
    assert (history["period_s"], history["size"]) == (0.25, 10)
    assert point["rpc_rate"] > 0
    assert point["error_rate"] == 0
    assert point["p50_ms"] is not None
    assert point["p99_ms"] >= point["p50_ms"]
    assert point["queue_depth"] is None  # no job queue here: a gap, not a zero
    assert point["stream_lag"] is None
    first = history["samples"][0]
    assert first["rpc_rate"] is None  # no previous sample to take a difference from


async def test_the_ring_keeps_only_the_newest_samples() -> None:
    async with serve(Calc, dashboard=FAST) as (_, client):

        async def full() -> list[dict[str, Any]]:
            samples: list[dict[str, Any]] = (await view(client, "history"))["samples"]
            assert len(samples) == 10
            return samples

        before = await eventually(full, timeout_s=10, interval_s=0.1)
        after = await eventually(full, timeout_s=10, interval_s=0.1)
        while after[-1]["t"] == before[-1]["t"]:
            after = await full()
    assert after[0]["t"] > before[0]["t"]


async def test_queue_depth_counts_due_jobs() -> None:
    async with serve(Mail, dashboard=FAST, jobs="memory://", job_worker=False) as (k, _):
        for i in range(3):
            await k.enqueue("mail.send", to=f"u{i}@example.com")
        history = History(k, period_s=1, size=5)
        sample = await history.sample()
    assert sample.queue_depth == 3


class Slow(Module):
    """Consumes ``ticks`` but holds each record until the test lets go: its group falls behind."""

    name = "slow"
    release: ClassVar[asyncio.Event | None] = None

    @consume("ticks")
    async def tick(self, record: dict[str, int]) -> None:
        assert Slow.release is not None
        await asyncio.wait_for(Slow.release.wait(), timeout=20)


async def test_stream_lag_shows_a_group_that_falls_behind() -> None:
    Slow.release = asyncio.Event()
    async with serve(Slow, dashboard=FAST, streams="memory://") as (k, client):
        try:
            for n in range(5):
                await k.append("ticks", {"n": n})

            async def behind() -> dict[str, Any]:
                samples = (await view(client, "history"))["samples"]
                hit = [s for s in samples if s["stream_lag"]]
                assert hit, samples
                return dict(hit[-1])

            point = await eventually(behind, timeout_s=10, interval_s=0.1)
            # the record in the handler is not committed yet: all five are behind
            assert 1 <= point["stream_lag"] <= 5
        finally:
            Slow.release.set()
        await k.drain_streams(timeout_s=10)

        async def caught_up() -> None:
            samples = (await view(client, "history"))["samples"]
            assert samples[-1]["t"] > point["t"], samples
            assert samples[-1]["stream_lag"] == 0, samples

        await eventually(caught_up, timeout_s=10, interval_s=0.1)


async def test_a_stopped_gateway_stops_sampling() -> None:
    async with serve(Calc, dashboard=FAST) as (k, client):
        await eventually(lambda: view(client, "history"), timeout_s=5)
    assert not k.running
    # the sampler's task was cancelled with the gateway: the loop holds no task of it
    names = {t.get_name() for t in asyncio.all_tasks()}
    assert "organelle-dashboard-history" not in names


async def test_topology_has_the_dependency_edges_and_this_node() -> None:
    async with serve(Calc, Audit, dashboard=FAST) as (k, client):
        topo = await view(client, "topology")
        assert isinstance(k, Kernel)
    modules = {m["name"]: m for m in topo["modules"]}
    assert {"calc", "audit", "gateway"} <= set(modules)
    assert modules["calc"]["state"] == "active"
    assert modules["calc"]["nodes"] == [topo["this"]]
    assert {"from": "audit", "to": "calc", "optional": False} in topo["edges"]
    (node,) = topo["nodes"]
    assert (node["node"], node["local"], node["alive"]) == (topo["this"], True, True)
    assert {"audit", "calc"} <= set(node["modules"])
