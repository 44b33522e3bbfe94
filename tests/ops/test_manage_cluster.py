"""Management through NATS: any node acts on another by name, with the ops role."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from organelle import Kernel, Module, rpc
from organelle.auth import Principal
from organelle.auth.api_keys import hash_key
from organelle.errors import ForbiddenError, NotFoundError
from organelle.ops import Ops
from organelle.ops.cluster import Cluster
from organelle.testing import eventually
from organelle.testing.servers import NatsServer

pytestmark = pytest.mark.timeout(60)

KEY = "cluster-ops-key"


class Billing(Module):
    name = "billing"
    version = "2.0.0"

    @rpc
    async def total(self) -> int:
        return 42


class Audit(Module):
    name = "audit"


@pytest.fixture(scope="module")
def nats_server() -> Iterator[NatsServer]:
    with NatsServer() as server:
        yield server


def _config(url: str, prefix: str, node: str) -> dict[str, Any]:
    return {
        "kernel": {
            "node": node,
            "transport": url,
            "transport_options": {"prefix": prefix, "heartbeat_s": 0.2},
            "storage": "memory://",
        },
        "ops": {"auth": {"api_keys": {hash_key(KEY): {"id": "ci", "roles": ["ops"]}}}},
    }


async def test_two_kernels_manage_each_other(nats_server: NatsServer) -> None:
    prefix = f"m{uuid.uuid4().hex[:8]}"
    one = Kernel([Billing], _config(nats_server.url, prefix, "node-a"))
    two = Kernel([Audit], _config(nats_server.url, prefix, "node-b"))
    async with Ops(one, port=0) as ops_one, one, Ops(two, port=None), two:
        cluster = Cluster(one)

        async def both_known() -> None:
            assert cluster.nodes() == ["node-a", "node-b"]

        await eventually(both_known, timeout_s=10)
        remote = await cluster.call("node-b", "modules")
        assert {m["name"]: m["node"] for m in remote} == {"audit": "node-b", "ops": "node-b"}
        # an action on the other node: unload its module, over NATS
        assert await cluster.call("node-b", "unload", name="audit") == {"removed": ["audit"]}
        assert "audit" not in two.modules()
        with pytest.raises(NotFoundError) as missing:
            await cluster.call("node-b", "restart", name="audit")
        assert missing.value.code == "organelle.not_found"
        # every node at once, each answer apart
        each = await cluster.each("health")
        assert [(r["node"], r["ok"]) for r in each] == [("node-a", True), ("node-b", True)]
        # the role is checked on the serving node
        stranger = Cluster(two, principal=Principal(id="x", roles=frozenset({"reader"})))
        with pytest.raises(ForbiddenError):
            await stranger.call("node-a", "modules")
        with pytest.raises(NotFoundError):
            await cluster.call("node-z", "modules")
        # HTTP on node-a, ?node=node-b: forwarded through the cluster
        base = f"http://127.0.0.1:{ops_one.port}"
        async with httpx.AsyncClient(base_url=base, headers={"x-api-key": KEY}) as client:
            got = await client.get("/manage/modules", params={"node": "node-b"})
            assert [m["name"] for m in got.json()] == ["ops"]
            nodes = await client.get("/manage/nodes")
            assert nodes.json() == ["node-a", "node-b"]
            unknown = await client.get("/manage/modules", params={"node": "node-z"})
            assert unknown.status_code == 404


def test_every_operation_is_an_rpc_and_a_route() -> None:
    from organelle.module import describe
    from organelle.ops._manage_routes import ROUTES
    from organelle.ops._manage_rpc import OpsModule
    from organelle.ops.manage import OPERATIONS

    assert set(describe(OpsModule).rpcs) == OPERATIONS
    assert {r.op for r in ROUTES} == {*OPERATIONS, "nodes"}


async def test_no_node_answers_says_why(nats_server: NatsServer) -> None:
    from organelle.errors import CallTimeoutError

    config = _config(nats_server.url, f"e{uuid.uuid4().hex[:8]}", "lonely")
    async with Kernel([], config) as client:
        with pytest.raises(CallTimeoutError, match="no node of the app answered"):
            await Cluster(client).wait(timeout_s=0.3)


async def test_cancel_refused_where_the_queue_cannot_take_a_job_back(
    nats_server: NatsServer,
) -> None:
    from organelle.errors import JobStateError
    from organelle.jobs import JobsService, open_queue
    from organelle.ops.manage import Manage

    queue = await open_queue(f"{nats_server.url}?stream=C{uuid.uuid4().hex[:8].upper()}")
    try:
        job_id = await JobsService(queue).enqueue("mail.send", {"to": "ada"}, delay_s=3600)
        manage = Manage.offline(queue=queue, store=None, log=None)
        with pytest.raises(JobStateError, match="cannot cancel"):
            await manage.job_cancel(job_id)
        assert (await manage.job(job_id))["state"] == "scheduled"
    finally:
        await queue.close()
