"""The gateway in one kernel, the module it routes to in another, over a real NATS server.

HTTP goes through a real uvicorn on a free loopback port; the call crosses
NATS to the node that runs ``ledger``. The gateway knows the module only from
``route_modules`` (its class is described, never instantiated here).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from organelle import Kernel, UnavailableError
from organelle.auth.api_keys import hash_key
from organelle.gateway import Gateway
from organelle.testing import eventually
from organelle.testing.servers import NatsServer, shared_nats

from .remote import Ledger

ADMIN = {"x-api-key": "key-admin"}
READER = {"x-api-key": "key-reader"}
BREAKER_FAILURES = 6  # two failed requests of three attempts each
BREAKER_RESET_S = 0.5


@pytest.fixture(scope="module")
def nats_server() -> Iterator[NatsServer]:
    with shared_nats() as server:
        yield server


def node(url: str, prefix: str, **kernel: Any) -> dict[str, Any]:
    options = {"prefix": prefix, "heartbeat_s": 0.2, "registry_ttl_s": 1.0}
    options["no_responders_wait_s"] = 0.2
    return {"kernel": {"transport": url, "transport_options": options, **kernel}}


def gateway_config(url: str, prefix: str) -> dict[str, Any]:
    cfg = node(url, prefix, storage="memory://")
    cfg["modules"] = {
        "gateway": {
            "port": 0,
            "route_modules": ["tests.gateway.remote:Ledger"],
            "expose": ["ledger.add", "ledger.whoami"],
            "timeout_s": 5,
            "auth": {
                "api_keys": {
                    hash_key("key-admin"): {"id": "ada", "roles": ["admin"]},
                    hash_key("key-reader"): {"id": "bob", "roles": ["reader"]},
                }
            },
            "resilience": {
                "retries": 2,
                "backoff_s": 0.01,
                "max_backoff_s": 0.05,
                "breaker_failures": BREAKER_FAILURES,
                "breaker_reset_s": BREAKER_RESET_S,
            },
        }
    }
    return cfg


@dataclass
class Cluster:
    url: str
    prefix: str
    remote: Kernel
    gateway: Kernel
    http: httpx.AsyncClient

    @property
    def gw(self) -> Gateway:
        module = self.gateway.module("gateway")
        assert isinstance(module, Gateway)
        return module

    async def start_remote(self) -> None:
        self.remote = Kernel([Ledger], node(self.url, self.prefix))
        await self.remote.start()


@pytest.fixture
async def cluster(nats_server: NatsServer) -> AsyncIterator[Cluster]:
    prefix = f"g{uuid.uuid4().hex[:10]}"
    async with (
        Kernel([Ledger], node(nats_server.url, prefix)) as remote,
        Kernel([Gateway()], gateway_config(nats_server.url, prefix)) as gateway,
    ):
        gw = gateway.module("gateway")
        assert isinstance(gw, Gateway)
        async with httpx.AsyncClient(base_url=gw.url, timeout=10) as http:
            c = Cluster(nats_server.url, prefix, remote, gateway, http)
            try:
                yield c
            finally:
                await c.remote.stop()  # a replacement started by the test, if any


def error(resp: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = resp.json()["error"]
    return body


async def test_routes_and_exposed_rpcs_answer_through_the_hop(cluster: Cluster) -> None:
    assert not cluster.gw.runtime.is_local("ledger")  # every call below crosses NATS
    resp = await cluster.http.get("/ledger/acc-1", params={"currency": "CHF"})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"account": "acc-1", "balance": 42, "currency": "CHF"}
    resp = await cluster.http.post("/api/ledger/add", json={"a": 2, "b": 3})
    assert (resp.status_code, resp.json()) == (200, 5)
    resp = await cluster.http.post("/ledger/acc-1/withdraw", json={"amount": 2})
    assert (resp.status_code, resp.json()) == (200, {"account": "acc-1", "balance": 40})


async def test_remote_errors_keep_their_status(cluster: Cluster) -> None:
    http = cluster.http
    resp = await http.post("/ledger/acc-1/withdraw", json={"amount": 500})
    assert resp.status_code == 403, resp.text
    assert error(resp)["code"] == "organelle.forbidden"
    assert "over the limit" in error(resp)["message"]
    resp = await http.post("/ledger/acc-1/withdraw", json={"amount": -1})
    assert resp.status_code == 422, resp.text  # raised by the handler
    assert error(resp)["details"]["errors"] == [{"field": "amount", "message": "must be positive"}]
    resp = await http.post("/api/ledger/add", json={"a": 1, "b": "many"})
    assert resp.status_code == 422, resp.text  # refused by the remote kernel's validation
    assert [e["field"] for e in error(resp)["details"]["errors"]] == ["b"]
    # Answers, even error ones, prove the module is reachable: the breaker stays closed.
    assert cluster.gateway.policy_stats()["breakers"]["ledger"]["state"] == "closed"


async def test_the_principal_reaches_the_remote_handler(cluster: Cluster) -> None:
    http = cluster.http
    resp = await http.post("/api/ledger/whoami", headers=ADMIN)
    assert resp.json() == {"id": "ada", "roles": ["admin"]}
    resp = await http.post("/api/ledger/whoami", headers=READER)
    assert resp.json() == {"id": "bob", "roles": ["reader"]}
    resp = await http.get("/audit", headers=ADMIN)
    assert (resp.status_code, resp.json()) == (200, {"id": "ada", "roles": ["admin"]})
    # The role check runs on the serving node: the handler never sees bob.
    resp = await http.get("/audit", headers=READER)
    assert resp.status_code == 403, resp.text
    resp = await http.get("/audit")
    assert resp.status_code == 401, resp.text
    ledger = cluster.remote.module("ledger")
    assert isinstance(ledger, Ledger)
    assert ledger.seen == [{"id": "ada", "roles": ["admin"]}]


async def test_a_stopped_module_is_503_then_the_breaker_opens_and_closes(
    cluster: Cluster,
) -> None:
    http = cluster.http
    assert (await http.get("/ledger/a")).status_code == 200
    breaker = cluster.gateway._policies.breakers["ledger"]
    await cluster.remote.stop()

    # Each request is tried 1 + retries times, then 503 (never 500, never 404).
    for failed in (1, 2):
        resp = await http.get("/ledger/a")
        assert resp.status_code == 503, resp.text
        assert error(resp)["code"] == "organelle.unavailable"
        assert breaker.consecutive == 3 * failed
    assert breaker.state == "open"

    # Open: 503 without a call going out (no attempt is counted), at once.
    for _ in range(5):
        resp = await http.post("/api/ledger/add", json={"a": 1, "b": 2})
        assert resp.status_code == 503
        assert "circuit open" in error(resp)["message"]
        assert error(resp)["code"] == "organelle.circuit_open"
    assert breaker.consecutive == BREAKER_FAILURES
    start = time.monotonic()
    with pytest.raises(UnavailableError, match="circuit open"):
        await cluster.gw.runtime.invoke("ledger.balance", {"account": "a"}, None, 5.0)
    assert time.monotonic() - start < 0.05

    # The module comes back; after breaker_reset_s one trial call closes the breaker.
    await cluster.start_remote()
    stats = cluster.gateway.policy_stats
    await eventually(
        lambda: stats()["breakers"]["ledger"]["state"] != "open", timeout_s=5 * BREAKER_RESET_S
    )
    resp = await http.get("/ledger/a")
    assert resp.status_code == 200, resp.text
    assert breaker.state == "closed"
    assert (await http.post("/api/ledger/add", json={"a": 1, "b": 2})).json() == 3
