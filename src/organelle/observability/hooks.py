"""Hooks that blocks outside the kernel call to report what only they can see.

The jobs engine reports enqueues and outcomes and lends a backlog probe; a
transport reports reconnects. Both find the hooks of their kernel with
``hooks_for(kernel)``; until metrics are installed the hooks do nothing, so
callers never check. Stdlib only: importing this costs nothing.

Example (jobs engine)::

    hooks = hooks_for(kernel)
    hooks.jobs.enqueued("inventory.reindex")
    hooks.backlog = self.depths          # async () -> {queue: depth}
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

__all__ = ["BacklogProbe", "Hooks", "JobEvents", "TransportEvents", "hooks_for"]


class JobEvents(Protocol):
    """What the jobs engine reports; ``job`` is ``"module.function"`` (bounded, never an id)."""

    def enqueued(self, job: str) -> None:
        """A job was accepted (durably)."""
        ...

    def succeeded(self, job: str, duration_s: float) -> None:
        """A run finished."""
        ...

    def failed(self, job: str, duration_s: float) -> None:
        """A run raised (it may be retried)."""
        ...

    def retried(self, job: str) -> None:
        """A failed job was scheduled again."""
        ...

    def dead(self, job: str) -> None:
        """A job used up its attempts and went to the dead letters."""
        ...


class TransportEvents(Protocol):
    """What a transport reports about its connection."""

    def disconnected(self) -> None:
        """The connection to the broker was lost."""
        ...

    def reconnected(self) -> None:
        """The connection came back."""
        ...


BacklogProbe = Callable[[], Awaitable[Mapping[str, int]]]
"""Returns the depth of every job queue: ``{queue: jobs waiting}``."""


class _Nothing:
    """Accepts every report and does nothing: the hooks before metrics are installed."""

    def enqueued(self, job: str) -> None: ...
    def succeeded(self, job: str, duration_s: float) -> None: ...
    def failed(self, job: str, duration_s: float) -> None: ...
    def retried(self, job: str) -> None: ...
    def dead(self, job: str) -> None: ...
    def disconnected(self) -> None: ...
    def reconnected(self) -> None: ...


class Hooks:
    """The hooks of one kernel; attributes are swapped when metrics are installed.

    Attributes:
        jobs: receives job events.
        transport: receives connection events.
        backlog: set by the jobs engine; read by metrics and the backlog health check.
    """

    __slots__ = ("__weakref__", "backlog", "jobs", "transport")

    def __init__(self) -> None:
        self.jobs: JobEvents = _Nothing()
        self.transport: TransportEvents = _Nothing()
        self.backlog: BacklogProbe | None = None


_HOOKS: weakref.WeakKeyDictionary[object, Hooks] = weakref.WeakKeyDictionary()


def hooks_for(kernel: object) -> Hooks:
    """The hooks of ``kernel`` (made on first use, gone with the kernel)."""
    hooks = _HOOKS.get(kernel)
    if hooks is None:
        hooks = _HOOKS[kernel] = Hooks()
    return hooks
