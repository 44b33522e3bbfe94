"""``CachedStore``: an optional read-through cache in front of any ``Store``.

For hot keys read far more often than written (config, feature flags). Writes
made through the cache invalidate it at once; writes by other processes are
seen after at most ``ttl_s``, which is the staleness you accept by using it.
An entry's own expiry is always honoured: a cached key is never returned
past its ``expires_at``. Wrap a ``NamespacedStore`` to cache one module only.

Inside a transaction of the store underneath (opened through the cache or
not), reads go to the store and cache nothing, since the transaction may hold
writes of its own; the keys it writes are invalidated at once and again when
it ends. A transaction opened through the cache clears the whole cache when
it ends.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Self

from organelle.codec import convert
from organelle.storage._tx import current_tx
from organelle.storage.base import Entry, Page, Store, StoreTx, Watch, bad

__all__ = ["CachedStore"]


class CachedStore:
    """A ``Store`` that caches ``get`` results (hits and misses) for ``ttl_s``.

    Args:
        store: the store to read through; closed by ``close()``.
        ttl_s: how long a cached read is trusted.
        max_entries: least recently used entries are evicted past this.
    """

    def __init__(self, store: Store, *, ttl_s: float = 1.0, max_entries: int = 10_000) -> None:
        if ttl_s <= 0 or max_entries < 1:
            raise bad("ttl_s", "ttl_s and max_entries must be positive")
        self._store = store
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._cache: OrderedDict[str, tuple[float, Entry | None]] = OrderedDict()
        self._gen = 0
        self.hits = 0
        self.misses = 0

    @property
    def store(self) -> Store:
        """The store underneath."""
        return self._store

    def invalidate(self, *keys: str) -> None:
        """Forget ``keys`` (all keys when none are given)."""
        self._gen += 1
        if not keys:
            self._cache.clear()
        for key in keys:
            self._cache.pop(key, None)

    def _drop(self, key: str) -> None:
        # Bumping the generation stops a read that started before this write
        # from caching the value it saw.
        self._gen += 1
        self._cache.pop(key, None)

    def _wrote(self, *keys: str) -> None:
        """Invalidate ``keys`` now, and when the transaction they were written in ends."""
        for key in keys:
            self._drop(key)
        tx = current_tx(self._store)
        if tx is not None:

            def again(_committed: bool) -> None:
                for key in keys:
                    self._drop(key)

            tx.on_end(again)

    def _cached(self, key: str) -> tuple[bool, Entry | None]:
        hit = self._cache.get(key)
        if hit is None or hit[0] <= time.monotonic():
            return False, None
        entry = hit[1]
        if entry is not None and entry.expires_at is not None and entry.expires_at <= time.time():
            return True, None
        self._cache.move_to_end(key)
        return True, entry

    async def get(self, key: str, *, type: Any = None) -> Entry | None:  # noqa: A002 - mirrors codec.decode(target)
        """Return the entry from the cache, or read it through and cache it."""
        if current_tx(self._store) is not None:  # may see the transaction's own writes
            return await self._store.get(key, type=type)
        found, entry = self._cached(key) if isinstance(key, str) else (False, None)
        if found:
            self.hits += 1
        else:
            self.misses += 1
            gen = self._gen
            entry = await self._store.get(key)
            if gen == self._gen:
                self._cache[key] = (time.monotonic() + self.ttl_s, entry)
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        if entry is None or type is None:
            return entry
        return Entry(
            key=entry.key,
            value=convert(entry.value, type),
            revision=entry.revision,
            expires_at=entry.expires_at,
        )

    async def put(self, key: str, value: Any, *, ttl_s: float | None = None) -> int:
        """Write through and invalidate ``key``."""
        try:
            return await self._store.put(key, value, ttl_s=ttl_s)
        finally:
            self._wrote(key)

    async def delete(self, key: str) -> bool:
        """Delete through and invalidate ``key``."""
        try:
            return await self._store.delete(key)
        finally:
            self._wrote(key)

    async def get_many(self, keys: Iterable[str]) -> dict[str, Entry]:
        """Read through without caching (bulk reads are rarely hot)."""
        return await self._store.get_many(keys)

    async def put_many(
        self, items: Mapping[str, Any], *, ttl_s: float | None = None
    ) -> dict[str, int]:
        """Write through and invalidate the keys."""
        try:
            return await self._store.put_many(items, ttl_s=ttl_s)
        finally:
            self._wrote(*items)

    async def delete_many(self, keys: Iterable[str]) -> int:
        """Delete through and invalidate the keys."""
        wanted = [keys] if isinstance(keys, str) else list(keys)
        try:
            return await self._store.delete_many(keys if isinstance(keys, str) else wanted)
        finally:
            self._wrote(*wanted)

    async def scan(self, prefix: str = "", *, limit: int = 100, cursor: str | None = None) -> Page:
        """Scan the store directly."""
        return await self._store.scan(prefix, limit=limit, cursor=cursor)

    async def compare_and_set(
        self, key: str, value: Any, *, revision: int | None, ttl_s: float | None = None
    ) -> int:
        """Compare-and-set through the store (never against the cache)."""
        try:
            return await self._store.compare_and_set(key, value, revision=revision, ttl_s=ttl_s)
        finally:
            self._wrote(key)

    async def incr(self, key: str, by: int = 1) -> int:
        """Increment through the store and invalidate ``key``."""
        try:
            return await self._store.incr(key, by)
        finally:
            self._wrote(key)

    def watch(self, prefix: str = "") -> Watch:
        """Watch the store directly."""
        return self._store.watch(prefix)

    def transaction(self) -> AbstractAsyncContextManager[StoreTx]:
        """The store's transaction; the cache is cleared when it ends."""
        return _ClearingBlock(self, self._store.transaction())

    def current_tx(self) -> StoreTx | None:
        """The store's transaction current in this context, or ``None``."""
        return current_tx(self._store)

    async def close(self) -> None:
        """Drop the cache and close the store underneath."""
        self._cache.clear()
        await self._store.close()

    async def __aenter__(self) -> Self:
        await self._store.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _ClearingBlock:
    def __init__(self, cache: CachedStore, inner: AbstractAsyncContextManager[StoreTx]) -> None:
        self._cache = cache
        self._inner = inner

    async def __aenter__(self) -> StoreTx:
        tx = await self._inner.__aenter__()
        tx.on_end(lambda _committed: self._cache.invalidate())
        return tx

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._inner.__aexit__(exc_type, exc, tb)
