"""Edge features: rate limits under load, the response cache, aggregates, event streams."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from organelle.gateway import StoreStorage
from organelle.gateway._ratelimit import Limiter
from organelle.gateway.module import Gateway
from organelle.storage import MemoryStore
from tests.gateway.apps import RBAC, RS256_AUTH, Things, bearer, rs256, serve

pytestmark = pytest.mark.timeout(60)


async def test_rate_limit_holds_under_concurrent_load() -> None:
    async with serve(Things) as (_, client):
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=str(client.base_url), limits=limits) as c:
            replies = await asyncio.gather(*(c.get("/limited") for _ in range(300)))
    ok = [r for r in replies if r.status_code == 200]
    limited = [r for r in replies if r.status_code == 429]
    assert len(ok) + len(limited) == 300
    assert len(ok) <= 5 * 1.01
    assert len(ok) == 5
    for r in limited:
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "organelle.rate_limited"


async def test_default_limit_per_principal() -> None:
    gateway = {
        "auth": RS256_AUTH,
        "rbac": RBAC,
        "rate_limit": {"default": "3/minute", "key": "principal"},
    }
    async with serve(Things, gateway=gateway) as (_, client):
        ada, grace = bearer(rs256(sub="ada")), bearer(rs256(sub="grace"))
        codes = [(await client.get("/whoami", headers=ada)).status_code for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        assert (await client.get("/whoami", headers=grace)).status_code == 200


async def test_store_storage_shares_one_budget_between_limiters() -> None:
    store = MemoryStore()
    first, second = Limiter(store), Limiter(store)
    item = first.item("20/minute")

    async def hit(limiter: Limiter) -> bool:
        try:
            await limiter.hit(item, "route", "client")
        except Exception:
            return False
        return True

    results = await asyncio.gather(*(hit(first if i % 2 else second) for i in range(100)))
    assert sum(results) == 20
    storage = StoreStorage(store)
    assert await storage.check()
    await store.close()


async def test_get_responses_are_cached_per_principal_and_query() -> None:
    async with serve(Things, gateway={"auth": RS256_AUTH}) as (kernel, client):
        first = await client.get("/cached", params={"q": "a"})
        again = await client.get("/cached", params={"q": "a"})
        assert first.json() == again.json()
        assert (first.headers["x-cache"], again.headers["x-cache"]) == ("miss", "hit")
        other = await client.get("/cached", params={"q": "b"})
        assert other.json()["calls"] == first.json()["calls"] + 1
        mine = await client.get("/cached", params={"q": "a"}, headers=bearer(rs256(sub="grace")))
        assert mine.json()["who"] == "grace"
        gateway = kernel.module("gateway")
        assert isinstance(gateway, Gateway)
        assert await gateway.invalidate("things.cached") == 3
        fresh = await client.get("/cached", params={"q": "a"})
        assert fresh.headers["x-cache"] == "miss"


async def test_aggregate_fans_out_and_reports_parts() -> None:
    aggregates = [
        {
            "path": "/overview/{id}",
            "parts": {
                "thing": {"call": "things.get_thing", "params": {"id": "{id}"}},
                "sum": {"call": "things.add", "params": {"a": "{id}", "b": 10}},
                "broken": {"call": "things.fail"},
            },
        }
    ]
    async with serve(Things, gateway={"aggregates": aggregates}) as (_, client):
        r = await client.get("/overview/1")
        assert r.status_code == 200
        body = r.json()
        assert body["data"] == {"thing": {"id": 1, "name": "one", "tags": []}, "sum": 11}
        assert body["errors"]["broken"]["code"] == "organelle.not_found"
        r = await client.get("/overview/abc")  # every part failed: the first error's status
        assert r.status_code == 422
        assert set(r.json()["error"]["details"]["parts"]) == {"thing", "sum", "broken"}


async def test_event_stream_sends_matching_allowed_events() -> None:
    gateway = {
        "auth": RS256_AUTH,
        "rbac": RBAC,
        "stream": {"roles": ["reader"], "topics": ["things.>"]},
    }
    async with serve(Things, gateway=gateway) as (kernel, client):
        assert (await client.get("/events", params={"topics": "things.*"})).status_code == 401
        r = await client.get("/events", params={"topics": "a..b"}, headers=bearer(rs256()))
        assert r.status_code == 422
        received: list[tuple[str, Any]] = []
        async with client.stream(
            "GET", "/events", params={"topics": "things.*,other.*"}, headers=bearer(rs256())
        ) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()
            assert await anext(lines) == ": connected"
            await kernel.emit("other.hidden", {"n": 0})  # wanted, but not allowed
            await kernel.emit("things.created", {"n": 1})
            await kernel.emit("things.deep.nested", {"n": 2})  # allowed, not wanted
            await kernel.emit("things.updated", {"n": 3})
            event = None
            async for line in lines:
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    received.append((str(event), json.loads(line[6:])))
                    if len(received) == 2:
                        break
        assert received == [("things.created", {"n": 1}), ("things.updated", {"n": 3})]
