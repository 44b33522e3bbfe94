"""The dedup inbox: which event ids each idempotent consumer has handled, in the Store.

An idempotent handler (``@on(..., idempotent=True)``, and ``@consume`` by
default) asks the inbox before it runs and records the id once it returns,
so an event delivered twice — a producer that retried with the same
deterministic id, a redelivery after a crash — has its effect once. Entries
live ``[kernel] inbox_window_s`` (a Store TTL), so the inbox does not grow
for ever; a repeat later than the window runs again.

Rows are ``_inbox.<consumer>.<digest of the id>`` (any id a foreign producer
sends fits every backend's key rules). Ids this process recorded are also
kept in a bounded in-memory set, so a burst of repeats costs no Store read;
a miss there always asks the Store, which all nodes share.

Where the Store has transactions (memory, SQLite, PostgreSQL) the check,
the handler and the inbox row are one transaction: the handler's own Store
writes (``self.store``, which joins the current transaction) commit with the
row or not at all, so a crash at any moment leaves either both or neither —
the effect happens exactly once. On NATS KV (no transactions) the row is
written after the handler returns: a crash between the two runs the handler
again on redelivery (at-least-once).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from organelle.errors import TransactionUnsupportedError

if TYPE_CHECKING:
    from organelle.storage import Store

__all__ = ["StoreInbox"]

_NAMESPACE = "_inbox"
_REMEMBERED = 16_384  # ids kept in memory per process


def inbox_key(consumer: str, event_id: str) -> str:
    """The Store key of one consumer's record of one event."""
    import hashlib  # loaded on first use, not with the kernel

    digest = hashlib.blake2b(event_id.encode(), digest_size=16).hexdigest()
    return f"{_NAMESPACE}.{consumer}.{digest}"


class StoreInbox:
    """The inbox over the kernel's Store (opened on first use)."""

    def __init__(self, store: Callable[[], Store], window_s: Callable[[], float]) -> None:
        self._store = store
        self._window_s = window_s
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._atomic: bool | None = None  # learnt on first use: does the Store have transactions?

    async def once(
        self, consumer: str, event_id: str, coro: Coroutine[Any, Any, Any]
    ) -> tuple[bool, Any]:
        """Run ``coro`` unless ``consumer`` handled ``event_id``: ``(ran, result)``.

        ``coro`` is closed unstarted when the event is a repeat.
        """
        key = inbox_key(consumer, event_id)
        if key in self._recent:
            coro.close()
            return False, None
        store = self._store()
        if self._atomic is not False:
            entered = False
            try:
                async with store.transaction() as tx:
                    entered = True
                    self._atomic = True
                    if await tx.get(key) is not None:
                        coro.close()
                        return False, None
                    result = await coro
                    await tx.put(key, 1, ttl_s=self._window_s())
                    tx.on_end(lambda committed: committed and self.remember(key))
            except TransactionUnsupportedError:
                if entered:
                    raise
                self._atomic = False
            else:
                return True, result
        try:
            seen = await store.get(key) is not None
        except BaseException:
            coro.close()
            raise
        if seen:
            coro.close()
            return False, None
        result = await coro
        await store.put(key, 1, ttl_s=self._window_s())
        self.remember(key)
        return True, result

    async def seen(self, consumer: str, event_id: str) -> bool:
        """Whether ``consumer`` handled ``event_id`` within the window."""
        key = inbox_key(consumer, event_id)
        if key in self._recent:
            return True
        return await self._store().get(key) is not None

    async def record(self, consumer: str, event_id: str) -> None:
        """Remember that ``consumer`` handled ``event_id`` (for the window)."""
        key = inbox_key(consumer, event_id)
        await self._store().put(key, 1, ttl_s=self._window_s())
        self.remember(key)

    def remember(self, key: str) -> bool:
        """Keep ``key`` in the bounded in-memory set of recorded ids."""
        recent = self._recent
        recent[key] = None
        if len(recent) > _REMEMBERED:
            recent.popitem(last=False)
        return True
