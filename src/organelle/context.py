"""The request context: ids, deadline, principal and meta that flow with a call.

A ``Context`` is made for every RPC call and every emitted event and lives in a
``contextvars.ContextVar``, so it follows the work across ``await`` without being
passed by hand. A call or emit made inside a handler gets a child context: a new
``request_id``, the parent's as ``causation_id``, the root's as
``correlation_id``, and a deadline never later than the parent's.

Ids are a per-process random prefix plus a counter, formatted only when read:
making a context on the hot path costs an object, not a uuid.
"""

from __future__ import annotations

import itertools
import os
import time
from contextvars import ContextVar
from typing import Any

__all__ = ["Context", "context", "current_context"]

_PREFIX = os.urandom(6).hex() + "-"
_next_seq = itertools.count(1).__next__
_monotonic = time.monotonic

_current: ContextVar[Context | None] = ContextVar("organelle_context", default=None)

_EMPTY_META: dict[str, Any] = {}


def _fmt(ident: int | str | None) -> str | None:
    if ident is None or isinstance(ident, str):
        return ident
    return f"{_PREFIX}{ident:x}"


class Context:
    """What a handler knows about the request it is serving.

    Attributes:
        deadline: absolute ``time.monotonic()`` instant after which the work is
            abandoned, or ``None`` for no deadline.
        principal: who made the request (``None`` when anonymous or internal).
        meta: free-form string keys propagated to nested calls and events
            (and, over a transport, in headers). Treat it as read-only; use
            ``with_meta`` to add keys for your own nested calls.
        topic: the event topic when serving an event, else ``None``.
    """

    __slots__ = ("_cause", "_corr", "_rid", "deadline", "meta", "principal", "topic")

    def __init__(
        self,
        *,
        request_id: int | str | None = None,
        correlation_id: int | str | None = None,
        causation_id: int | str | None = None,
        deadline: float | None = None,
        principal: Any = None,
        meta: dict[str, Any] | None = None,
        topic: str | None = None,
    ) -> None:
        self._rid: int | str = _next_seq() if request_id is None else request_id
        self._corr = correlation_id
        self._cause = causation_id
        self.deadline = deadline
        self.principal = principal
        self.meta: dict[str, Any] = _EMPTY_META if meta is None else meta
        self.topic = topic

    @property
    def request_id(self) -> str:
        """Unique id of this call or event."""
        return _fmt(self._rid)  # type: ignore[return-value]

    @property
    def correlation_id(self) -> str:
        """Id shared by every call and event that one outside request caused."""
        return _fmt(self._rid if self._corr is None else self._corr)  # type: ignore[return-value]

    @property
    def causation_id(self) -> str | None:
        """Id of the call or event whose handler made this one, if any."""
        return _fmt(self._cause)

    def remaining_s(self) -> float | None:
        """Seconds left before the deadline (may be negative), or ``None``."""
        if self.deadline is None:
            return None
        return self.deadline - _monotonic()

    def child(
        self,
        deadline: float | None,
        *,
        topic: str | None = None,
        meta: dict[str, Any] | None = None,
        principal: Any = None,
    ) -> Context:
        """Return the context for a call or event made while serving this one."""
        ctx = Context.__new__(Context)
        ctx._rid = _next_seq()
        ctx._corr = self._rid if self._corr is None else self._corr
        ctx._cause = self._rid
        ctx.deadline = deadline
        ctx.principal = self.principal if principal is None else principal
        ctx.meta = self.meta if meta is None else {**self.meta, **meta}
        ctx.topic = topic
        return ctx

    def with_meta(self, **meta: Any) -> Context:
        """Return a copy of this context with extra meta keys (same ids)."""
        ctx = Context.__new__(Context)
        ctx._rid, ctx._corr, ctx._cause = self._rid, self._corr, self._cause
        ctx.deadline, ctx.principal, ctx.topic = self.deadline, self.principal, self.topic
        ctx.meta = {**self.meta, **meta}
        return ctx

    def __repr__(self) -> str:
        return (
            f"Context(request_id={self.request_id!r}, correlation_id={self.correlation_id!r}, "
            f"causation_id={self.causation_id!r}, remaining_s={self.remaining_s()!r}, "
            f"principal={self.principal!r}, meta={self.meta!r}, topic={self.topic!r})"
        )


def root_context(
    deadline: float | None = None,
    *,
    meta: dict[str, Any] | None = None,
    principal: Any = None,
    topic: str | None = None,
) -> Context:
    """Return a fresh context with no parent (an outside request)."""
    ctx = Context.__new__(Context)
    ctx._rid = _next_seq()
    ctx._corr = None
    ctx._cause = None
    ctx.deadline = deadline
    ctx.principal = principal
    ctx.meta = _EMPTY_META if meta is None else meta
    ctx.topic = topic
    return ctx


def current_context() -> Context | None:
    """Return the context of the call or event being served, or ``None`` outside one."""
    return _current.get()


def context() -> Context:
    """Return the current request context.

    Outside any call or event handler this is a fresh root context with no
    deadline, so code can read ids unconditionally.
    """
    ctx = _current.get()
    return root_context() if ctx is None else ctx
