"""Rate limits on the ``limits`` library: exact per node in memory, or shared through the Store.

In memory the *moving window* strategy is used: no burst at a window edge,
so ``accepted ≤ limit`` holds in any window. Shared between gateway nodes,
counters live in the organelle Store (``StoreStorage``, fixed windows), so
several gateways on one PostgreSQL or NATS KV enforce one budget.
"""

from __future__ import annotations

import time
from typing import Any

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter, RateLimiter

from organelle.errors import ConfigError, ConflictError, RateLimitedError
from organelle.storage import Store

__all__ = ["Limiter", "StoreStorage"]


class StoreStorage(Storage):
    """A ``limits`` async storage on an organelle ``Store`` (fixed windows, shared by nodes).

    A window's counter is created with its TTL by compare-and-set, then
    incremented atomically (``incr`` keeps the TTL), so every node counts into
    the same key and the key disappears when the window ends.
    """

    STORAGE_SCHEME = ["organelle"]  # noqa: RUF012 - limits' registry reads a plain list

    def __init__(self, store: Store, prefix: str = "rl.") -> None:
        super().__init__()
        self.store = store
        self.prefix = prefix

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        """Errors of the backend that ``limits`` may wrap."""
        return (OSError,)

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Add ``amount`` to the window's counter, starting a window of ``expiry`` s if none."""
        k = self.prefix + key
        try:
            await self.store.compare_and_set(k, amount, revision=None, ttl_s=expiry)
        except ConflictError:
            value = await self.store.incr(k, amount)
            if value == amount:  # the window ended between the two steps: restart it
                await self.store.put(k, value, ttl_s=expiry)
            return value
        return amount

    async def get(self, key: str) -> int:
        """The window's count (0 when no window is open)."""
        entry = await self.store.get(self.prefix + key)
        return int(entry.value) if entry is not None else 0

    async def get_expiry(self, key: str) -> float:
        """When the window ends (Unix time)."""
        entry = await self.store.get(self.prefix + key)
        if entry is None or entry.expires_at is None:
            return time.time()
        return entry.expires_at

    async def check(self) -> bool:
        """The Store is reachable."""
        await self.store.get(self.prefix + "_")
        return True

    async def reset(self) -> int | None:
        """Not supported: clearing every counter of a shared store is an operator's job."""
        return None

    async def clear(self, key: str) -> None:
        """Forget one counter."""
        await self.store.delete(self.prefix + key)


class Limiter:
    """Checks ``"<n>/<period>"`` limits per key; raises ``RateLimitedError`` with Retry-After."""

    def __init__(self, store: Store | None = None) -> None:
        self._strategy: RateLimiter
        if store is None:
            self._strategy = MovingWindowRateLimiter(MemoryStorage())
        else:
            self._strategy = FixedWindowRateLimiter(StoreStorage(store))
        self._items: dict[str, RateLimitItem] = {}

    def item(self, spec: str) -> RateLimitItem:
        """Parse and remember a limit (``"100/minute"``, ``"5 per second"``).

        Raises:
            ConfigError: not a limit ``limits`` understands.
        """
        item = self._items.get(spec)
        if item is None:
            try:
                item = parse(spec)
            except ValueError as exc:
                raise ConfigError(f"rate limit {spec!r}: {exc}") from None
            self._items[spec] = item
        return item

    async def hit(self, item: RateLimitItem, *key: str) -> None:
        """Count one request; raise when the limit is used up."""
        if await self._strategy.hit(item, *key):
            return
        stats: Any = await self._strategy.get_window_stats(item, *key)
        retry = max(1.0, stats.reset_time - time.time())
        raise RateLimitedError(
            f"rate limit {item} exceeded",
            details={"limit": str(item), "retry_after_s": int(retry + 0.999)},
        )
