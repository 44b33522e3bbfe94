"""The ``Locks`` port: named leases with fencing tokens, one round trip per step.

A backend grants, renews and releases one holding of a named lock; waiting,
background renewal and loss detection sit above it (``organelle.locks.Lease``)
and are the same for every backend. The contract, checked by one suite in
``tests/contract/test_locks.py`` against every backend:

* at most one live ``Grant`` per name: a second ``try_acquire`` gets the
  ``Holder`` instead, until the grant is released or its ``ttl_s`` ran out;
* every grant of a name carries a larger ``token`` than every earlier one
  (a *fencing token*: a write stamped with it can be refused once a newer
  holder has written, see ``fenced_put``);
* ``renew`` succeeds only while the grant is still the current one, so a
  holder whose lease expired and was taken learns it (``LeaseLostError``);
* ``release`` of a grant that is no longer current changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["Grant", "Holder", "Locks"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Grant:
    """One holding of a lock, as the backend granted (or last renewed) it.

    Attributes:
        name: the lock's name.
        owner: who holds it (a node name; for people reading, not for safety).
        token: the fencing token, fixed for the whole holding.
        revision: the backend's revision of the lock record, moved by each renewal.
    """

    name: str
    owner: str
    token: int
    revision: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Holder:
    """Who holds a lock now, as seen by someone who does not.

    Attributes:
        name: the lock's name.
        owner: the holder's ``owner`` string.
        token: the holder's fencing token.
        expires_at: Unix time the holding ends unless renewed (``None``: unknown).
    """

    name: str
    owner: str
    token: int
    expires_at: float | None


@runtime_checkable
class Locks(Protocol):
    """Grant, renew and release named leases; see the module docstring for the contract."""

    async def try_acquire(self, name: str, *, owner: str, ttl_s: float) -> Grant | Holder:
        """Take the lock if nobody holds it: the ``Grant``, else the current ``Holder``."""
        ...

    async def renew(self, grant: Grant, *, ttl_s: float) -> Grant:
        """Extend the holding to ``ttl_s`` from now; return the renewed grant.

        Raises:
            LeaseLostError: the grant expired and the lock was taken, or released.
        """
        ...

    async def release(self, grant: Grant) -> bool:
        """Give the lock up; ``False`` if the grant was no longer current."""
        ...

    async def holder(self, name: str) -> Holder | None:
        """Who holds ``name`` now, or ``None`` when it is free."""
        ...
