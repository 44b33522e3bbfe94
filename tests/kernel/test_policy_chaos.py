"""Chaos under a policy: three nodes serve ``pricing`` over a real nats-server; one is slow, one flaky.

Node ``ok`` answers in about 2 ms, node ``slow`` ten times slower, node
``flaky`` fails half its calls. A fourth node calls ``pricing.quote`` 5,000
times, 50 in flight, under a retry + per-node breaker + bulkhead policy: at
least 99.9 % of the calls succeed, the p99 stays under the policy's timeout,
and the flaky node's breaker opens and half-opens (seen in the metrics).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest
from prometheus_client.parser import text_string_to_metric_families

from organelle import Kernel, Module, rpc
from organelle.observability.metrics import Metrics
from organelle.testing.servers import NatsServer, shared_nats

pytestmark = pytest.mark.timeout(180)

CALLS = 5_000
IN_FLIGHT = 50
TIMEOUT_S = 1.0


class Behaviour(pydantic.BaseModel):
    delay_s: float = 0.002
    fail_ratio: float = 0.0


class Pricing(Module):
    name = "pricing"
    version = "1.0.0"
    Config = Behaviour

    async def on_start(self) -> None:
        self.served = 0
        self.failed = 0
        self.random = random.Random(7)

    @rpc(idempotent=True)
    async def quote(self, sku: str) -> dict[str, Any]:
        config: Behaviour = self.config
        self.served += 1
        await asyncio.sleep(config.delay_s)
        if self.random.random() < config.fail_ratio:
            self.failed += 1
            raise RuntimeError("pricing backend hiccup")
        return {"sku": sku, "price": 42}


class Shop(Module):
    name = "shop"


POLICY = {
    "timeout_s": TIMEOUT_S,
    "retry": {
        "attempts": 5,
        "backoff_s": 0.002,
        "max_backoff_s": 0.02,
        "attempt_timeout_s": 0.25,
        "budget": 1.0,
        "min_per_s": 200,
    },
    "breaker": {"failures": 5, "failure_ratio": 0.4, "min_calls": 10, "reset_s": 0.3},
    "bulkhead": {"max_concurrent": 64, "max_queue": 256},
}


@pytest.fixture(scope="module")
def nats() -> Iterator[NatsServer]:
    with shared_nats() as server:
        yield server


def node(url: str, prefix: str, name: str, **extra: Any) -> dict[str, Any]:
    options = {"prefix": prefix, "heartbeat_s": 0.2, "registry_ttl_s": 1.0}
    return {
        "kernel": {"transport": url, "transport_options": options, "node": name, **extra},
    }


def samples(metrics: Metrics, name: str) -> list[tuple[dict[str, str], float]]:
    found = []
    for family in text_string_to_metric_families(metrics.render().decode()):
        found += [(s.labels, s.value) for s in family.samples if s.name == name]
    return found


async def test_retry_breaker_and_bulkhead_keep_calls_succeeding(nats: NatsServer) -> None:
    prefix = f"chaos{uuid.uuid4().hex[:8]}"
    behaviours = {
        "ok": {},
        "slow": {"delay_s": 0.02},
        "flaky": {"fail_ratio": 0.5},
    }
    servers = [
        Kernel([Pricing], {**node(nats.url, prefix, name), "modules": {"pricing": b}})
        for name, b in behaviours.items()
    ]
    caller_config = {**node(nats.url, prefix, "caller"), "policies": {"pricing.quote": POLICY}}
    caller = Kernel([Shop], caller_config)
    metrics = Metrics(caller)
    metrics.install()
    for k in servers:
        await k.start()
    try:
        await caller.start()
        await caller.wait_for("pricing", 10)
        deadline = time.monotonic() + 10
        while len(caller._router.transport.versions("pricing")) < len(servers):
            assert time.monotonic() < deadline, "the registry never listed the three nodes"
            await asyncio.sleep(0.05)

        took: list[float] = []
        errors: list[str] = []
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def one(i: int) -> None:
            async with gate:
                began = time.perf_counter()
                try:
                    result = await caller.call("pricing.quote", sku=f"s{i}")
                    assert result == {"sku": f"s{i}", "price": 42}
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                took.append(time.perf_counter() - began)

        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(CALLS))), 150)
    finally:
        await caller.stop()
        for k in servers:
            await k.stop()

    ok_share = 1 - len(errors) / CALLS
    assert ok_share >= 0.999, (ok_share, errors[:5])
    took.sort()
    p99 = took[int(0.99 * len(took)) - 1]
    assert p99 < TIMEOUT_S, p99
    flaky = servers[2].module("pricing")
    assert isinstance(flaky, Pricing)
    assert flaky.failed > 0  # the chaos happened

    breaker = "pricing.quote@flaky"
    stats = caller.policy_stats()
    changes = stats["breakers"][breaker]["changes"]
    assert changes["open"] >= 1, stats["breakers"]
    assert changes["half_open"] >= 1, stats["breakers"]
    seen = {
        labels["state"]: value
        for labels, value in samples(metrics, "organelle_breaker_transitions_total")
        if labels["breaker"] == breaker
    }
    assert seen["open"] >= 1
    assert seen["half_open"] >= 1
    assert stats["retries"]["pricing.quote"] > 0
