"""Weighted routing over real clusters: three nodes serve ``pricing`` 1.0.0 on two, 2.0.0 on one.

The same suite runs on ``memory://<name>`` and on a real nats-server; a fourth
node (the caller) routes by its ``[routing]`` table. Shares are checked on
10,000 calls against the configured weights within ±2 percentage points.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from organelle import Kernel, Module, rpc
from organelle.auth.base import Principal
from organelle.context import context
from organelle.errors import ConfigError, InternalError, NotFoundError, UnavailableError
from organelle.kernel._routing import MIRROR_META
from organelle.observability.metrics import Metrics
from organelle.testing import running
from organelle.testing.servers import NatsServer, shared_nats
from organelle.transport.memory import open_brokers

pytestmark = pytest.mark.timeout(120)

CALLS = 10_000
KEYS = 5_000  # sticky keys: hashed, so the split of a fixed key set is deterministic
BATCH = 200  # calls in flight at once


class PricingV1(Module):
    name = "pricing"
    version = "1.0.0"

    @rpc
    async def quote(self, user_id: str = "") -> dict[str, Any]:
        return {"version": "1.0.0", "user": user_id, "mirror": MIRROR_META in context().meta}


class PricingV2(Module):
    name = "pricing"
    version = "2.0.0"

    async def on_start(self) -> None:
        self.shadows = 0

    @rpc
    async def quote(self, user_id: str = "") -> dict[str, Any]:
        if MIRROR_META in context().meta:
            self.shadows += 1
            if user_id.startswith("bad"):
                raise ValueError("v2 cannot price this yet")
        return {"version": "2.0.0", "user": user_id, "mirror": MIRROR_META in context().meta}


class Shop(Module):
    """The caller: its node runs no pricing, so every quote goes over the transport."""

    name = "shop"


class OldShop(Module):
    """A caller that accepts only pricing 1.x: routing must never send it to 2.0.0."""

    name = "old_shop"
    requires = ("pricing<2",)


Start = Callable[..., Coroutine[Any, Any, Kernel]]


async def versions(
    caller: Kernel, n: int, params: Callable[[int], dict[str, Any]], **options: Any
) -> list[str]:
    """The version that served each of ``n`` calls (``BATCH`` in flight at once)."""
    out: list[str] = []
    for start in range(0, n, BATCH):
        batch = [
            caller.call_with("pricing.quote", params(i), **options)
            for i in range(start, min(n, start + BATCH))
        ]
        out += [r["version"] for r in await asyncio.gather(*batch)]
    return out


def share(found: list[str], version: str) -> float:
    return 100.0 * Counter(found)[version] / len(found)


class RoutingSuite:
    """The behaviour; a subclass says how a node joins this test's own cluster."""

    def config(self, **kernel: Any) -> dict[str, Any]:
        raise NotImplementedError

    @pytest.fixture
    async def cluster(self) -> AsyncIterator[Callable[..., Coroutine[Any, Any, Kernel]]]:
        """``await cluster(routing, *caller_modules)``: three pricing nodes and a caller."""
        async with AsyncExitStack() as stack:

            async def make(routing: dict[str, Any], *modules: Any) -> Kernel:
                for module in (PricingV1, PricingV1, PricingV2):
                    await stack.enter_async_context(running(module, config=self.config()))
                config = {**self.config(prefer_local=False), "routing": routing}
                caller = await stack.enter_async_context(
                    running(*(modules or (Shop,)), config=config)
                )
                await self.wait_for_nodes(caller, 3)
                return caller

            yield make

    async def wait_for_nodes(self, caller: Kernel, n: int) -> None:
        """Until the caller's transport knows ``n`` pricing nodes (bounded)."""
        async with asyncio.timeout(10):
            while len(caller.transport.versions("pricing")) < n:
                await asyncio.sleep(0.05)

    async def test_a_canary_splits_90_10(self, cluster: Start) -> None:
        caller = await cluster({"pricing": {"weights": {"1.0.0": 90, "2.0.0": 10}}})
        found = await versions(caller, CALLS, lambda _: {})
        assert abs(share(found, "2.0.0") - 10) <= 2
        assert abs(share(found, "1.0.0") - 90) <= 2
        stats = {(s.version, s.role): s for s in caller.routing_stats()}
        assert stats["2.0.0", "primary"].calls + stats["1.0.0", "primary"].calls == CALLS

    async def test_sticky_keys_keep_their_version_and_follow_a_reload(self, cluster: Start) -> None:
        table = {"weights": {"1.0.0": 90, "2.0.0": 10}, "sticky": "param:user_id"}
        caller = await cluster({"pricing": table})
        keys = [f"user-{i}" for i in range(KEYS)]
        first = await versions(caller, KEYS, lambda i: {"user_id": keys[i]})
        again = await versions(caller, KEYS, lambda i: {"user_id": keys[i]})
        assert first == again  # weights unchanged: no key flipped
        assert abs(share(first, "2.0.0") - 10) <= 2
        # One reload: new keys follow the new weights at once.
        reloaded = {"pricing": {**table, "weights": {"1.0.0": 50, "2.0.0": 50}}}
        result = await caller.reload_config({**caller.config, "routing": reloaded})
        assert "routing.pricing.weights.1.0.0" in {d["key"] for d in result.diff}
        fresh = await versions(caller, KEYS, lambda i: {"user_id": f"new-{i}"})
        assert abs(share(fresh, "2.0.0") - 50) <= 2
        # Keys already on 2.0.0 stay there: the 2.0.0 share only grew.
        moved = await versions(caller, KEYS, lambda i: {"user_id": keys[i]})
        assert all(b == "2.0.0" for a, b in zip(first, moved, strict=True) if a == "2.0.0")

    async def test_sticky_by_principal(self, cluster: Start) -> None:
        caller = await cluster(
            {"pricing": {"weights": {"1.0.0": 50, "2.0.0": 50}, "sticky": "principal"}}
        )
        for who in ("alice", "bob", "carol", "dave"):
            principal = Principal(id=who)
            seen = set(await versions(caller, 20, lambda _: {}, principal=principal))
            assert len(seen) == 1

    async def test_an_ab_rule_sends_matching_calls_to_its_version(self, cluster: Start) -> None:
        routing = {
            "pricing": {
                "weights": {"1.0.0": 100},
                "rules": [{"when": {"meta": {"tenant": "acme"}}, "version": "2.0.0"}],
            }
        }
        caller = await cluster(routing)
        acme = await versions(caller, 200, lambda _: {}, meta={"tenant": "acme"})
        other = await versions(caller, 200, lambda _: {}, meta={"tenant": "globex"})
        assert set(acme) == {"2.0.0"}
        assert set(other) == {"1.0.0"}

    async def test_a_mirror_copies_calls_but_callers_get_the_primary(self, cluster: Start) -> None:
        routing = {"pricing": {"mirror": {"version": "2.0.0", "percent": 100}}}
        caller = await cluster(routing)
        calls = 300
        replies = [
            await caller.call("pricing.quote", user_id=f"{'bad' if i % 3 == 0 else 'ok'}-{i}")
            for i in range(calls)
        ]
        assert {r["version"] for r in replies} == {"1.0.0"}
        assert not any(r["mirror"] for r in replies)
        async with asyncio.timeout(10):  # shadow copies finish in the background
            while sum(s.calls for s in caller.routing_stats() if s.role == "mirror") < calls or any(
                caller._router.routing._mirrors
            ):
                await asyncio.sleep(0.02)
        stats = {(s.version, s.role): s for s in caller.routing_stats()}
        primary, mirror = stats["1.0.0", "primary"], stats["2.0.0", "mirror"]
        assert (primary.calls, mirror.calls) == (calls, calls)
        assert primary.errors == {}
        assert mirror.errors == {"organelle.internal": calls // 3}
        assert mirror.p50_s is not None
        assert primary.p99_s is not None
        assert primary.p50_s is not None
        assert primary.p50_s <= primary.p99_s
        # The same figures on /metrics, for dashboards comparing the two versions.
        found = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(Metrics(caller).render().decode())
            for sample in family.samples
        }
        side = (("module", "pricing"), ("role", "mirror"), ("version", "2.0.0"))
        assert found["organelle_routing_calls_total", side] == calls
        errors = tuple(sorted((*side, ("code", "organelle.internal"))))
        assert found["organelle_routing_errors_total", errors] == calls // 3
        p99 = tuple(sorted((*side, ("quantile", "0.99"))))
        assert found["organelle_routing_latency_seconds", p99] == mirror.p99_s

    async def test_requires_ranges_exclude_a_version(self, cluster: Start) -> None:
        caller = await cluster({"pricing": {"weights": {"1.0.0": 50, "2.0.0": 50}}}, OldShop)
        found = await versions(caller, 500, lambda _: {})
        assert set(found) == {"1.0.0"}

    async def test_pick_and_send_to_address_one_node(self, cluster: Start) -> None:
        caller = await cluster({})
        served = dict(caller.transport.versions("pricing"))
        routing = caller._router.routing
        ctx = context()
        assert routing.pick("pricing.quote", {}, ctx) is None  # no table: the queue group
        v2 = next(n for n, v in served.items() if v == "2.0.0")
        v1 = sorted(n for n, v in served.items() if v == "1.0.0")
        for node, version in served.items():
            reply = await routing.send_to(node, "pricing.quote", {}, context())
            assert reply["version"] == version
        # Avoiding the 2.0.0 node leaves the two 1.0.0 ones, spread between them.
        picked = {routing.pick("pricing.quote", {}, ctx, avoid={v2}) for _ in range(10)}
        assert picked == set(v1)
        with pytest.raises(UnavailableError):
            routing.pick("pricing.quote", {}, ctx, avoid=set(served))
        found = await caller._router.send("pricing.quote", {}, context(), avoid={v2})
        assert found["version"] == "1.0.0"

    async def test_an_error_names_the_node_that_raised_it(self, cluster: Start) -> None:
        caller = await cluster({})
        served = caller.transport.versions("pricing")
        v2 = next(n for n, v in served.items() if v == "2.0.0")
        routing = caller._router.routing
        with pytest.raises(InternalError) as bad:  # the handler's ValueError, as it travels
            await routing.send_to(v2, "pricing.quote", {"user_id": "bad"}, _shadow_ctx())
        assert bad.value.node == v2
        assert "node" not in bad.value.details
        with pytest.raises(UnavailableError) as gone:
            await routing.send_to("no-such-node", "pricing.quote", {}, context())
        assert gone.value.node == "no-such-node"
        assert gone.value.details["delivered"] is False

    async def test_a_module_the_registry_does_not_list_goes_to_the_queue_group(
        self, cluster: Start
    ) -> None:
        caller = await cluster({"ghost": {"weights": {"1.0.0": 100}}})
        with pytest.raises(NotFoundError):  # the transport's answer, not a routing refusal
            await caller.call("ghost.boo")

    async def test_a_bad_table_rejects_the_reload_and_keeps_the_old_one(
        self, cluster: Start
    ) -> None:
        caller = await cluster({"pricing": {"weights": {"1.0.0": 100}}})
        bad = {"pricing": {"weights": {"1.0.0": -1}}}
        with pytest.raises(ConfigError, match=r"routing\.pricing\.weights"):
            await caller.reload_config({**caller.config, "routing": bad})
        assert set(await versions(caller, 100, lambda _: {})) == {"1.0.0"}


