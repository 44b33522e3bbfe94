"""A tiny HTTP/1.1 server for probes and scrapes: GET only, one request per connection.

Probes and Prometheus send a handful of small GETs; for that an ASGI stack
would cost more import time and memory than everything else in ops. The
server reads one request line and its headers (bounded in size and time),
answers with ``Content-Length`` and ``Connection: close``, and never lets a
handler error take it down (``500`` instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

__all__ = ["Handler", "OpsServer", "Response"]

log = logging.getLogger("organelle.ops")

_MAX_HEADER_BYTES = 16 * 1024
_READ_TIMEOUT_S = 5.0
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            500: "Internal Server Error", 503: "Service Unavailable"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Response:
    """What a handler returns."""

    status: int
    body: bytes
    content_type: str = "application/json"


Handler = Callable[[], Awaitable[Response]]


class OpsServer:
    """Serves ``routes`` (path → handler) on ``host:port``; port 0 picks a free one.

    Example::

        server = OpsServer({"/health/live": live}, host="127.0.0.1", port=0)
        await server.start()
        print(server.port)
    """

    def __init__(self, routes: Mapping[str, Handler], *, host: str, port: int) -> None:
        self.routes = dict(routes)
        self.host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound port (after ``start``)."""
        if self._server is not None and self._server.sockets:
            port: int = self._server.sockets[0].getsockname()[1]
            return port
        return self._port

    async def start(self) -> None:
        """Bind and start accepting."""
        try:
            self._server = await asyncio.start_server(
                self._accept, self.host, self._port, limit=_MAX_HEADER_BYTES
            )
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot listen on {self.host}:{self._port}: {exc.strerror}"
            ) from exc
        log.info("ops server listening on http://%s:%d", self.host, self.port)

    async def stop(self) -> None:
        """Stop accepting and drop open connections."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
        try:
            response, head_only = await self._handle(reader)
            reason = _REASONS.get(response.status, "")
            head = (
                f"HTTP/1.1 {response.status} {reason}\r\n"
                f"Content-Type: {response.content_type}\r\n"
                f"Content-Length: {len(response.body)}\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
            ).encode("latin-1")
            writer.write(head if head_only else head + response.body)
            await writer.drain()
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            if task is not None:
                self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _handle(  # noqa: PLR0911 - one early answer per kind of bad request
        self, reader: asyncio.StreamReader
    ) -> tuple[Response, bool]:
        try:
            async with asyncio.timeout(_READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            return _text(400, "headers too large"), False
        if len(head) > _MAX_HEADER_BYTES:
            return _text(400, "headers too large"), False
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):  # noqa: PLR2004 - method, target, version
            return _text(400, "bad request line"), False
        method, target, _ = parts
        head_only = method == "HEAD"
        if method not in ("GET", "HEAD"):
            return _text(405, "only GET and HEAD"), False
        handler = self.routes.get(target.split("?", 1)[0])
        if handler is None:
            return _text(404, "not found"), head_only
        try:
            return await handler(), head_only
        except Exception:
            log.exception("ops handler for %s failed", target)
            return _text(500, "internal error"), head_only


def _text(status: int, message: str) -> Response:
    return Response(status, (message + "\n").encode(), "text/plain; charset=utf-8")
