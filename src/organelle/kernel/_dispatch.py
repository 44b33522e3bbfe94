"""The invocation pipeline: one ``Invocation``, one onion, one place that sets the context.

Every unit of work the kernel runs — an RPC call served here or sent to
another node, an event delivery, a job run, a stream record, an HTTP request
(the gateway builds those) — is an ``Invocation``. ``build_chain`` composes
middleware into one onion and ``run_invocation`` runs an invocation through
it with its context set, and resets the context after: the only place that
does so for anything but the two inline fast paths (a local call with no
middleware in ``Dispatcher.python_call`` or in C, and an event delivery with
no middleware), which do the same by hand.

The call paths start the coroutine by hand (``coro.send(None)``): most
handlers finish without ever suspending, and then no timer, task or copy is
made at all. Only a handler that really suspends gets its deadline armed, and
it goes on running in the caller's task exactly as a plain ``await`` would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Literal, Protocol

from organelle._coro import Continuation
from organelle.context import Context, _current
from organelle.errors import CallTimeoutError

__all__ = [
    "CallNext",
    "Continuation",
    "Invocation",
    "Kind",
    "Middleware",
    "build_chain",
    "run_invocation",
    "run_until",
]

_monotonic = time.monotonic


async def run_until(
    coro: Coroutine[Any, Any, Any],
    first: Any,
    deadline: float | None,
    target: str,
    ctx: Context | None = None,
) -> Any:
    """Finish a suspended handler, raising ``CallTimeoutError`` at the deadline.

    ``ctx``: set before each of its steps (see ``Continuation``).
    """
    if deadline is None:
        return await Continuation(coro, first, ctx)
    remaining = deadline - _monotonic()
    if remaining <= 0:
        coro.close()
        raise CallTimeoutError(f"call to {target!r} timed out", details={"target": target})
    timeout = asyncio.timeout(remaining)
    try:
        async with timeout:
            return await Continuation(coro, first, ctx)
    except TimeoutError:
        if timeout.expired():
            raise CallTimeoutError(
                f"call to {target!r} timed out", details={"target": target}
            ) from None
        raise


Kind = Literal["rpc", "event", "job", "stream", "http"]


class Invocation:
    """What middleware sees: one unit of work on its way to its handler.

    Attributes:
        kind: ``"rpc"`` (a call, served here or — ``remote`` — sent to another
            node), ``"event"`` (one delivery to one handler), ``"job"`` (a durable
            job being run), ``"stream"`` (a durable stream record being consumed)
            or ``"http"`` (a gateway request on its way to the RPC it routes to).
        target: ``"module.method"`` for RPC and HTTP, the job name for a job,
            the topic for an event, the stream for a record.
        module: the module whose handler runs (for a remote call: serves it).
        params: RPC, job or HTTP parameters (HTTP: bound from the request and
            mutable, so middleware may add or change some); ``None`` otherwise.
        payload: the event's or record's payload (``None`` otherwise).
        context: the request context the handler runs in (set while the chain runs).
        remote: ``True`` for a call leaving this node (its handler sends it).
        request: for ``"http"``, the request's facts — the gateway's ``HttpCall``
            (method, path, headers, client, principal, route, ``state``).
    """

    __slots__ = (
        "context",
        "handler",
        "kind",
        "module",
        "params",
        "payload",
        "remote",
        "request",
        "target",
    )

    def __init__(  # noqa: PLR0917 - built on the hot path, positional on purpose
        self,
        kind: Kind,
        target: str,
        module: str,
        params: dict[str, Any] | None,
        payload: Any,
        context: Any,
        handler: Callable[[Invocation], Awaitable[Any]],
        remote: bool = False,
        request: Any = None,
    ) -> None:
        self.kind = kind
        self.target = target
        self.module = module
        self.params = params
        self.payload = payload
        self.context = context
        self.handler = handler
        self.remote = remote
        self.request = request

    def __repr__(self) -> str:
        where = ", remote" if self.remote else ""
        return f"Invocation({self.kind}, {self.target!r}, module={self.module!r}{where})"


CallNext = Callable[[Invocation], Awaitable[Any]]


class Middleware(Protocol):
    """Cross-cutting behaviour around every call, delivery, job, record and HTTP request.

    The same onion shape for every kind; check ``inv.kind`` to tell them apart::

        async def timing(inv: Invocation, call_next: CallNext) -> Any:
            started = time.perf_counter()
            try:
                return await call_next(inv)
            finally:
                record(inv.kind, inv.target, time.perf_counter() - started)
    """

    def __call__(self, inv: Invocation, call_next: CallNext, /) -> Awaitable[Any]:
        """Run the rest of the chain (or not) and return its result."""
        ...


def _terminal(inv: Invocation) -> Awaitable[Any]:
    # A plain function: the handler's own coroutine is what middleware awaits.
    return inv.handler(inv)


def build_chain(middlewares: Sequence[Middleware]) -> CallNext | None:
    """Compose middleware outermost-first; ``None`` when there is none (the fast path)."""
    if not middlewares:
        return None
    chain: CallNext = _terminal
    for mw in reversed(middlewares):
        chain = _link(mw, chain)
    return chain


async def run_invocation(chain: CallNext | None, inv: Invocation) -> Any:
    """Run ``inv`` through ``chain`` (or straight to its handler) in its context.

    The context is set for the whole run and reset after, whatever happens.
    A coroutine: the call paths start it by hand and finish it only if it
    suspends.
    """
    token = _current.set(inv.context)
    try:
        if chain is None:
            return await inv.handler(inv)
        return await chain(inv)
    finally:
        _current.reset(token)


def _link(mw: Middleware, call_next: CallNext) -> CallNext:
    def run(inv: Invocation) -> Awaitable[Any]:
        return mw(inv, call_next)

    return run
