"""A node killed with SIGKILL in the middle of a change: the change is rolled back everywhere.

Three node processes share a store; the proposer is this test (like the
CLI: not a node). The third node hangs applying the change and is killed
there. The proposer hears nothing from it within ``timeout_s`` — a "no" —
and rolls the two others back; restarted, the killed node reads the layer
in effect, the old one. So a change a node dies in is aborted on every node,
never half-applied.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from organelle.cluster_config import ChangeReport, ClusterConfig
from organelle.errors import ConfigChangeError
from organelle.storage import Store, open_store
from organelle.testing import eventually
from organelle.testing.servers import NatsServer
from tests.cluster_config.conftest import Children

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(params=["sqlite", "nats"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cluster.db'}"
    nats: NatsServer = request.getfixturevalue("nats_server")
    return f"nats-kv://{nats.url.removeprefix('nats://')}/k{uuid.uuid4().hex[:10]}"


async def seen(store: Store, node: str) -> dict[str, Any]:
    entry = await store.get(f"seen.{node}")
    return {} if entry is None else dict(entry.value)


async def test_a_node_killed_while_applying_rolls_the_change_back(
    url: str, children: Children
) -> None:
    kids = [children.spawn(url, "n0"), children.spawn(url, "n1"), children.spawn(url, "n2", "mars")]
    for kid in kids:
        await kid.wait_for("ready")
    store = await open_store(url)
    try:
        admin = ClusterConfig(lambda: store, by=lambda: "test", timeout_s=2.0)

        async def three() -> bool:
            return [m.node for m in await admin.nodes()] == ["n0", "n1", "n2"]

        await eventually(three, timeout_s=10.0)
        change = asyncio.create_task(
            admin.propose({"modules": {"shop": {"region": "mars"}}}, check=False)
        )

        async def applied_by_two() -> bool:  # n0 and n1 run it; n2 hangs applying it
            regions = [(await seen(store, n)).get("region") for n in ("n0", "n1")]
            return regions == ["mars", "mars"]

        await eventually(applied_by_two, timeout_s=10.0)
        children.kill(kids[2])
        report: ChangeReport = await asyncio.wait_for(change, 20.0)
        assert report.outcome == "rolled_back"
        assert {n.node: n.state for n in report.nodes} == {
            "n0": "rolled_back",
            "n1": "rolled_back",
            "n2": "timeout",
        }
        assert [(await seen(store, n))["region"] for n in ("n0", "n1")] == ["eu", "eu"]
        assert (await admin.get()).layer == {}
        # Back, the killed node starts on the layer in effect: the old one.
        await store.delete("seen.n2")
        again = children.spawn(url, "n2")
        await again.wait_for("ready")
        assert (await seen(store, "n2"))["region"] == "eu"
        # And the cluster takes the next change, the restarted node with it.
        await eventually(three, timeout_s=10.0)
        report = await admin.propose({"modules": {"shop": {"limit": 12}}})
        assert {n.state for n in report.nodes} == {"applied"}
        with pytest.raises(ConfigChangeError):  # nothing stale blocks a new change either
            await admin.propose({"modules": {"shop": {"limit": "x"}}})
    finally:
        await store.close()
