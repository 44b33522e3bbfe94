"""Routing, binding and error mapping over a real uvicorn server on loopback."""

from __future__ import annotations

from typing import Any

import pytest

from organelle import CallNext, Invocation, Kernel
from organelle.gateway import HttpCall
from tests.gateway.apps import RBAC, RS256_AUTH, Things, bearer, rs256, serve

pytestmark = pytest.mark.timeout(30)
AUTH: dict[str, Any] = {"auth": RS256_AUTH, "rbac": RBAC, "expose": ["things.*"]}


async def test_path_and_query_are_converted_from_type_hints() -> None:
    async with serve(Things) as (_, client):
        r = await client.get("/things/1")
        assert r.status_code == 200
        assert r.json() == {"id": 1, "name": "one", "tags": []}
        assert r.headers["content-type"] == "application/json"
        r = await client.get("/things/1", params={"verbose": "true"})
        assert r.json()["tags"] == ["verbose"]
        r = await client.get("/search", params=[("tag", "a"), ("tag", "b"), ("limit", "3")])
        assert r.json() == [2, 3]


async def test_bad_input_is_422_with_every_field() -> None:
    async with serve(Things) as (_, client):
        r = await client.get("/things/abc", params={"verbose": "maybe"})
        assert r.status_code == 422
        fields = {e["field"] for e in r.json()["error"]["details"]["errors"]}
        assert fields == {"id", "verbose"}


async def test_errors_map_to_http_statuses() -> None:
    async with serve(Things, gateway={"expose": ["things.*"]}) as (_, client):
        assert (await client.get("/things/99")).status_code == 404
        assert (await client.get("/nowhere")).json()["error"]["code"] == "organelle.not_found"
        r = await client.put("/things/1")
        assert r.status_code == 405
        assert "GET" in r.headers["allow"]
        slow = await client.get("/slow")
        assert slow.status_code == 504
        assert slow.json()["error"]["code"] == "organelle.timeout"
        r = await client.post("/api/things/add", json={"a": 1, "b": "x"})
        assert r.status_code == 422
        assert (await client.post("/api/things/add", json={"a": 1, "b": 2})).json() == 3
        assert (await client.post("/api/things/fail")).status_code == 404


async def test_unexpected_failure_is_500_with_an_id_and_no_internals() -> None:
    async with serve(Things) as (_, client):
        r = await client.get("/crash")
        assert r.status_code == 500
        error = r.json()["error"]
        assert error["code"] == "organelle.internal"
        assert len(error["id"]) == 16
        assert "hunter2" not in r.text
        assert "RuntimeError" not in r.text


async def test_body_binding_and_roles() -> None:
    async with serve(Things, gateway=AUTH) as (kernel, client):
        thing = {"thing": {"id": 7, "name": "seven"}}
        assert (await client.post("/things", json=thing)).status_code == 401
        r = await client.post("/things", json=thing, headers=bearer(rs256()))
        assert r.status_code == 403
        r = await client.post(
            "/things", json=thing, params={"note": "n"}, headers=bearer(rs256(roles=["writer"]))
        )
        assert r.status_code == 201
        assert r.json() == {"id": 7, "name": "seven", "tags": []}
        r = await client.post(
            "/things",
            json={"thing": {"id": "x"}, "extra": 1},
            headers=bearer(rs256(roles=["admin"])),
        )
        assert r.status_code == 422
        fields = {e["field"] for e in r.json()["error"]["details"]["errors"]}
        assert "body.extra" in fields
        assert isinstance(kernel, Kernel)


async def test_handler_sees_the_principal_and_header_params() -> None:
    async with serve(Things, gateway=AUTH) as (_, client):
        r = await client.get(
            "/whoami", headers={**bearer(rs256(sub="grace", roles=["admin"])), "x-tenant": "t1"}
        )
        assert r.status_code == 200
        assert r.json() == {"id": "grace", "roles": ["admin"], "tenant": "t1"}


async def test_oversized_bodies_are_413_and_malformed_ones_422() -> None:
    async with serve(Things, gateway={"expose": ["things.*"], "max_body_bytes": 1024}) as (_, c):
        r = await c.post(
            "/api/things/add", content=b'{"a": 1, "b": 2, "pad": "' + b"x" * 5000 + b'"}'
        )
        assert r.status_code == 413

        async def chunks() -> Any:  # no Content-Length: the limit holds while streaming
            for _ in range(100):
                yield b"x" * 100

        r = await c.post("/api/things/add", content=chunks())
        assert r.status_code == 413
        for bad in (b"{", b"[1, 2]", b"\xff\xfe", b'"str"', b"[" * 100_000):
            r = await c.post("/api/things/add", content=bad)
            assert r.status_code in (413, 422), bad[:10]


async def test_http_middleware_wraps_calls_outermost_first() -> None:
    seen: list[str] = []

    async def outer(inv: Invocation, call_next: CallNext) -> Any:
        request: HttpCall = inv.request
        seen.append(f"outer {inv.kind} {request.method} {inv.target}")
        return await call_next(inv)

    async def double(inv: Invocation, call_next: CallNext) -> Any:
        seen.append("double")
        assert inv.params is not None
        inv.params["b"] = inv.params["b"] * 2
        return await call_next(inv)

    async with serve(Things, gateway={"expose": ["things.*"]}, middleware=[outer, double]) as (
        _,
        client,
    ):
        r = await client.post("/api/things/add", json={"a": 1, "b": 2})
        assert r.json() == 5
    assert seen == ["outer http POST things.add", "double"]


async def test_cors_preflight_and_headers() -> None:
    cors = {"cors": {"allow_origins": ["https://app.test"]}}
    async with serve(Things, gateway=cors) as (_, client):
        r = await client.options(
            "/things/1",
            headers={"origin": "https://app.test", "access-control-request-method": "GET"},
        )
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://app.test"
        r = await client.get("/things/1", headers={"origin": "https://evil.test"})
        assert "access-control-allow-origin" not in r.headers


async def test_gateway_starts_after_every_module_and_stops_first() -> None:
    async with serve(Things) as (kernel, _):
        assert kernel.check()[-1] == ["gateway"]


class _Stamp:
    """A raw ASGI middleware that stamps every response it sees."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def stamped(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message["headers"], (b"x-stamp", b"1")]
            await send(message)

        await self.app(scope, receive, send if scope["type"] != "http" else stamped)


async def test_routes_sharing_a_path_and_asgi_middleware_see_every_request() -> None:
    from starlette.middleware import Middleware

    async with serve(Things, gateway=AUTH) as (_, client):
        admin = bearer(rs256(roles=["admin"]))
        assert (await client.get("/things/1")).json()["id"] == 1  # the first route on the path
        assert (await client.delete("/things/1", headers=admin)).status_code == 200  # the second
        assert "x-stamp" not in (await client.get("/things/1")).headers
    async with serve(Things, asgi_middleware=[Middleware(_Stamp)]) as (_, client):
        for r in (
            await client.get("/things/1"),
            await client.get("/nowhere"),
            await client.put("/things/1"),
        ):
            assert r.headers["x-stamp"] == "1", r.status_code
