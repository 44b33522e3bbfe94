"""Continuing a coroutine that was started by hand.

The kernel and the transports start a handler with ``coro.send(None)`` so a
handler that finishes at once costs no task or timer; one that suspends is
handed to ``Continuation``, which goes on driving it exactly as ``await`` would.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import TYPE_CHECKING, Any

from organelle.context import _current

if TYPE_CHECKING:
    from organelle.context import Context

__all__ = ["Continuation", "Unfinished"]


class Continuation:
    """Awaitable that continues a coroutine already started with ``send(None)``.

    ``first`` is what the coroutine yielded on its first step (a future, or
    ``None`` for a bare yield); it is handed to the running task, which then
    drives the coroutine exactly as ``await coro`` would have.

    ``ctx``: the request context set again before every step. A handler
    started by hand inside another's first step began its continuation
    before the outer one's: the outer one, starting later, sets its own
    context over it, so the inner handler would wake up in the outer context.
    """

    __slots__ = ("coro", "ctx", "first")

    def __init__(
        self, coro: Coroutine[Any, Any, Any], first: Any, ctx: Context | None = None
    ) -> None:
        self.coro = coro
        self.first = first
        self.ctx = ctx

    def __await__(self) -> Generator[Any, Any, Any]:
        coro = self.coro
        value = self.first
        ctx = self.ctx
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                if ctx is not None:
                    _current.set(ctx)
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                if ctx is not None:
                    _current.set(ctx)
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


class Unfinished(Coroutine[Any, Any, Any]):
    """The rest of a call whose handler already ran to its first suspension.

    ``rest`` is the coroutine that drives the handler on (context, deadline,
    errors). Awaited, it is ``rest`` itself. Wrapped in a task that is
    cancelled before its first step (``create_task(kernel.call(...))`` then
    ``cancel()``), a plain coroutine would die without running a line and
    leave the handler suspended until the garbage collector closes it; this
    one steps ``rest`` in first, so the cancellation reaches the handler where
    it waits — as it would have on the pure Python path.
    """

    __slots__ = ("_rest", "_started")

    def __init__(self, rest: Coroutine[Any, Any, Any]) -> None:
        self._rest = rest
        self._started = False

    def __await__(self) -> Generator[Any, Any, Any]:
        self._started = True
        return self._rest.__await__()

    def send(self, value: Any, /) -> Any:
        """Step on (a task driving this object)."""
        self._started = True
        return self._rest.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None, /) -> Any:
        """Raise in the handler where it waits, stepping in first if nothing ran yet."""
        if not self._started:
            self._started = True
            self._rest.send(None)  # yields the handler's wait; raising ends it here
        if val is None and tb is None:
            return self._rest.throw(typ)
        return self._rest.throw(typ, val, tb)  # pragma: no cover - the legacy form

    def close(self) -> None:
        """Close the rest (and with it the handler)."""
        self._rest.close()
