"""The request context: ids, deadline, principal and meta that flow with a call.

A ``Context`` is made for every RPC call and every emitted event and lives in a
``contextvars.ContextVar``, so it follows the work across ``await`` without being
passed by hand. A call or emit made inside a handler gets a child context: a new
``request_id``, the parent's as ``causation_id``, the root's as
``correlation_id``, and a deadline never later than the parent's.

Ids are a per-process random prefix plus a counter, formatted only when read:
making a context on the hot path costs an object, not a uuid. The fields live
in C (``organelle._speedups.ContextBase``) when the extension is built, else in
a msgspec Struct; both are built in C, and the methods below serve both.
"""

from __future__ import annotations

import itertools
import os
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import msgspec

from organelle._native import speedups

__all__ = ["Context", "context", "current_context"]

_PREFIX = os.urandom(6).hex() + "-"
_counter = itertools.count(1)  # shared with the C call path
_next_seq = _counter.__next__
_monotonic = time.monotonic

_current: ContextVar[Context | None] = ContextVar("organelle_context", default=None)

_EMPTY_META: dict[str, Any] = {}


def _fmt(ident: int | str | None) -> str | None:
    if ident is None or isinstance(ident, str):
        return ident
    return f"{_PREFIX}{ident:x}"


class _ContextAPI:
    """What a handler knows about the request it is serving.

    One is made per call and per event, so its fields are stored in C.

    Attributes:
        seq: the raw request id (a counter locally, a string from the wire).
        deadline: absolute ``time.monotonic()`` instant after which the work is
            abandoned, or ``None`` for no deadline.
        corr: raw correlation id (``None``: this is the root).
        cause: raw causation id (``None``: nothing caused this).
        principal: who made the request (``None`` when anonymous or internal).
        meta: free-form keys propagated to nested calls and events (and, over a
            transport, in headers). Treat it as read-only; pass ``meta=`` to
            ``call_with`` / ``emit`` to add keys for your own nested work.
        topic: the event topic when serving an event, else ``None``.
    """

    __slots__ = ()

    seq: int | str
    deadline: float | None
    corr: int | str | None
    cause: int | str | None
    principal: Any
    meta: dict[str, Any]
    topic: str | None

    @property
    def request_id(self) -> str:
        """Unique id of this call or event."""
        return _fmt(self.seq)  # type: ignore[return-value]

    @property
    def correlation_id(self) -> str:
        """Id shared by every call and event that one outside request caused."""
        return _fmt(self.seq if self.corr is None else self.corr)  # type: ignore[return-value]

    @property
    def causation_id(self) -> str | None:
        """Id of the call or event whose handler made this one, if any."""
        return _fmt(self.cause)

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
        return Context(
            _next_seq(),
            deadline,
            self.seq if self.corr is None else self.corr,
            self.seq,
            self.principal if principal is None else principal,
            self.meta if meta is None else {**self.meta, **meta},
            topic,
        )

    def _fields(self) -> tuple[Any, ...]:
        return (
            self.seq,
            self.deadline,
            self.corr,
            self.cause,
            self.principal,
            self.meta,
            self.topic,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _ContextAPI):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable, like a dataclass

    def __repr__(self) -> str:
        names = ("seq", "deadline", "corr", "cause", "principal", "meta", "topic")
        inner = ", ".join(f"{n}={v!r}" for n, v in zip(names, self._fields(), strict=True))
        return f"Context({inner})"


if TYPE_CHECKING or speedups is None:

    class Context(_ContextAPI, msgspec.Struct, gc=False):
        """The request context (fields in a msgspec Struct: the pure Python build)."""

        seq: int | str
        deadline: float | None = None
        corr: int | str | None = None
        cause: int | str | None = None
        principal: Any = None
        meta: dict[str, Any] = msgspec.field(default_factory=dict)
        topic: str | None = None

else:

    class Context(_ContextAPI, speedups.ContextBase):
        """The request context (fields stored in C)."""

        __slots__ = ()


def root_context(
    deadline: float | None = None,
    *,
    meta: dict[str, Any] | None = None,
    principal: Any = None,
    topic: str | None = None,
) -> Context:
    """Return a fresh context with no parent (an outside request)."""
    return Context(
        _next_seq(), deadline, None, None, principal, _EMPTY_META if meta is None else meta, topic
    )


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
