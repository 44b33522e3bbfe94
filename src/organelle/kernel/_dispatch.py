"""Local dispatch: running a handler as a direct await, with a deadline, through middleware.

The hot path starts the handler coroutine by hand (``coro.send(None)``): most
handlers finish without ever suspending, and then no timer, task or copy is
made at all. Only a handler that really suspends gets its deadline armed, and
it goes on running in the caller's task exactly as a plain ``await`` would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from types import CoroutineType
from typing import Any, Literal, Protocol

from organelle._coro import Continuation
from organelle.errors import CallTimeoutError

__all__ = [
    "CallNext",
    "Continuation",
    "Invocation",
    "Middleware",
    "build_chain",
    "run_chain",
    "run_until",
]

_monotonic = time.monotonic


async def run_until(
    coro: Coroutine[Any, Any, Any], first: Any, deadline: float | None, target: str
) -> Any:
    """Finish a suspended handler, raising ``CallTimeoutError`` at the deadline."""
    if deadline is None:
        return await Continuation(coro, first)
    remaining = deadline - _monotonic()
    if remaining <= 0:
        coro.close()
        raise CallTimeoutError(f"call to {target!r} timed out", details={"target": target})
    timeout = asyncio.timeout(remaining)
    try:
        async with timeout:
            return await Continuation(coro, first)
    except TimeoutError:
        if timeout.expired():
            raise CallTimeoutError(
                f"call to {target!r} timed out", details={"target": target}
            ) from None
        raise


class Invocation:
    """What middleware sees: one RPC call or one event delivery.

    Attributes:
        kind: ``"rpc"``, ``"event"``, ``"job"`` (a durable job being run) or
            ``"stream"`` (a durable stream record being consumed).
        target: ``"module.method"`` for RPC, the topic for an event.
        module: the name of the module whose handler runs.
        params: RPC parameters as given by the caller (before validation).
        payload: the event payload (``None`` for RPC).
        context: the request context of this call or event.
    """

    __slots__ = ("context", "handler", "kind", "module", "params", "payload", "target")

    def __init__(  # noqa: PLR0917 - built on the hot path, positional on purpose
        self,
        kind: Literal["rpc", "event", "job", "stream"],
        target: str,
        module: str,
        params: dict[str, Any] | None,
        payload: Any,
        context: Any,
        handler: Callable[[Invocation], Awaitable[Any]],
    ) -> None:
        self.kind = kind
        self.target = target
        self.module = module
        self.params = params
        self.payload = payload
        self.context = context
        self.handler = handler

    def __repr__(self) -> str:
        return f"Invocation({self.kind}, {self.target!r}, module={self.module!r})"


CallNext = Callable[[Invocation], Awaitable[Any]]


class Middleware(Protocol):
    """Cross-cutting behaviour around every RPC call and event delivery.

    The same onion shape for both kinds; check ``inv.kind`` to tell them apart::

        async def timing(inv: Invocation, call_next: CallNext) -> Any:
            started = time.perf_counter()
            try:
                return await call_next(inv)
            finally:
                record(inv.target, time.perf_counter() - started)
    """

    def __call__(self, inv: Invocation, call_next: CallNext, /) -> Awaitable[Any]:
        """Run the rest of the chain (or not) and return its result."""
        ...


def _terminal(inv: Invocation) -> Awaitable[Any]:
    # A plain function: the handler's own coroutine is what middleware awaits.
    return inv.handler(inv)


def build_chain(middlewares: list[Middleware]) -> CallNext | None:
    """Compose middleware outermost-first; ``None`` when there is none (the fast path)."""
    if not middlewares:
        return None
    chain: CallNext = _terminal
    for mw in reversed(middlewares):
        chain = _link(mw, chain)
    return chain


def run_chain(chain: CallNext, inv: Invocation) -> Coroutine[Any, Any, Any]:
    """Start ``chain`` on ``inv`` as a coroutine (the kernel steps it by hand)."""
    aw = chain(inv)
    if type(aw) is CoroutineType:
        return aw

    async def wrap() -> Any:
        return await aw

    return wrap()


def _link(mw: Middleware, call_next: CallNext) -> CallNext:
    def run(inv: Invocation) -> Awaitable[Any]:
        return mw(inv, call_next)

    return run
