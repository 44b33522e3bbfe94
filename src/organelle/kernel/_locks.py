"""``LockHost``: the kernel's locks on its Store, and the binder of ``@leader`` methods.

``kernel.lock`` / ``Module.lock`` take leases from one ``StoreLocks`` on the
kernel's Store (``[kernel] storage``: the same URL on every node, so SQLite
coordinates the processes of one machine, PostgreSQL or NATS KV a cluster).
As a binder at the ``serve`` stage, it starts one election per ``@leader``
method once a module is active and stops it (cancelling the method and
releasing leadership) before the module's ``on_stop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from organelle.context import _current, root_context
from organelle.locks import (
    Holder,
    Leadership,
    LockContext,
    LockLease,
    StoreLocks,
    campaign,
    leader_spec,
)
from organelle.module import Module

if TYPE_CHECKING:
    from organelle.kernel._slots import Slot
    from organelle.locks.leader import LeaderSpec
    from organelle.storage.base import Store

__all__ = ["LockHost"]


class LockHost:
    """Locks on the kernel's Store; the ``leaders`` binder."""

    kind = "leaders"
    stage = "serve"

    def __init__(self, store: Callable[[], Store], owner: Callable[[], str]) -> None:
        self._store = store
        self._owner = owner
        self._locks: StoreLocks | None = None
        self._elections: dict[str, list[tuple[Leadership, asyncio.Task[None]]]] = {}

    @property
    def locks(self) -> StoreLocks:
        """The backend, made on first use (the Store opens lazily)."""
        store = self._store()
        if self._locks is None or self._locks.store is not store:
            self._locks = StoreLocks(store)
        return self._locks

    def lock(
        self, name: str, *, ttl_s: float = 10.0, timeout_s: float | None = None
    ) -> LockContext:
        """``async with``: wait for ``name``, hold it (renewed), release it on exit."""
        return LockContext(self.locks, name, owner=self._owner(), ttl_s=ttl_s, timeout_s=timeout_s)

    async def holder(self, name: str) -> Holder | None:
        """Who holds lock ``name`` anywhere in the cluster (``None``: free)."""
        return await self.locks.holder(name)

    def leaders(self) -> list[Leadership]:
        """This node's elections: one per ``@leader`` method of an active module."""
        return [state for running in self._elections.values() for state, _ in running]

    async def attach(self, slot: Slot) -> None:
        """Start campaigning for each ``@leader`` method of the slot's module."""
        instance = slot.instance
        running: list[tuple[Leadership, asyncio.Task[None]]] = []
        for attr, spec in _leader_methods(type(instance)):
            state = Leadership(name=spec.name or f"leader.{slot.name}.{attr}")
            # A fresh root context, as Module.spawn gives: not tied to the start.
            ctx = contextvars.copy_context()
            ctx.run(_current.set, root_context(None))
            task = asyncio.get_running_loop().create_task(
                campaign(
                    self.locks,
                    state,
                    _runner(getattr(instance, attr)),
                    owner=self._owner(),
                    ttl_s=spec.ttl_s,
                ),
                name=f"election-{state.name}",
                context=ctx,
            )
            running.append((state, task))
        if running:
            self._elections[slot.name] = running

    async def detach(self, slot: Slot) -> None:
        """Stop the slot's campaigns: leader methods cancelled, leadership released."""
        for _, task in self._elections.pop(slot.name, []):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _leader_methods(cls: type) -> tuple[tuple[str, LeaderSpec], ...]:
    """The ``@leader`` methods of a module class, found once per class.

    Only the classes below ``Module`` are read: ``inspect.getmembers`` over
    every attribute of ``Module`` too was a fifth of a trivial module's start.
    """
    cached = cls.__dict__.get("__organelle_leaders__")
    if cached is None:
        base = set(Module.__mro__)
        own = {name for klass in cls.__mro__ if klass not in base for name in vars(klass)}
        cached = tuple(
            (attr, spec)
            for attr in sorted(own)
            if (spec := leader_spec(getattr(cls, attr, None))) is not None
        )
        setattr(cls, "__organelle_leaders__", cached)  # noqa: B010 - a dunder name on purpose
    return cached


def _runner(method: Callable[..., Awaitable[object]]) -> Callable[[LockLease], Awaitable[object]]:
    """Call a bound ``@leader`` method with the lease if it takes one."""
    if inspect.signature(method).parameters:
        return method
    return lambda _lease: method()
