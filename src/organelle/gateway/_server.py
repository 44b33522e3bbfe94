"""uvicorn inside the kernel's event loop, started and stopped like any module resource.

We drive ``uvicorn.Server`` ourselves (``startup`` / ``main_loop`` /
``shutdown``) instead of ``serve()``, which would take over SIGINT/SIGTERM
from the organelle CLI. The listening socket is bound first, so port 0 gives
a free port that is known before the first request, and a port in use fails
``on_start`` with a clear error.

The server is started in an empty ``contextvars`` context: request tasks
must not inherit the context of the hook that started the server, or every
request would look like a nested call of that hook to the kernel.
"""

from __future__ import annotations

import asyncio
import contextvars
import socket
from typing import Any

import uvicorn

__all__ = ["HttpServer"]


class HttpServer:
    """One uvicorn server on a socket of its own."""

    def __init__(self, app: Any, host: str, port: int, *, log_level: str = "warning") -> None:
        self.config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="off",
            access_log=False,
            log_level=log_level,
            server_header=False,
            timeout_graceful_shutdown=5,
        )
        self.server = uvicorn.Server(self.config)
        self.socket: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        if self.socket is None:
            return 0
        return int(self.socket.getsockname()[1])

    async def start(self) -> None:
        """Bind, listen and start accepting connections.

        Raises:
            OSError: the address cannot be bound.
        """
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.config.host, self.config.port))
            sock.listen(self.config.backlog)
            sock.setblocking(False)  # noqa: FBT003 - socket API
        except OSError as exc:
            sock.close()
            raise OSError(
                exc.errno, f"cannot listen on {self.config.host}:{self.config.port}: {exc.strerror}"
            ) from exc
        self.socket = sock
        self.config.load()
        self.server.lifespan = self.config.lifespan_class(self.config)
        loop = asyncio.get_running_loop()
        empty = contextvars.Context()
        await loop.create_task(self.server.startup(sockets=[sock]), context=empty)
        self._task = loop.create_task(self.server.main_loop(), context=empty)

    async def stop(self) -> None:
        """Stop accepting, finish in-flight requests (bounded), close the socket."""
        task, self._task = self._task, None
        if task is None:
            return
        self.server.should_exit = True
        await task
        await self.server.shutdown(sockets=None)
        if self.socket is not None:
            self.socket.close()
            self.socket = None
