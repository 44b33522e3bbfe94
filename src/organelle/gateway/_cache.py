"""Response cache for GET routes, kept in the organelle Store.

The key varies by route, principal, path and (sorted) query, so one user's
answer is never served to another. Entries expire with the route's TTL;
``invalidate(route)`` drops a route's entries on every node that shares the Store.
"""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qsl

from organelle.storage import Store

__all__ = ["ResponseCache"]

_PAGE = 500


class ResponseCache:
    """Encoded bodies under ``c.<route>.<digest>``."""

    def __init__(self, store: Store, *, max_body_bytes: int) -> None:
        self.store = store
        self.max_body_bytes = max_body_bytes

    @staticmethod
    def key(route: str, principal_id: str | None, path: str, query_string: bytes) -> str:
        """The cache key of one request."""
        query = sorted(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True))
        raw = repr((principal_id, path, query)).encode()
        return f"c.{route}.{hashlib.sha256(raw).hexdigest()[:32]}"

    async def get(self, key: str) -> bytes | None:
        """The cached body, if fresh."""
        entry = await self.store.get(key)
        return entry.value if entry is not None and isinstance(entry.value, bytes) else None

    async def put(self, key: str, body: bytes, ttl_s: float) -> None:
        """Cache ``body``; oversized bodies are not cached."""
        if len(body) <= self.max_body_bytes:
            await self.store.put(key, body, ttl_s=ttl_s)

    async def invalidate(self, route: str = "") -> int:
        """Drop the entries of ``route`` (``"module.method"``), or all when empty."""
        prefix = f"c.{route}." if route else "c."
        removed = 0
        while True:
            page = await self.store.scan(prefix, limit=_PAGE)
            if not page.items:
                return removed
            removed += await self.store.delete_many([e.key for e in page.items])
