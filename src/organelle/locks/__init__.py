"""Locks and leader election on the Store: leases with fencing tokens.

``async with kernel.lock("name", ttl_s=10) as lease:`` (or ``self.lock`` in a
module) waits for a named lock, renews it in the background and releases it
on exit; ``lease.token`` grows with every holding, for fenced writes
(``fenced_put``). ``@leader`` runs a module method on one instance in the
cluster. The locks live in the kernel's Store (same URL on every node), so
SQLite serves one machine and PostgreSQL or NATS KV a cluster. See
``docs/locks.md``.
"""

from __future__ import annotations

from organelle.errors import FencedError, LeaseLostError, LockTimeoutError
from organelle.locks.base import Grant, Holder, Locks
from organelle.locks.fencing import fenced_get, fenced_put
from organelle.locks.leader import Leadership, LeaderSpec, campaign, leader, leader_spec
from organelle.locks.lease import LockContext, LockLease, acquire
from organelle.locks.store import StoreLocks

__all__ = [
    "FencedError",
    "Grant",
    "Holder",
    "LeaderSpec",
    "Leadership",
    "LeaseLostError",
    "LockContext",
    "LockLease",
    "LockTimeoutError",
    "Locks",
    "StoreLocks",
    "acquire",
    "campaign",
    "fenced_get",
    "fenced_put",
    "leader",
    "leader_spec",
]
