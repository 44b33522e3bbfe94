"""The views follow the kernel: real calls, events and failures change the numbers served."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from organelle import Kernel, ModuleState, NotFoundError
from organelle.config.secrets import MASK
from organelle.dashboard._kernel import BOUNDS_S
from organelle.gateway import Gateway
from organelle.kernel import BaseListener
from organelle.testing import eventually
from tests.dashboard.apps import API, ON, Audit, Calc, Feed, config, serve
from tests.gateway.apps import SECRET

pytestmark = pytest.mark.timeout(30)


async def view(client: httpx.AsyncClient, name: str) -> Any:
    r = await client.get(f"{API}/{name}")
    assert r.status_code == 200, r.text
    return r.json()


def by(items: list[dict[str, Any]], key: str, value: str) -> dict[str, Any]:
    found = [item for item in items if item[key] == value]
    assert len(found) == 1, (value, items)
    return found[0]


async def test_rpc_counts_calls_errors_and_latency() -> None:
    async with serve(Calc, Audit, dashboard=ON, gateway={"expose": ["calc.*"]}) as (k, client):
        before = by((await view(client, "rpc"))["methods"], "target", "calc.add")
        assert (before["calls"], before["errors"], before["p50_ms"]) == (0, 0, None)
        assert await k.call("calc.add", a=1, b=2) == 3
        assert await k.call("calc.add", a=2, b=2) == 4
        r = await client.post("/api/calc/add", json={"a": 1, "b": "x"})  # refused: counted too
        assert r.status_code == 422
        with pytest.raises(NotFoundError):
            await k.call("calc.lookup", key="k")
        table = await view(client, "rpc")
    assert table["bounds_s"] == list(BOUNDS_S)
    add = by(table["methods"], "target", "calc.add")
    assert (add["module"], add["calls"], add["errors"]) == ("calc", 3, 1)
    assert add["error_codes"] == {"organelle.validation": 1}
    assert add["timed"] == 2  # the two calls that ran and suspended
    assert add["in_flight"] == 0
    assert 0 < add["p50_ms"] <= add["p99_ms"] <= BOUNDS_S[-1] * 1000
    assert add["mean_ms"] > 0
    lookup = by(table["methods"], "target", "calc.lookup")
    assert (lookup["calls"], lookup["errors"]) == (1, 1)
    assert lookup["error_codes"] == {"organelle.not_found": 1}
    assert lookup["p50_ms"] is None  # raised before suspending: never timed


async def test_rpc_shows_the_call_policies_breakers() -> None:
    async with serve(Calc, Audit, dashboard=ON) as (k, client):
        assert "calc.lookup" not in [b["key"] for b in (await view(client, "rpc"))["breakers"]]
        k.set_policy("calc.lookup", {"breaker": {"failures": 1, "reset_s": 30}})
        with pytest.raises(NotFoundError):  # an answer: the breaker stays closed
            await k.call("calc.lookup", key="k")
        table = await view(client, "rpc")
    assert by(table["breakers"], "key", "calc.lookup") == {
        "key": "calc.lookup",
        "state": "closed",
        "consecutive_failures": 0,
        "opened": 0,
        "retry_after_s": 0.0,
    }


async def test_events_count_deliveries_and_keep_the_last_error() -> None:
    async with serve(Calc, Audit, dashboard=ON) as (k, client):
        await k.emit("calc.done", {"n": 1})
        await k.emit("calc.done", {"n": 2})
        await k.emit("calc.failed", {"bad": True})
        await k.drain()
        subs = (await view(client, "events"))["subscriptions"]
    audit = by(subs, "module", "audit")
    assert (audit["handler"], audit["pattern"], audit["delivery"]) == (
        "record",
        "calc.*",
        "balanced",
    )
    assert (audit["delivered"], audit["failed"], audit["skipped"]) == (2, 1, 0)
    err = audit["last_error"]
    assert err["code"] == "organelle.internal"
    assert "audit log is full" in err["message"]
    assert err["topic"] == "calc.failed"
    relay = by(subs, "module", "gateway")  # the gateway's own broadcast subscription
    assert relay["failed"] == 0


async def test_overview_modules_and_health() -> None:
    async with serve(Calc, Audit, dashboard=ON, node="board-1") as (_, client):
        overview = await view(client, "overview")
        modules = (await view(client, "modules"))["modules"]
        health = await view(client, "health")
    assert overview["node"] == "board-1"
    assert (overview["state"], overview["accepting"]) == ("serving", True)
    assert overview["modules"] == 3
    assert overview["modules_by_state"] == {"active": 3}
    assert overview["rpc_methods"] == 2
    assert overview["subscriptions"] == 2
    assert (overview["transport"], overview["storage"]) == ("memory://", "memory://")
    assert overview["uptime_s"] >= 0
    assert overview["now"] >= overview["started_at"]
    assert [m["name"] for m in modules] == ["calc", "audit", "gateway"]
    audit = by(modules, "name", "audit")
    assert (audit["version"], audit["state"], audit["error"]) == ("1.0.0", "active", None)
    assert audit["requires"] == ["calc"]
    assert audit["subscriptions"] == ["calc.*"]
    assert by(modules, "name", "calc")["rpc_methods"] == ["add", "lookup"]
    assert (health["status"], health["ready"]) == ("healthy", True)
    assert {"module:calc", "module:audit", "transport", "storage"} <= set(health["checks"])


async def test_a_crashed_module_shows_failed_with_its_error() -> None:
    async with serve(Calc, Feed, dashboard=ON, restart_backoff_s=60) as (k, client):
        await k.call("feed.break_down")
        await eventually(lambda: k.state("feed") is ModuleState.FAILED)
        feed = by((await view(client, "modules"))["modules"], "name", "feed")
        overview = await view(client, "overview")
        health = await view(client, "health")
    assert feed["state"] == "failed"
    assert "feed connection lost" in feed["error"]
    assert overview["modules_by_state"] == {"active": 2, "failed": 1}
    assert (health["ready"], health["status"]) == (False, "unhealthy")
    assert health["checks"]["module:feed"]["status"] == "unhealthy"
    assert "module:feed" in health["reason"]


async def test_config_is_served_with_every_secret_masked() -> None:
    gateway = {"auth": {"jwt": {"secret": SECRET, "algorithms": ["HS256"]}}}
    options = {"password": "nats-pw", "token": "t0k3n"}
    async with serve(Calc, dashboard=ON, gateway=gateway, transport_options=options) as (
        kernel,
        client,
    ):
        r = await client.get(f"{API}/config")
        raw = kernel.config_dump()
    assert r.status_code == 200
    dump = r.json()
    for secret in ("hunter2", "plain-token-value", SECRET, "nats-pw", "t0k3n"):
        assert secret not in r.text, secret
    calc = dump["modules"]["calc"]
    assert calc["db_password"] == MASK  # a SecretStr
    assert calc["api_token"] == MASK  # a plain string, masked by its name
    assert calc["precision"] == 2
    assert dump["modules"]["gateway"]["auth"]["jwt"]["secret"] == MASK
    assert dump["kernel"]["transport_options"] == {"password": MASK, "token": MASK}
    assert dump["kernel"]["storage"] == "memory://"
    # The JWT secret is a SecretStr: the kernel's own dump masks it too.
    assert raw["modules"]["gateway"]["auth"]["jwt"]["secret"] == MASK


async def test_call_stats_switched_on_earlier_keep_their_buckets() -> None:
    class Earlier(BaseListener):
        call_buckets = (0.5, 1.0)

    gw = Gateway()
    kernel = Kernel([Calc, gw], config(ON))
    kernel.listen(Earlier())  # as Prometheus metrics would, before start
    stats = kernel.call_stats
    async with kernel, httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
        await kernel.call("calc.add", a=1, b=1)
        table = await view(client, "rpc")
    assert kernel.call_stats is stats
    assert table["bounds_s"] == [0.5, 1.0]
    assert by(table["methods"], "target", "calc.add")["calls"] == 1
