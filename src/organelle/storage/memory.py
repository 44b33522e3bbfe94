"""``MemoryStore``: the in-process backend, for tests and throwaway state.

Values are kept encoded, exactly as a durable backend would hold them, so a
caller mutating an object after ``put`` never changes what is stored and the
size limits and decoding rules match the other backends.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from organelle.storage._common import BaseStore, prefix_upper
from organelle.storage.base import Change, ChangeOp, Entry, Page, Watch

__all__ = ["MemoryStore"]


class _Rec(NamedTuple):
    kind: int
    data: bytes
    rev: int
    expires_at: float | None


class MemoryStore(BaseStore):
    """Dict-backed store; every operation is atomic because it never awaits.

    Args:
        **opts: see ``BaseStore`` (codec, max_value_bytes, max_key_bytes, ...).
    """

    def __init__(self, **opts: Any) -> None:
        super().__init__(**opts)
        self._data: dict[str, _Rec] = {}
        self._sorted: list[str] = []
        self._rev = 0

    def _live(self, key: str, now: float) -> _Rec | None:
        rec = self._data.get(key)
        if rec is None or (rec.expires_at is not None and rec.expires_at <= now):
            return None
        return rec

    def _entry(self, key: str, rec: _Rec, type_: Any = None) -> Entry:
        value = self._decode(rec.kind, rec.data, type_)
        return Entry(key=key, value=value, revision=rec.rev, expires_at=rec.expires_at)

    def _write(self, key: str, kind: int, data: bytes, expires_at: float | None) -> int:
        self._rev += 1
        if key not in self._data:
            bisect.insort(self._sorted, key)
        self._data[key] = _Rec(kind, data, self._rev, expires_at)
        if expires_at is not None:
            self._start_sweeper()
        self._publish(Change(key=key, value=self._decode(kind, data), revision=self._rev))
        return self._rev

    def _remove(self, key: str, op: ChangeOp = "delete") -> bool:
        rec = self._data.pop(key, None)
        if rec is None:
            return False
        i = bisect.bisect_left(self._sorted, key)
        del self._sorted[i]
        self._rev += 1
        self._publish(Change(key=key, value=None, revision=self._rev, op=op))
        return True

    async def get(self, key: str, *, type: Any = None) -> Entry | None:  # noqa: A002 - mirrors codec.decode(target)
        """Return the live entry for ``key``, or ``None``."""
        key = self._key(key)
        self._check_open()
        rec = self._live(key, time.time())
        return None if rec is None else self._entry(key, rec, type)

    async def put(self, key: str, value: Any, *, ttl_s: float | None = None) -> int:
        """Write ``value``; return its revision."""
        key = self._key(key)
        kind, data = self._encode(value)
        expires_at = self._deadline(ttl_s)
        self._check_open()
        return self._write(key, kind, data, expires_at)

    async def delete(self, key: str) -> bool:
        """Remove ``key``; ``True`` if it was live."""
        key = self._key(key)
        self._check_open()
        live = self._live(key, time.time()) is not None
        self._remove(key, "delete" if live else "expire")
        return live

    async def get_many(self, keys: Iterable[str]) -> dict[str, Entry]:
        """Return the live entries among ``keys``."""
        wanted = self._keys(keys)
        self._check_open()
        now = time.time()
        found = {k: self._live(k, now) for k in wanted}
        return {k: self._entry(k, rec) for k, rec in found.items() if rec is not None}

    async def put_many(
        self, items: Mapping[str, Any], *, ttl_s: float | None = None
    ) -> dict[str, int]:
        """Write all ``items`` atomically (all encoded before any is stored)."""
        encoded = {self._key(k): self._encode(v) for k, v in items.items()}
        expires_at = self._deadline(ttl_s)
        self._check_open()
        return {k: self._write(k, kind, data, expires_at) for k, (kind, data) in encoded.items()}

    async def delete_many(self, keys: Iterable[str]) -> int:
        """Remove ``keys``; return how many were live."""
        wanted = self._keys(keys)
        self._check_open()
        now = time.time()
        live = [k for k in wanted if self._live(k, now) is not None]
        for k in wanted:
            self._remove(k)
        return len(live)

    async def scan(self, prefix: str = "", *, limit: int = 100, cursor: str | None = None) -> Page:
        """Return up to ``limit`` live entries under ``prefix``, after ``cursor``."""
        prefix = self._prefix(prefix)
        limit = self._limit(limit)
        self._check_open()
        cursor = self._cursor(cursor)
        if cursor is not None and cursor >= prefix:
            i = bisect.bisect_right(self._sorted, cursor)
        else:
            i = bisect.bisect_left(self._sorted, prefix)
        upper = prefix_upper(prefix)
        now = time.time()
        items: list[Entry] = []
        while i < len(self._sorted) and len(items) < limit:
            key = self._sorted[i]
            i += 1
            if upper is not None and key >= upper:
                break
            rec = self._live(key, now)
            if rec is not None:
                items.append(self._entry(key, rec))
        more = i < len(self._sorted) and (upper is None or self._sorted[i] < upper)
        return Page(items=items, cursor=items[-1].key if more and items else None)

    async def compare_and_set(
        self, key: str, value: Any, *, revision: int | None, ttl_s: float | None = None
    ) -> int:
        """Write only if ``key`` is at ``revision`` (``None``/``0``: absent)."""
        key = self._key(key)
        expected = self._revision(revision)
        kind, data = self._encode(value)
        expires_at = self._deadline(ttl_s)
        self._check_open()
        rec = self._live(key, time.time())
        actual = 0 if rec is None else rec.rev
        if actual != expected:
            raise self._conflict(key, expected, actual)
        return self._write(key, kind, data, expires_at)

    async def incr(self, key: str, by: int = 1) -> int:
        """Atomically add ``by`` to an int value (absent counts as 0); keeps the expiry."""
        key = self._key(key)
        by = self._as_int("by", by)
        self._check_open()
        rec = self._live(key, time.time())
        current = 0 if rec is None else self._as_int(key, self._decode(rec.kind, rec.data))
        kind, data = self._encode(current + by)
        self._write(key, kind, data, None if rec is None else rec.expires_at)
        return current + by

    def watch(self, prefix: str = "") -> Watch:
        """Yield changes under ``prefix`` made in this process after the watch starts."""
        return self._local_watch(prefix)

    async def sweep(self) -> int:
        """Drop expired keys now; return how many."""
        now = time.time()
        expired = [
            k for k, r in self._data.items() if r.expires_at is not None and r.expires_at <= now
        ]
        for key in expired:
            self._remove(key, "expire")
        return len(expired)

    async def close(self) -> None:
        """Stop the sweeper and end watchers; the data is dropped."""
        if self._closed:
            return
        self._closed = True
        await self._stop_sweeper()
        self._end_watchers()
