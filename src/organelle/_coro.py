"""Continuing a coroutine that was started by hand.

The kernel and the transports start a handler with ``coro.send(None)`` so a
handler that finishes at once costs no task or timer; one that suspends is
handed to ``Continuation``, which goes on driving it exactly as ``await`` would.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any

__all__ = ["Continuation"]


class Continuation:
    """Awaitable that continues a coroutine already started with ``send(None)``.

    ``first`` is what the coroutine yielded on its first step (a future, or
    ``None`` for a bare yield); it is handed to the running task, which then
    drives the coroutine exactly as ``await coro`` would have.
    """

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro = self.coro
        value = self.first
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value
