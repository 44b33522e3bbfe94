"""``LockLease``: a held lock, renewed in the background, and ``acquire`` to wait for one.

The backend (``Locks``) only grants, renews and releases; this file adds what
every backend shares:

* waiting: ``acquire`` retries with jittered backoff (2 ms doubling up to
  ``poll_s``) and never sleeps past the holder's expiry, so a lock whose
  holder died is taken within about ``poll_s`` of its TTL running out;
* renewal: a task renews every ``ttl_s / 3``; a failed renewal is retried
  until the lease's local deadline;
* loss: the local deadline is ``ttl_s`` after the last *successful* renewal
  was sent, less ``ttl_s / 10`` for clock drift between nodes, so a holder
  believes itself lost before the Store can give the lock to anyone else.
  ``lease.lost`` turns true then (or at once when a renewal finds the lock
  taken), ``lease.check()`` raises ``LeaseLostError``, ``wait_lost()`` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from types import TracebackType
from typing import TYPE_CHECKING

from organelle.errors import LeaseLostError, LockTimeoutError
from organelle.locks.base import Grant, Holder
from organelle.storage.base import bad

if TYPE_CHECKING:
    from organelle.locks.base import Locks

__all__ = ["LockContext", "LockLease", "acquire"]

log = logging.getLogger("organelle.locks")

_FIRST_DELAY_S = 0.002


class LockLease:
    """One held lock: ``token`` for fenced writes, ``lost`` / ``check()`` for safety, ``release()``.

    Made by ``acquire`` (or ``kernel.lock`` / ``Module.lock``), never directly.
    """

    __slots__ = (
        "_deadline",
        "_grant",
        "_is_lost",
        "_locks",
        "_lost",
        "_released",
        "_renewal",
        "_timer",
        "ttl_s",
    )

    def __init__(self, locks: Locks, grant: Grant, *, ttl_s: float, sent_at: float) -> None:
        self._locks = locks
        self._grant = grant
        self.ttl_s = ttl_s
        self._deadline = sent_at + ttl_s * 0.9
        self._is_lost = False
        self._lost: asyncio.Event | None = None  # made by the first wait_lost()
        self._released = False
        self._timer: asyncio.TimerHandle | None = None
        self._renewal: asyncio.Future[None] | None = None

    @property
    def name(self) -> str:
        """The lock's name."""
        return self._grant.name

    @property
    def owner(self) -> str:
        """Who holds it (this node)."""
        return self._grant.owner

    @property
    def token(self) -> int:
        """The fencing token: larger than every earlier holder's of this lock."""
        return self._grant.token

    @property
    def lost(self) -> bool:
        """Whether the lease may no longer be exclusive (taken, released, or past its deadline)."""
        if not self._is_lost and time.monotonic() >= self._deadline:
            self._set_lost()
        return self._is_lost

    def _set_lost(self) -> None:
        self._is_lost = True
        if self._lost is not None:
            self._lost.set()

    def check(self) -> None:
        """Raise ``LeaseLostError`` if the lease is lost; call before acting on what it guards."""
        if self.lost:
            raise LeaseLostError(
                f"lock {self.name!r}: lease with token {self.token} is lost",
                details={"lock": self.name, "token": self.token},
            )

    async def wait_lost(self) -> None:
        """Return once the lease is lost (or released)."""
        if self._lost is None:
            self._lost = asyncio.Event()
            if self.lost:
                self._lost.set()
        await self._lost.wait()

    async def release(self) -> None:
        """Stop renewing and give the lock up; idempotent, never raises for a lost lease."""
        if self._released:
            return
        self._released = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._renewal is not None:  # let it land: its revision is the one to release at
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewal
        was_lost = self.lost
        self._set_lost()
        if not was_lost:
            await self._locks.release(self._grant)

    # Renewal runs off a timer, not a task sleeping in a loop: a lock held for
    # a moment then costs a timer handle, not a task to create and cancel.
    def _schedule(self, delay_s: float) -> None:
        left = max(0.0, self._deadline - time.monotonic())
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(min(delay_s, left), self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self._released:
            return
        if self.lost:
            log.warning("lock %r: lease with token %s ran past its deadline", self.name, self.token)
            return
        self._renewal = asyncio.ensure_future(self._renew())

    async def _renew(self) -> None:
        sent = time.monotonic()
        try:
            grant = await asyncio.wait_for(
                self._locks.renew(self._grant, ttl_s=self.ttl_s),
                timeout=max(0.001, self._deadline - sent),
            )
        except LeaseLostError:
            log.warning("lock %r: lease with token %s was lost", self.name, self.token)
            self._set_lost()
            return
        except Exception as exc:  # any failure is retried until the deadline
            # The Store is slow or away: keep trying until the deadline says lost.
            log.warning("lock %r: renewal failed (%s), retrying", self.name, exc)
            if not self._released:
                self._schedule(self.ttl_s / 10)
            return
        finally:
            self._renewal = None
        self._grant = grant
        self._deadline = sent + self.ttl_s * 0.9
        if not self._released:
            self._schedule(self.ttl_s / 3)


async def acquire(
    locks: Locks,
    name: str,
    *,
    owner: str,
    ttl_s: float = 10.0,
    timeout_s: float | None = None,
    poll_s: float = 0.1,
) -> LockLease:
    """Wait for ``name`` and hold it: renewed in the background until ``release()``.

    Args:
        locks: the backend.
        name: the lock's name.
        owner: who is asking (shown to others as the holder).
        ttl_s: how long the lock outlives a holder that stopped renewing (died).
        timeout_s: give up after this long (``0``: one try); ``None`` waits forever.
        poll_s: the longest pause between two tries.

    Raises:
        LockTimeoutError: still held by someone else after ``timeout_s``.
        ValidationError: ``ttl_s`` or ``poll_s`` not positive.
    """
    for field, value in (("ttl_s", ttl_s), ("poll_s", poll_s)):
        if not value > 0:
            raise bad(field, f"lock {name!r}: {field} must be positive, got {value!r}")
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    delay = _FIRST_DELAY_S
    while True:
        sent = time.monotonic()
        got = await locks.try_acquire(name, owner=owner, ttl_s=ttl_s)
        if isinstance(got, Grant):
            lease = LockLease(locks, got, ttl_s=ttl_s, sent_at=sent)
            lease._schedule(ttl_s / 3)  # renewals, started by the lease's maker
            return lease
        pause = _pause(delay, got)
        delay = min(delay * 2, poll_s)
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LockTimeoutError(
                    f"lock {name!r} is still held by {got.owner!r} after {timeout_s} s",
                    details={"lock": name, "timeout_s": timeout_s},
                )
            pause = min(pause, left)
        await asyncio.sleep(pause)


def _pause(delay: float, holder: Holder) -> float:
    pause = delay * random.uniform(0.5, 1.5)  # noqa: S311 - jitter, not security
    if holder.expires_at is not None:  # wake when a dead holder's lease ends, not later
        pause = min(pause, max(0.0, holder.expires_at - time.time()) + 0.001)
    return pause


class LockContext:
    """``async with`` form of ``acquire``: yields the ``LockLease``, releases it on exit.

    Leaving the block normally after the lease was lost raises
    ``LeaseLostError``: what the block did may have overlapped another holder.
    """

    def __init__(
        self,
        locks: Locks,
        name: str,
        *,
        owner: str,
        ttl_s: float = 10.0,
        timeout_s: float | None = None,
        poll_s: float = 0.1,
    ) -> None:
        self._locks, self._name, self._owner = locks, name, owner
        self._ttl_s, self._timeout_s, self._poll_s = ttl_s, timeout_s, poll_s
        self._lease: LockLease | None = None

    async def __aenter__(self) -> LockLease:
        self._lease = await acquire(
            self._locks,
            self._name,
            owner=self._owner,
            ttl_s=self._ttl_s,
            timeout_s=self._timeout_s,
            poll_s=self._poll_s,
        )
        return self._lease

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        lease, self._lease = self._lease, None
        if lease is None:
            return
        lost = lease.lost
        await lease.release()
        if lost and exc_type is None:
            lease.check()  # released and lost: raises LeaseLostError
