"""Leader election: ``@leader`` marks a module method that runs on one instance in the cluster.

Every instance of the module campaigns for the lock ``leader.<module>.<method>``
(``campaign``); the holder runs the method, the others wait. The lease is
renewed in the background; when it is lost the method is cancelled and the
instance campaigns again, and when the leader dies another instance takes
over once its TTL has run out. Each change of leader takes a new lock holding,
so the fencing token (``Leadership.token``) grows on every change.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

from organelle.errors import DefinitionError
from organelle.locks.lease import LockLease, acquire

if TYPE_CHECKING:
    from organelle.locks.base import Locks

__all__ = ["LeaderSpec", "Leadership", "campaign", "leader", "leader_spec"]

log = logging.getLogger("organelle.locks")

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

_ATTR = "__organelle_leader__"


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaderSpec:
    """What ``@leader`` declared: the lease TTL and an optional lock name."""

    ttl_s: float = 10.0
    name: str | None = None


@dataclass(slots=True, kw_only=True)
class Leadership:
    """This node's view of one election, for ``kernel.leaders()``.

    Attributes:
        name: the election's lock name.
        leading: whether this node leads now.
        token: the fencing token of this node's current (or last) leadership; 0 if never.
        since: Unix time this node became leader (``None`` while following).
        terms: how many times this node has become leader.
    """

    name: str
    leading: bool = False
    token: int = 0
    since: float | None = None
    terms: int = 0


@overload
def leader(fn: F, /) -> F: ...
@overload
def leader(*, ttl_s: float = 10.0, name: str | None = None) -> Callable[[F], F]: ...
def leader(
    fn: F | None = None, /, *, ttl_s: float = 10.0, name: str | None = None
) -> F | Callable[[F], F]:
    """Run this ``async def`` method on one instance of the module in the cluster.

    Example::

        class Billing(Module):
            name = "billing"

            @leader(ttl_s=5)
            async def close_invoices(self) -> None:
                while True:
                    await self.close_due()
                    await asyncio.sleep(60)

    The method takes no argument, or one: the leadership's ``LockLease`` (its
    ``token`` for fenced writes). It starts once the module is active and wins the election; it is
    cancelled when leadership is lost or the module stops. Returning keeps the
    leadership (others stay followers); raising gives it up for another
    instance, and this one campaigns again. ``name`` overrides the lock name
    (``leader.<module>.<method>``); ``ttl_s`` bounds the failover time.

    Raises:
        DefinitionError: not an ``async def``, or ``ttl_s`` not positive.
    """
    if not ttl_s > 0:
        raise DefinitionError(f"@leader: ttl_s must be positive, got {ttl_s!r}")

    def mark(func: F) -> F:
        if not inspect.iscoroutinefunction(cast("Any", func)):
            raise DefinitionError(f"@leader {func.__qualname__}: must be an async def method")
        if len(inspect.signature(func).parameters) not in {1, 2}:
            raise DefinitionError(
                f"@leader {func.__qualname__}: takes self and at most one argument (the lease)"
            )
        setattr(func, _ATTR, LeaderSpec(ttl_s=ttl_s, name=name))
        return func

    return mark if fn is None else mark(fn)


def leader_spec(obj: object) -> LeaderSpec | None:
    """The ``LeaderSpec`` of a method marked with ``@leader``, else ``None``."""
    spec = getattr(obj, _ATTR, None)
    return spec if isinstance(spec, LeaderSpec) else None


async def campaign(
    locks: Locks,
    state: Leadership,
    run: Callable[[LockLease], Awaitable[object]],
    *,
    owner: str,
    ttl_s: float,
    poll_s: float = 0.1,
    retry_s: float = 1.0,
) -> None:
    """Campaign for ``state.name`` forever, running ``run(lease)`` while leading; cancel to stop."""
    while True:
        try:
            lease = await acquire(locks, state.name, owner=owner, ttl_s=ttl_s, poll_s=poll_s)
        except asyncio.CancelledError:
            raise
        except Exception:  # the Store is away: try again later, never crash the module
            log.exception("election %r: campaign failed, retrying", state.name)
            await asyncio.sleep(retry_s)
            continue
        failed = await _lead(lease, state, run)
        if failed:
            await asyncio.sleep(retry_s)  # let another instance take it


async def _lead(
    lease: LockLease, state: Leadership, run: Callable[[LockLease], Awaitable[object]]
) -> bool:
    state.leading, state.token, state.since = True, lease.token, time.time()
    state.terms += 1
    log.info("election %r: leading with token %s", state.name, lease.token)
    task = asyncio.ensure_future(run(lease))
    lost = asyncio.ensure_future(lease.wait_lost())
    failed = False
    try:
        await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
        if task.done() and not task.cancelled() and task.exception() is not None:
            failed = True
            log.error("election %r: leader task failed", state.name, exc_info=task.exception())
        elif task.done():
            await lost  # finished: keep leading until lost or stopped
        return failed
    finally:
        state.leading, state.since = False, None
        for pending in (task, lost):
            pending.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        with contextlib.suppress(asyncio.CancelledError):
            await lost
        with contextlib.suppress(Exception):
            await lease.release()
        log.info("election %r: stopped leading (token %s)", state.name, lease.token)
