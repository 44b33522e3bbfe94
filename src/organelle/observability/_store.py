"""A Store wrapper timing every operation into the metrics (the storage hook)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar

from organelle.storage.base import Entry, Page, Store, Watch

if TYPE_CHECKING:
    from organelle.observability._tables import Tables

__all__ = ["TimedStore"]

T = TypeVar("T")
_perf = time.perf_counter


class TimedStore:
    """Delegates to ``inner``; records each operation's latency and errors by operation name."""

    def __init__(self, inner: Store, metrics: Tables) -> None:
        self.inner = inner
        self._m = metrics

    async def _timed(self, op: str, work: Awaitable[T]) -> T:
        started = _perf()
        try:
            return await work
        except Exception:
            self._m.storage_errors[op] = self._m.storage_errors.get(op, 0) + 1
            raise
        finally:
            self._m.observe(self._m.storage, op, _perf() - started)

    async def get(self, key: str, *, type: Any = None) -> Entry | None:  # noqa: A002 - mirrors Store.get
        return await self._timed("get", self.inner.get(key, type=type))

    async def put(self, key: str, value: Any, *, ttl_s: float | None = None) -> int:
        return await self._timed("put", self.inner.put(key, value, ttl_s=ttl_s))

    async def delete(self, key: str) -> bool:
        return await self._timed("delete", self.inner.delete(key))

    async def get_many(self, keys: Iterable[str]) -> dict[str, Entry]:
        return await self._timed("get_many", self.inner.get_many(keys))

    async def put_many(
        self, items: Mapping[str, Any], *, ttl_s: float | None = None
    ) -> dict[str, int]:
        return await self._timed("put_many", self.inner.put_many(items, ttl_s=ttl_s))

    async def delete_many(self, keys: Iterable[str]) -> int:
        return await self._timed("delete_many", self.inner.delete_many(keys))

    async def scan(self, prefix: str = "", *, limit: int = 100, cursor: str | None = None) -> Page:
        return await self._timed("scan", self.inner.scan(prefix, limit=limit, cursor=cursor))

    async def compare_and_set(
        self, key: str, value: Any, *, revision: int | None, ttl_s: float | None = None
    ) -> int:
        return await self._timed(
            "compare_and_set",
            self.inner.compare_and_set(key, value, revision=revision, ttl_s=ttl_s),
        )

    async def incr(self, key: str, by: int = 1) -> int:
        return await self._timed("incr", self.inner.incr(key, by))

    def watch(self, prefix: str = "") -> Watch:
        return self.inner.watch(prefix)

    async def close(self) -> None:
        await self.inner.close()

    async def __aenter__(self) -> Self:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __getattr__(self, name: str) -> Any:  # backend extras (e.g. a SQLite path) stay reachable
        return getattr(self.inner, name)
