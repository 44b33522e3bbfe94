"""Fenced writes: a Store value that refuses a write stamped with an older lock token.

A lease can end without its holder noticing in time (a long pause, a
partition): the next holder gets a larger fencing token, and a resource that
remembers the largest token it has seen refuses the old holder's late writes.
``fenced_put`` keeps ``{"token", "value"}`` under the key and writes only when
the caller's token is at least the stored one, in one compare-and-set (retried
when another writer moved the key in between)::

    async with self.lock("ledger") as lease:
        await fenced_put(self.store, "ledger.head", head, token=lease.token)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from organelle.errors import ConflictError, FencedError

if TYPE_CHECKING:
    from organelle.storage.base import Store

__all__ = ["fenced_get", "fenced_put"]

_ATTEMPTS = 50  # writers racing on one fenced key; each lost race means another one wrote


async def fenced_put(
    store: Store, key: str, value: Any, *, token: int, ttl_s: float | None = None
) -> int:
    """Write ``value`` under ``key`` unless a larger token has written it; return the revision.

    Raises:
        FencedError: the key was last written with a larger token (this holder's lease is gone).
        ConflictError: the key kept changing under ``_ATTEMPTS`` tries in a row.
    """
    for _ in range(_ATTEMPTS):
        entry = await store.get(key)
        current = _token(entry.value) if entry is not None else 0
        if current > token:
            raise FencedError(
                f"fenced write to {key!r} refused: token {token} is older than {current}",
                details={"key": key, "token": token, "current": current},
            )
        record = {"token": token, "value": value}
        try:
            return await store.compare_and_set(
                key, record, revision=None if entry is None else entry.revision, ttl_s=ttl_s
            )
        except ConflictError:
            continue
    raise ConflictError(
        f"fenced write to {key!r}: the key kept changing", details={"key": key, "token": token}
    )


async def fenced_get(store: Store, key: str) -> tuple[Any, int] | None:
    """Return ``(value, token)`` written by ``fenced_put``, or ``None`` when absent."""
    entry = await store.get(key)
    if entry is None:
        return None
    record = entry.value if isinstance(entry.value, dict) else {}
    return record.get("value"), _token(record)


def _token(record: Any) -> int:
    token = record.get("token", 0) if isinstance(record, dict) else 0
    return int(token) if isinstance(token, int) else 0
