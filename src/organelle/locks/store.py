"""``StoreLocks``: the ``Locks`` port on any ``Store`` (SQLite, PostgreSQL, NATS KV, memory).

One key per lock (``_lock.<name>``) holds ``{"owner", "token"}`` with the
lease's TTL. Every step is one compare-and-set on that key's revision, which
each backend makes atomic across processes (SQLite's write lock, PostgreSQL's
row lock, JetStream's expected-last-subject-sequence), and expiry is the
Store's own: an expired key reads as absent on every backend. The fencing
token is the Store revision of the acquiring write: revisions only grow per
store, so each holding of a name gets a larger token than the one before,
whichever process took it.

A release does not delete the key (the Store has no conditional delete): it
writes a *free* record (``owner`` ``None``) in the same compare-and-set, and
remembers its revision, so this process's next acquire of the name is again a
single compare-and-set. A free record expires after ``free_ttl_s``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from organelle.errors import ConflictError, LeaseLostError
from organelle.locks.base import Grant, Holder

if TYPE_CHECKING:
    from organelle.storage.base import Entry, Store

__all__ = ["StoreLocks"]

_ATTEMPTS = 3  # compare-and-set races lost in a row before reporting the winner as holder


class StoreLocks:
    """Locks kept in a ``Store``; the Store stays the caller's to close.

    Args:
        store: any Store; the same one every contender opens (same URL).
        prefix: key prefix of the lock records.
        free_ttl_s: how long a released lock's free record stays.
    """

    def __init__(self, store: Store, *, prefix: str = "_lock.", free_ttl_s: float = 3600.0) -> None:
        self.store = store
        self.prefix = prefix
        self.free_ttl_s = free_ttl_s
        self._free: dict[str, int] = {}  # name -> revision of a free record this process saw

    async def try_acquire(self, name: str, *, owner: str, ttl_s: float) -> Grant | Holder:
        """Take ``name`` with one compare-and-set when it is free; else report who holds it."""
        key, record = self.prefix + name, {"owner": owner}
        expected = self._free.pop(name, -1)
        for _ in range(_ATTEMPTS):
            if expected >= 0:
                try:
                    rev = await self.store.compare_and_set(
                        key, record, revision=expected or None, ttl_s=ttl_s
                    )
                except ConflictError:
                    pass
                else:
                    return Grant(name=name, owner=owner, token=rev, revision=rev)
            entry = await self.store.get(key)
            held = _holder(name, entry)
            if held is not None:
                return held
            expected = 0 if entry is None else entry.revision
        entry = await self.store.get(key)
        return _holder(name, entry) or Holder(name=name, owner="", token=0, expires_at=None)

    async def renew(self, grant: Grant, *, ttl_s: float) -> Grant:
        """Rewrite the record at the grant's revision with a fresh TTL."""
        record = {"owner": grant.owner, "token": grant.token}
        try:
            rev = await self.store.compare_and_set(
                self.prefix + grant.name, record, revision=grant.revision, ttl_s=ttl_s
            )
        except ConflictError:
            raise _lost(grant) from None
        return Grant(name=grant.name, owner=grant.owner, token=grant.token, revision=rev)

    async def release(self, grant: Grant) -> bool:
        """Write the free record at the grant's revision (nothing if it moved on)."""
        record = {"owner": None, "token": grant.token}
        try:
            rev = await self.store.compare_and_set(
                self.prefix + grant.name, record, revision=grant.revision, ttl_s=self.free_ttl_s
            )
        except ConflictError:
            return False
        self._free[grant.name] = rev
        return True

    async def holder(self, name: str) -> Holder | None:
        """Read the record: its holder, or ``None`` when absent, expired or free."""
        return _holder(name, await self.store.get(self.prefix + name))


def _holder(name: str, entry: Entry | None) -> Holder | None:
    if entry is None:
        return None
    value: Any = entry.value
    owner = value.get("owner") if isinstance(value, dict) else None
    if owner is None:
        return None
    token = value.get("token") or entry.revision  # the first write's revision is its token
    return Holder(name=name, owner=str(owner), token=int(token), expires_at=entry.expires_at)


def _lost(grant: Grant) -> LeaseLostError:
    return LeaseLostError(
        f"lock {grant.name!r}: lease with token {grant.token} expired and was taken or released",
        details={"lock": grant.name, "token": grant.token},
    )
