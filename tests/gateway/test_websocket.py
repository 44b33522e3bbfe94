"""Events over WebSocket: auth before anything, live topic changes, the allow-list, bad input."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets

from tests.gateway.apps import RBAC, RS256_AUTH, Things, bearer, rs256, serve

GATEWAY = {
    "auth": RS256_AUTH,
    "rbac": RBAC,
    "stream": {"roles": ["reader"], "topics": ["things.>"]},
}


async def recv(ws: Any) -> dict[str, Any]:
    msg: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 5))
    return msg


async def ask(ws: Any, message: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps(message))
    return await recv(ws)


async def test_subscribe_receive_unsubscribe() -> None:
    async with serve(Things, gateway=GATEWAY) as (kernel, client):
        url = str(client.base_url).replace("http", "ws", 1) + "/events/ws"
        token = bearer(rs256())["authorization"].split()[1]
        async with websockets.connect(f"{url}?access_token={token}") as ws:
            reply = await ask(ws, {"op": "subscribe", "topics": ["things.*", "other.*"]})
            assert reply == {"op": "subscribed", "topics": ["things.*", "other.*"]}
            await kernel.emit("other.hidden", {"n": 0})  # wanted, but not allowed
            await kernel.emit("things.created", {"n": 1})
            await kernel.emit("things.deep.nested", {"n": 2})  # allowed, not wanted
            await kernel.drain()
            assert await recv(ws) == {"op": "event", "topic": "things.created", "payload": {"n": 1}}
            reply = await ask(ws, {"op": "unsubscribe", "topics": ["things.*"]})
            assert reply == {"op": "subscribed", "topics": ["other.*"]}
            await kernel.emit("things.created", {"n": 3})  # no longer wanted
            await kernel.drain()
            assert await ask(ws, {"op": "ping"}) == {"op": "pong"}
            await ask(ws, {"op": "subscribe", "topics": ["things.deep.>"]})
            await kernel.emit("things.deep.marker", {"n": 4})
            await kernel.drain()
            event = await recv(ws)
            assert event["payload"] == {"n": 4}  # nothing from while unsubscribed came first


async def test_bad_messages_get_typed_errors_and_the_socket_stays() -> None:
    async with serve(Things, gateway=GATEWAY) as (_kernel, client):
        url = str(client.base_url).replace("http", "ws", 1) + "/events/ws"
        async with websockets.connect(url, additional_headers=bearer(rs256())) as ws:
            for bad in ("not json", json.dumps([1]), json.dumps({"op": "fly"})):
                await ws.send(bad)
                reply = await recv(ws)
                assert reply["op"] == "error"
                assert reply["error"]["code"] == "organelle.validation"
            reply = await ask(ws, {"op": "subscribe", "topics": ["a..b"]})
            assert reply["op"] == "error"
            reply = await ask(ws, {"op": "subscribe", "topics": [f"t{i}.*" for i in range(33)]})
            assert reply["op"] == "error"
            assert await ask(ws, {"op": "ping"}) == {"op": "pong"}


@pytest.mark.parametrize(
    ("headers", "code"),
    [({}, 4401), ({"authorization": "Bearer forged"}, 4401)],
)
async def test_unauthenticated_clients_are_closed(headers: dict[str, str], code: int) -> None:
    async with serve(Things, gateway=GATEWAY) as (_kernel, client):
        url = str(client.base_url).replace("http", "ws", 1) + "/events/ws"
        async with websockets.connect(url, additional_headers=headers) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == code


async def test_a_client_without_the_role_is_closed_4403() -> None:
    gateway = {**GATEWAY, "stream": {"roles": ["admin"], "topics": ["things.>"]}}
    async with serve(Things, gateway=gateway) as (_kernel, client):
        url = str(client.base_url).replace("http", "ws", 1) + "/events/ws"
        async with websockets.connect(url, additional_headers=bearer(rs256())) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 4403


async def test_a_client_too_far_behind_is_closed_1013() -> None:
    gateway = {**GATEWAY, "stream": {"roles": ["reader"], "topics": ["things.>"], "queue_size": 2}}
    async with serve(Things, gateway=gateway) as (kernel, client):
        url = str(client.base_url).replace("http", "ws", 1) + "/events/ws"
        async with websockets.connect(url, additional_headers=bearer(rs256())) as ws:
            await ask(ws, {"op": "subscribe", "topics": ["things.>"]})
            for n in range(50):  # one dispatcher pass: the socket cannot keep up
                await kernel.emit("things.flood", {"n": n})
            await kernel.drain()
            with pytest.raises(websockets.ConnectionClosed) as closed:
                for _ in range(60):  # bounded: at most every event, then the close
                    await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1013
