"""A request's W3C traceparent reaches the handler's context, so the call joins its trace."""

from __future__ import annotations

from typing import Any

import httpx

from organelle import Kernel, Module, context
from organelle.gateway import Gateway, route

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Echo(Module):
    name = "echo"

    @route.get("/meta")
    async def meta(self) -> dict[str, Any]:
        return dict(context().meta)


async def test_traceparent_header_flows_into_the_call() -> None:
    async with Kernel([Echo, Gateway], {"modules": {"gateway": {"port": 0}}}) as k:
        app = k.module("gateway").app  # type: ignore[attr-defined]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            traced = await client.get("/meta", headers={"traceparent": TRACEPARENT})
            bogus = await client.get("/meta", headers={"traceparent": "not-a-trace"})
    assert traced.json().get("traceparent") == TRACEPARENT
    assert "traceparent" not in bogus.json()
