"""The private channel between a kernel and an isolated module's child process.

One end of a ``socketpair`` each; frames are a 4-byte big-endian length and a
MessagePack list (msgspec). Both ends are peers: either may call the other
(``call`` / ``result``) or send one-way messages (``event``, ``emit``,
``ready``). A socket, not the child's stdout, so a module that prints cannot
corrupt the stream.
"""

from __future__ import annotations

import asyncio
import itertools
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from organelle.codec import to_builtins
from organelle.errors import OrganelleError, UnavailableError

__all__ = ["Peer", "error_out"]

_LEN = struct.Struct(">I")
_MAX_FRAME = 64 << 20  # a frame larger than this is a broken peer, not a message

Handler = Callable[[list[Any]], Awaitable[Any]]


def error_out(exc: BaseException) -> dict[str, Any]:
    """An exception as the wire form ``OrganelleError.from_wire`` rebuilds."""
    if isinstance(exc, OrganelleError):
        return exc.to_wire()
    return {"code": "organelle.internal", "type": type(exc).__name__, "message": str(exc)}


def _unwrap(obj: Any) -> Any:
    # A secret in a config section: the channel is private to the two processes.
    reveal = getattr(obj, "get_secret_value", None)
    if reveal is not None:
        return reveal()
    return to_builtins(obj)


class Peer:
    """One end of the channel: framed send, a reader task, calls matched by id.

    ``on_call(target, params, timeout_s)`` answers the other side's calls;
    ``on_message(msg)`` gets every one-way message. When the stream ends,
    every call still waiting fails with ``UnavailableError``.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_call: Callable[[str, dict[str, Any], float | None], Awaitable[Any]],
        on_message: Callable[[list[Any]], Awaitable[None] | None],
        *,
        name: str,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._on_call = on_call
        self._on_message = on_message
        self._name = name
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._encoder = msgspec.msgpack.Encoder(enc_hook=_unwrap)
        self._decoder = msgspec.msgpack.Decoder()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._out: list[bytes] = []
        self.closed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._read(), name=f"organelle-{name}")

    def send(self, msg: list[Any]) -> None:
        """Queue one frame; the frames of one loop turn leave in one write (one syscall)."""
        if self.closed.is_set():
            raise UnavailableError(f"{self._name}: the channel is closed")
        body = self._encoder.encode(msg)
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(_LEN.pack(len(body)))
        self._out.append(body)

    def _flush(self) -> None:
        out, self._out = self._out, []
        if not self.closed.is_set():
            self._writer.write(b"".join(out))

    async def call(self, target: str, params: dict[str, Any], timeout_s: float | None) -> Any:
        """Call ``target`` on the other side; its error is raised here, rebuilt."""
        ident = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        try:
            self.send(["call", ident, target, params, timeout_s])
            return await future
        finally:
            self._waiting.pop(ident, None)

    async def _read(self) -> None:
        try:
            while True:
                head = await self._reader.readexactly(_LEN.size)
                (size,) = _LEN.unpack(head)
                if size > _MAX_FRAME:
                    break
                msg = self._decoder.decode(await self._reader.readexactly(size))
                self._handle(msg)
        except (asyncio.IncompleteReadError, ConnectionError, msgspec.DecodeError):
            pass
        finally:
            self._close()

    def _handle(self, msg: list[Any]) -> None:
        kind = msg[0]
        if kind == "result":
            future = self._waiting.get(msg[1])
            if future is not None and not future.done():
                if msg[2]:
                    future.set_result(msg[3])
                else:
                    future.set_exception(OrganelleError.from_wire(msg[3]))
        elif kind == "call":
            self._spawn(self._answer(msg[1], msg[2], msg[3], msg[4]))
        else:
            handled = self._on_message(msg)
            if handled is not None:
                self._spawn(handled)

    def _spawn(self, work: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(
        self, ident: int, target: str, params: dict[str, Any], timeout_s: float | None
    ) -> None:
        try:
            value = await self._on_call(target, params, timeout_s)
        except Exception as exc:
            reply = ["result", ident, False, error_out(exc)]
        else:
            reply = ["result", ident, True, value]
        if self.closed.is_set():
            return
        try:
            self.send(reply)
        except OrganelleError as exc:  # the value did not encode: say so instead
            self.send(["result", ident, False, error_out(exc)])

    def _close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        gone = UnavailableError(f"{self._name}: the isolated process is gone")
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(gone)
        self._writer.close()

    async def aclose(self) -> None:
        """Close the channel and wait for the reader and in-flight answers."""
        self._writer.close()
        self._task.cancel()
        tasks = [self._task, *self._tasks]
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._close()
