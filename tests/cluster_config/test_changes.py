"""A cluster config change on three nodes sharing a real store: all apply it, or none keeps it.

Three kernels, each with its own store object on one SQLite file, one NATS KV
bucket or one PostgreSQL database, so nothing reaches a node except through
the store. A good change reaches every node; a change one node cannot
validate is aborted everywhere; a change one node fails to apply is rolled
back on every node; each outcome is reported per node.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from organelle import Kernel
from organelle.cluster_config import ChangeReport
from organelle.errors import ConfigChangeError, ConflictError
from organelle.testing import Captured, capture, eventually
from organelle.testing.servers import NatsServer, PostgresServer
from tests.cluster_config._shop import Shop, ShopConfig

pytestmark = pytest.mark.timeout(60)

Urls = Callable[[], str]


@pytest.fixture(params=["sqlite", "nats", "postgres"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    tag = f"c{uuid.uuid4().hex[:10]}"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cluster.db'}"
    if request.param == "nats":
        nats: NatsServer = request.getfixturevalue("nats_server")
        return f"nats-kv://{nats.url.removeprefix('nats://')}/{tag}"
    postgres: PostgresServer = request.getfixturevalue("postgres_server")
    import asyncpg

    conn = await asyncpg.connect(postgres.dsn)
    try:
        await conn.execute(f"CREATE DATABASE {tag}")  # a fresh database: the default table
    finally:
        await conn.close()
    return postgres.dsn.rsplit("/", 1)[0] + f"/{tag}"


def node_config(url: str, i: int) -> dict[str, Any]:
    return {
        "kernel": {"node": f"n{i}", "storage": url, "cluster_config": True},
        "modules": {"shop": {"limit": 10}},
    }


class Cluster:
    def __init__(self, url: str, stack: AsyncExitStack) -> None:
        self.url = url
        self.stack = stack
        self.kernels: list[Kernel] = []
        self.events: list[Captured] = []

    async def add(self, shop: Shop, config: dict[str, Any] | None = None) -> Kernel:
        kernel = Kernel([shop], config or node_config(self.url, len(self.kernels)))
        self.events.append(capture(kernel, "kernel.config.changed"))
        await kernel.start()
        self.stack.push_async_callback(kernel.stop)
        self.kernels.append(kernel)
        return kernel

    def configs(self) -> list[ShopConfig]:
        return [k.module("shop").config for k in self.kernels]

    def limits(self) -> list[int]:
        return [c.limit for c in self.configs()]


@pytest.fixture
async def cluster(url: str) -> AsyncIterator[Cluster]:
    async with AsyncExitStack() as stack:
        found = Cluster(url, stack)
        for shop in (Shop(), Shop(refuse_limit=50), Shop(fail_region="mars")):
            await found.add(shop)
        admin = found.kernels[0].cluster_config
        await eventually(lambda: _three(admin), timeout_s=5.0)
        yield found


async def _three(admin: Any) -> bool:
    return len(await admin.nodes()) == 3  # every heartbeat seen


def states(report: ChangeReport) -> dict[str, str]:
    return {n.node: n.state for n in report.nodes}


async def test_a_good_change_reaches_every_node(cluster: Cluster) -> None:
    admin = cluster.kernels[1].cluster_config
    report = await admin.propose({"modules": {"shop": {"limit": 20}}}, by="ops")
    assert report.outcome == "committed"
    assert states(report) == {"n0": "applied", "n1": "applied", "n2": "applied"}
    assert cluster.limits() == [20, 20, 20]  # applied before the proposer hears "committed"
    info = await admin.get()
    assert info.layer == {"modules": {"shop": {"limit": 20}}}
    assert info.revision == report.revision
    assert info.by == "ops"

    def audited() -> None:  # every node announced the change it took part in
        for captured in cluster.events:
            assert [(p["id"], p["outcome"], p["state"]) for _, p in captured] == [
                (report.id, "committed", "applied")
            ]

    await eventually(audited, timeout_s=2.0)
    [last] = await admin.history(limit=5)
    assert last == report


async def test_a_change_one_node_refuses_is_aborted_everywhere(cluster: Cluster) -> None:
    admin = cluster.kernels[0].cluster_config
    with pytest.raises(ConfigChangeError, match="n1: rejected") as caught:
        await admin.propose({"modules": {"shop": {"limit": 70}}})
    report = ChangeReport.from_data(caught.value.details["change"])
    assert report.outcome == "aborted"
    assert states(report) == {"n0": "validated", "n1": "rejected", "n2": "validated"}
    [refused] = [n for n in report.nodes if n.node == "n1"]
    assert refused.code == "organelle.lifecycle"
    assert "limit 70 is over 50 on this node" in refused.message
    assert cluster.limits() == [10, 10, 10]
    assert (await admin.get()).revision == 0  # nothing was ever written
    assert [h.outcome for h in await admin.history()] == ["aborted"]


async def test_an_invalid_value_is_rejected_by_every_node(cluster: Cluster) -> None:
    admin = cluster.kernels[0].cluster_config
    report = await admin.propose({"modules": {"shop": {"limit": "many"}}}, check=False)
    assert report.outcome == "aborted"
    assert set(states(report).values()) == {"rejected"}
    assert {n.code for n in report.nodes} == {"organelle.config"}
    assert all("modules.shop.limit" in n.message for n in report.nodes)
    assert cluster.limits() == [10, 10, 10]


async def test_a_change_one_node_fails_to_apply_is_rolled_back_everywhere(
    cluster: Cluster,
) -> None:
    admin = cluster.kernels[0].cluster_config
    first = await admin.propose({"modules": {"shop": {"limit": 30}}}, by="ann")
    with pytest.raises(ConfigChangeError, match="rolled back") as caught:
        await admin.propose({"modules": {"shop": {"region": "mars", "limit": 40}}})
    report = ChangeReport.from_data(caught.value.details["change"])
    assert report.outcome == "rolled_back"
    assert states(report) == {"n0": "rolled_back", "n1": "rolled_back", "n2": "failed"}
    [failed] = [n for n in report.nodes if n.node == "n2"]
    assert "cannot move to mars" in failed.message
    assert [(c.limit, c.region) for c in cluster.configs()] == [(30, "eu")] * 3
    shops: list[Shop] = [k.module("shop") for k in cluster.kernels]  # type: ignore[misc]
    assert shops[0].changes == [(10, 30), (30, 40), (40, 30)]  # applied, then undone
    assert shops[2].changes == [(10, 30)]  # it failed and rolled itself back
    info = await admin.get()
    assert info.layer == {"modules": {"shop": {"limit": 30}}}
    assert (info.change, info.by) == (first.id, "ann")  # the layer back as it was
    assert info.revision == report.revision
    assert [h.outcome for h in await admin.history()] == ["committed", "rolled_back"]

    def audited() -> None:
        seen = [[(p["outcome"], p["state"]) for _, p in captured] for captured in cluster.events]
        assert seen == [
            [("committed", "applied"), ("rolled_back", "rolled_back")],
            [("committed", "applied"), ("rolled_back", "rolled_back")],
            [("committed", "applied"), ("rolled_back", "failed")],
        ]

    await eventually(audited, timeout_s=2.0)


async def test_concurrent_proposals_one_wins_the_other_conflicts(cluster: Cluster) -> None:
    a, b = cluster.kernels[0].cluster_config, cluster.kernels[1].cluster_config
    base = (await a.get()).revision
    results = await asyncio.gather(
        a.propose({"modules": {"shop": {"limit": 11}}}, revision=base),
        b.propose({"modules": {"shop": {"limit": 12}}}, revision=base),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, ChangeReport)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1
    assert len(lost) == 1
    assert isinstance(lost[0], ConflictError)
    limit = 11 if results[0] is won[0] else 12
    assert cluster.limits() == [limit] * 3
    with pytest.raises(ConflictError, match="not 0"):  # a stale base revision
        await a.propose({"modules": {"shop": {"limit": 13}}}, revision=0)
    assert cluster.limits() == [limit] * 3


async def test_a_node_that_starts_later_runs_on_the_layer(cluster: Cluster) -> None:
    admin = cluster.kernels[0].cluster_config
    await admin.propose({"modules": {"shop": {"limit": 25, "region": "us"}}})
    late = await cluster.add(Shop())
    assert (late.module("shop").config.limit, late.module("shop").config.region) == (25, "us")
    assert len(await admin.nodes()) == 4
    report = await admin.propose({"modules": {"shop": {"region": None}}})  # None: unset
    assert len(report.nodes) == 4
    assert [c.region for c in cluster.configs()] == ["eu"] * 4
    assert (await admin.get()).layer == {"modules": {"shop": {"limit": 25}}}


async def test_a_node_that_does_not_answer_in_time_is_a_no(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'slow.db'}"
    release = asyncio.Event()

    class Slow(Shop):
        async def on_config_check(self, old: ShopConfig, new: ShopConfig) -> None:
            await release.wait()  # stuck validating: it never votes in time

    async with AsyncExitStack() as stack:
        found = Cluster(url, stack)
        await found.add(Shop())
        await found.add(Slow())
        admin = found.kernels[0].cluster_config

        async def two() -> bool:
            return len(await admin.nodes()) == 2

        await eventually(two, timeout_s=5.0)
        report = await admin.propose(
            {"modules": {"shop": {"limit": 15}}}, timeout_s=0.5, check=False
        )
        release.set()
        assert report.outcome == "aborted"
        assert states(report) == {"n0": "validated", "n1": "timeout"}
        assert found.limits() == [10, 10]
        # The slow node's late vote changes nothing; the next change goes through.
        report = await admin.propose({"modules": {"shop": {"limit": 16}}})
        assert found.limits() == [16, 16]
