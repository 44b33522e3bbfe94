"""Events over WebSocket: the same hub and allow-list as the SSE stream, topics changeable live.

Protocol (JSON text frames; each request gets its answer)::

    → {"op": "subscribe", "topics": ["order.*"]}    ← {"op": "subscribed", "topics": [...]}
    → {"op": "unsubscribe", "topics": ["order.*"]}  ← {"op": "subscribed", "topics": [...]}
    → {"op": "ping"}                                 ← {"op": "pong"}
    → anything malformed                             ← {"op": "error", "error": {code, message}}
    and, for each matching allowed event:            ← {"op": "event", "topic": …, "payload": …}

Authentication happens before the handshake is accepted, with the gateway's
usual credentials: an ``Authorization`` header, or — because browsers cannot
set headers on a WebSocket — ``?access_token=<token>`` in the URL (keep such
URLs out of access logs). A refused client is accepted and closed at once with
4401 (no or bad credentials) or 4403 (missing role), which a browser can read. A client
that falls ``queue_size`` events behind is closed with 1013 (try again later):
the event bus never waits for a slow socket.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import msgspec

from organelle.errors import (
    ForbiddenError,
    OrganelleError,
    UnauthenticatedError,
    ValidationError,
)
from organelle.gateway._endpoint import Receive, Scope, Send
from organelle.gateway._runtime import require_roles
from organelle.gateway._stream import END, Client, EventHub, check_patterns

if TYPE_CHECKING:
    from organelle.auth.rbac import Rbac
    from organelle.gateway._runtime import Runtime
    from organelle.gateway.config import StreamConfig

__all__ = ["WebSocketEndpoint"]

MAX_MESSAGE = 64 * 1024
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TRY_AGAIN = 1013

_decode = msgspec.json.Decoder(dict[str, Any]).decode
_encode = msgspec.json.encode


def _error(exc: OrganelleError) -> str:
    return _encode({"op": "error", "error": {"code": exc.code, "message": str(exc)}}).decode()


class WebSocketEndpoint:
    """``<path>`` (default ``/events/ws``): subscribe to allowed topics and receive events."""

    def __init__(self, rt: Runtime, hub: EventHub, config: StreamConfig, rbac: Rbac | None) -> None:
        self.rt = rt
        self.hub = hub
        self.config = config
        self.roles = frozenset(config.roles)
        self.rbac = rbac

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        code = await self._admit(scope)
        await send({"type": "websocket.accept"})
        if code is not None:  # accepted first, so a browser can read why
            await send({"type": "websocket.close", "code": code})
            return
        client = Client((), self.hub.queue_size)
        self.hub.clients.add(client)
        reader = asyncio.ensure_future(self._read(client, receive, send))
        try:
            await self._write(client, reader, send)
        finally:
            self.hub.clients.discard(client)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await reader

    async def _admit(self, scope: Scope) -> int | None:
        """Authenticate and authorize the handshake; a close code when refused."""
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        token = query.get("access_token")
        if token and "authorization" not in headers:
            headers["authorization"] = f"Bearer {token}"
        if not self.hub.allowed:
            return CLOSE_FORBIDDEN  # no topics are open for streaming
        try:
            principal = await self.rt.authenticate(scope, headers)
            require_roles(principal, self.roles, self.rbac, "the event stream")
        except UnauthenticatedError:
            return CLOSE_UNAUTHENTICATED
        except ForbiddenError:
            return CLOSE_FORBIDDEN
        return None

    async def _read(self, client: Client, receive: Receive, send: Send) -> None:
        """Apply the client's messages until it disconnects (then end the writer)."""
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                raw = message.get("bytes") or b""
                text = raw.decode("utf-8", "replace")
            try:
                reply = self._apply(client, text)
            except OrganelleError as exc:
                reply = _error(exc)
            await send({"type": "websocket.send", "text": reply})

    def _apply(self, client: Client, text: str) -> str:
        if len(text) > MAX_MESSAGE:
            raise ValidationError(f"messages are limited to {MAX_MESSAGE} bytes")
        try:
            msg = _decode(text)
        except msgspec.DecodeError:
            raise ValidationError("messages must be JSON objects") from None
        op = msg.get("op")
        if op == "ping":
            return '{"op":"pong"}'
        if op not in ("subscribe", "unsubscribe"):
            raise ValidationError(
                "op must be subscribe, unsubscribe or ping",
                errors=[{"field": "op", "message": "unknown op"}],
            )
        topics = msg.get("topics")
        if not isinstance(topics, list) or not topics:
            raise ValidationError(
                "topics must be a non-empty list of patterns",
                errors=[{"field": "topics", "message": "expected a list"}],
            )
        asked = check_patterns(tuple(topics))
        if op == "subscribe":  # too many in all: refused, the old set stays
            client.patterns = check_patterns(tuple(dict.fromkeys((*client.patterns, *asked))))
        else:
            client.patterns = tuple(p for p in client.patterns if p not in asked)
        return _encode({"op": "subscribed", "topics": list(client.patterns)}).decode()

    async def _write(self, client: Client, reader: asyncio.Future[None], send: Send) -> None:
        """Send queued events until the client goes, lags too far, or the gateway stops."""
        while not reader.done():
            getter = asyncio.ensure_future(client.queue.get())
            done, _ = await asyncio.wait(
                {getter, reader},
                timeout=self.config.heartbeat_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if getter not in done:
                getter.cancel()
                continue
            frame = getter.result()
            if frame is END:
                if client not in self.hub.clients and not reader.done():  # dropped: too slow
                    await send({"type": "websocket.close", "code": CLOSE_TRY_AGAIN})
                return
            topic, data = frame
            text = b'{"op":"event","topic":' + _encode(topic) + b',"payload":' + data + b"}"
            await send({"type": "websocket.send", "text": text.decode()})