def _shadow_ctx() -> Any:
    """A context marked as a shadow copy (PricingV2 fails ``bad*`` users only then)."""
    return context().child(None, meta={MIRROR_META: True})


class TestMemory(RoutingSuite):
    @pytest.fixture(autouse=True)
    def _cluster(self, request: pytest.FixtureRequest) -> Iterator[None]:
        name = re.sub(r"[^A-Za-z0-9_.-]", "-", request.node.name)
        self.name = f"{name}-{uuid.uuid4().hex[:6]}"
        yield
        assert self.name not in open_brokers()

    def config(self, **kernel: Any) -> dict[str, Any]:
        return {"kernel": {"transport": f"memory://{self.name}", **kernel}}


@pytest.fixture(scope="module")
def nats_server() -> Iterator[NatsServer]:
    with shared_nats() as server:
        yield server


class TestNats(RoutingSuite):
    @pytest.fixture(autouse=True)
    def _cluster(self, nats_server: NatsServer) -> None:
        self.url = nats_server.url
        self.prefix = f"t{uuid.uuid4().hex[:10]}"

    def config(self, **kernel: Any) -> dict[str, Any]:
        # A long TTL: a node whose heartbeat is late on a loaded machine must not drop out
        # of the view mid-test (its sticky keys would move, by design, and the shares drift).
        options = {"prefix": self.prefix, "heartbeat_s": 0.2, "registry_ttl_s": 10.0}
        return {"kernel": {"transport": self.url, "transport_options": options, **kernel}}
