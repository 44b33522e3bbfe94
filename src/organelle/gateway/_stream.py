"""Server-sent events: events whose topic matches a client's patterns, streamed to it.

The gateway module subscribes once (``@on(">", delivery="broadcast")``, so
every gateway node sees every event) and the hub fans each event out to the
connected clients whose patterns match it *and* the configured allow-list.
A client that falls ``queue_size`` events behind is disconnected rather than
slowing the event bus down: the bus never waits for a browser.

SSE is plain HTTP, so it goes through the same authentication
(``Authorization`` header), rate limits and proxies as every route. The same
hub also feeds WebSocket clients (``_websocket.py``), who can change their
topics while connected.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import msgspec

from organelle.codec import _enc_hook
from organelle.errors import ForbiddenError, ValidationError
from organelle.gateway._endpoint import Receive, Scope, Send, send_json
from organelle.gateway._errors import error_response
from organelle.gateway._runtime import require_roles
from organelle.module._topics import matches, pattern_error

if TYPE_CHECKING:
    from organelle.auth.rbac import Rbac
    from organelle.gateway._runtime import Runtime
    from organelle.gateway.config import StreamConfig

__all__ = ["END", "MAX_PATTERNS", "Client", "EventHub", "StreamEndpoint", "check_patterns"]

END = object()
MAX_PATTERNS = 32


class Client:
    """One connected stream: its topic patterns and its bounded queue of ``(topic, json)``."""

    __slots__ = ("patterns", "queue")

    def __init__(self, patterns: tuple[str, ...], size: int) -> None:
        self.patterns = patterns
        self.queue: asyncio.Queue[Any] = asyncio.Queue(size)


class EventHub:
    """Fans events out to streaming clients without ever blocking the emitter."""

    def __init__(self, allowed: list[str], queue_size: int) -> None:
        self.allowed = tuple(allowed)
        self.queue_size = queue_size
        self.clients: set[Client] = set()
        self._encode = msgspec.json.Encoder(enc_hook=_enc_hook).encode

    def publish(self, topic: str, payload: Any) -> None:
        """Queue ``(topic, payload)`` for every client that may and wants to see it."""
        if not self.clients or not any(matches(p, topic) for p in self.allowed):
            return
        frame: tuple[str, bytes] | None = None
        for client in list(self.clients):
            if any(matches(p, topic) for p in client.patterns):
                if frame is None:
                    try:
                        data = self._encode(payload)
                    except (TypeError, ValueError, NotImplementedError):
                        data = b"null"
                    frame = (topic, data)
                try:
                    client.queue.put_nowait(frame)
                except asyncio.QueueFull:
                    self._drop(client)

    def _drop(self, client: Client) -> None:
        self.clients.discard(client)
        while not client.queue.empty():
            client.queue.get_nowait()
        client.queue.put_nowait(END)

    def close(self) -> None:
        """End every stream (the gateway is stopping)."""
        for client in list(self.clients):
            self._drop(client)


class StreamEndpoint:
    """``GET <path>?topics=order.*,inventory.>`` → ``text/event-stream``."""

    def __init__(self, rt: Runtime, hub: EventHub, config: StreamConfig, rbac: Rbac | None) -> None:
        self.rt = rt
        self.hub = hub
        self.config = config
        self.roles = frozenset(config.roles)
        self.rbac = rbac

    def _patterns(self, query_string: bytes) -> tuple[str, ...]:
        if not self.hub.allowed:
            raise ForbiddenError("no topics are open for streaming")
        raw = [v for k, v in parse_qsl(query_string.decode("latin-1")) if k == "topics"]
        patterns = tuple(p for value in raw for p in value.split(",") if p)
        if not patterns:
            raise ValidationError(
                "give 1 to 32 topic patterns as ?topics=a.*,b.>",
                errors=[{"field": "topics", "message": "1 to 32 patterns"}],
            )
        return check_patterns(patterns)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            principal = await self.rt.authenticate(scope, headers)
            require_roles(principal, self.roles, self.rbac, "the event stream")
            client = Client(self._patterns(scope["query_string"]), self.hub.queue_size)
        except Exception as exc:
            status, extra, body = error_response(exc)
            await send_json(send, status, body, extra)
            return
        await self._stream(client, receive, send)

    async def _stream(self, client: Client, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-store"),
                    (b"x-accel-buffering", b"no"),
                ],
            }
        )
        self.hub.clients.add(client)
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            await send(
                {"type": "http.response.body", "body": b": connected\n\n", "more_body": True}
            )
            while not gone.done():
                getter = asyncio.ensure_future(client.queue.get())
                done, _ = await asyncio.wait(
                    {getter, gone},
                    timeout=self.config.heartbeat_s,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if getter not in done:
                    getter.cancel()
                    if not gone.done():
                        await send(
                            {"type": "http.response.body", "body": b": ping\n\n", "more_body": True}
                        )
                    continue
                frame = getter.result()
                if frame is END:
                    break
                topic, data = frame
                body = b"event: " + topic.encode() + b"\ndata: " + data + b"\n\n"
                await send({"type": "http.response.body", "body": body, "more_body": True})
            if not gone.done():
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client went away mid-write
        finally:
            self.hub.clients.discard(client)
            gone.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gone


def check_patterns(patterns: tuple[str, ...]) -> tuple[str, ...]:
    """At most ``MAX_PATTERNS`` valid topic patterns, else ``ValidationError``."""
    if len(patterns) > MAX_PATTERNS:
        raise ValidationError(
            f"at most {MAX_PATTERNS} topic patterns per stream",
            errors=[{"field": "topics", "message": f"1 to {MAX_PATTERNS} patterns"}],
        )
    for pattern in patterns:
        reason = pattern_error(pattern) if isinstance(pattern, str) else "not a string"
        if reason is not None:
            raise ValidationError(reason, errors=[{"field": "topics", "message": reason}])
    return patterns


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
