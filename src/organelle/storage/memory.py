"""``MemoryStore``: the in-process backend, for tests and throwaway state.

Values are kept encoded, exactly as a durable backend would hold them, so a
caller mutating an object after ``put`` never changes what is stored and the
size limits and decoding rules match the other backends.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, TypeVar, cast

from organelle.storage._common import BaseStore, prefix_upper
from organelle.storage._tx import TxCore, any_tx
from organelle.storage.base import Change, ChangeOp, Entry, Page, Watch

__all__ = ["MemoryStore"]

T = TypeVar("T")


class _Rec(NamedTuple):
    kind: int
    data: bytes
    rev: int
    expires_at: float | None


class MemoryStore(BaseStore):
    """Dict-backed store; an operation never awaits, so each one is atomic.

    A transaction holds the store's lock from its start to its end
    (serializable): writes from outside it wait for it, reads from outside see
    the last committed state. Its writes are buffered and applied at commit.

    Args:
        **opts: see ``BaseStore`` (codec, max_value_bytes, max_key_bytes, ...).
    """

    def __init__(self, **opts: Any) -> None:
        super().__init__(**opts)
        self._data: dict[str, _Rec] = {}
        self._sorted: list[str] = []
        self._rev = 0
        self._lock = asyncio.Lock()  # held by the open transaction
        self._tx_open = False  # the same fact, read by every write

    # -- the writer: the store itself, or its open transaction (same three methods) --

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
        self._set(key, _Rec(kind, data, self._rev, expires_at), self._rev, "put")
        return self._rev

    def _remove(self, key: str, op: ChangeOp = "delete") -> bool:
        if key not in self._data:
            return False
        self._rev += 1
        self._set(key, None, self._rev, op)
        return True

    def _set(self, key: str, rec: _Rec | None, rev: int, op: ChangeOp) -> None:
        """Store ``rec`` (``None``: remove) at ``key`` and tell the watchers."""
        if rec is None:
            if self._data.pop(key, None) is not None:
                del self._sorted[bisect.bisect_left(self._sorted, key)]
        else:
            if key not in self._data:
                bisect.insort(self._sorted, key)
            self._data[key] = rec
            if rec.expires_at is not None:
                self._start_sweeper()
        if self._watchers:
            value = None if rec is None else self._decode(rec.kind, rec.data)
            self._publish(Change(key=key, value=value, revision=rev, op=op))

    async def _apply(self, fn: Callable[[MemoryStore | _MemoryTx], T]) -> T:
        """Run a write on the current transaction, or on the store once none is open."""
        self._check_open()
        tx = any_tx() and self._current()
        if tx is not None:
            return fn(cast("_MemoryTx", tx))
        if self._tx_open:  # another context's transaction is open: wait for its end
            async with self._lock:
                self._check_open()
                return fn(self)
        return fn(self)

    def _reader(self) -> MemoryStore | _MemoryTx:
        self._check_open()
        tx = any_tx() and self._current()
        return self if tx is None else cast("_MemoryTx", tx)

    async def _begin(self) -> TxCore:
        self._check_open()
        await self._lock.acquire()
        self._tx_open = True
        return _MemoryTx(self)

    async def get(self, key: str, *, type: Any = None) -> Entry | None:  # noqa: A002 - mirrors codec.decode(target)
        """Return the live entry for ``key``, or ``None``."""
        key = self._key(key)
        self._check_open()
        tx = any_tx() and self._current()
        rec = (self if tx is None else cast("_MemoryTx", tx))._live(key, time.time())
        return None if rec is None else self._entry(key, rec, type)

    async def put(self, key: str, value: Any, *, ttl_s: float | None = None) -> int:
        """Write ``value``; return its revision."""
        key = self._key(key)
        kind, data = self._encode(value)
        expires_at = self._deadline(ttl_s)
        return await self._apply(lambda w: w._write(key, kind, data, expires_at))

    async def delete(self, key: str) -> bool:
        """Remove ``key``; ``True`` if it was live."""
        key = self._key(key)

        def op(w: MemoryStore | _MemoryTx) -> bool:
            live = w._live(key, time.time()) is not None
            w._remove(key, "delete" if live else "expire")
            return live

        return await self._apply(op)

    async def get_many(self, keys: Iterable[str]) -> dict[str, Entry]:
        """Return the live entries among ``keys``."""
        wanted = self._keys(keys)
        reader = self._reader()
        now = time.time()
        found = {k: reader._live(k, now) for k in wanted}
        return {k: self._entry(k, rec) for k, rec in found.items() if rec is not None}

    async def put_many(
        self, items: Mapping[str, Any], *, ttl_s: float | None = None
    ) -> dict[str, int]:
        """Write all ``items`` atomically (all encoded before any is stored)."""
        encoded = {self._key(k): self._encode(v) for k, v in items.items()}
        expires_at = self._deadline(ttl_s)
        return await self._apply(
            lambda w: {
                k: w._write(k, kind, data, expires_at) for k, (kind, data) in encoded.items()
            }
        )

    async def delete_many(self, keys: Iterable[str]) -> int:
        """Remove ``keys``; return how many were live."""
        wanted = self._keys(keys)

        def op(w: MemoryStore | _MemoryTx) -> int:
            now = time.time()
            live = [k for k in wanted if w._live(k, now) is not None]
            for k in wanted:
                w._remove(k)
            return len(live)

        return await self._apply(op)

    async def scan(self, prefix: str = "", *, limit: int = 100, cursor: str | None = None) -> Page:
        """Return up to ``limit`` live entries under ``prefix``, after ``cursor``."""
        prefix = self._prefix(prefix)
        limit = self._limit(limit)
        reader = self._reader()
        cursor = self._cursor(cursor)
        if reader is not self:
            return cast("_MemoryTx", reader).scan(prefix, limit, cursor)
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

        def op(w: MemoryStore | _MemoryTx) -> int:
            rec = w._live(key, time.time())
            actual = 0 if rec is None else rec.rev
            if actual != expected:
                raise self._conflict(key, expected, actual)
            return w._write(key, kind, data, expires_at)

        return await self._apply(op)

    async def incr(self, key: str, by: int = 1) -> int:
        """Atomically add ``by`` to an int value (absent counts as 0); keeps the expiry."""
        key = self._key(key)
        by = self._as_int("by", by)

        def op(w: MemoryStore | _MemoryTx) -> int:
            rec = w._live(key, time.time())
            current = 0 if rec is None else self._as_int(key, self._decode(rec.kind, rec.data))
            kind, data = self._encode(current + by)
            w._write(key, kind, data, None if rec is None else rec.expires_at)
            return current + by

        return await self._apply(op)

    def watch(self, prefix: str = "") -> Watch:
        """Yield changes under ``prefix`` made in this process after the watch starts."""
        return self._local_watch(prefix)

    async def sweep(self) -> int:
        """Drop expired keys now; return how many (none while a transaction is open)."""
        if self._tx_open:  # the transaction counts on the revisions standing still
            return 0
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


class _MemoryTx(TxCore):
    """A transaction of a ``MemoryStore``: an overlay of its writes, applied at commit."""

    def __init__(self, store: MemoryStore) -> None:
        super().__init__(store, store._publish_changes)
        self._s = store
        self._over: dict[str, _Rec | None] = {}  # None: deleted in the transaction
        self._log: list[tuple[str, _Rec | None, int, ChangeOp]] = []
        self._rev = store._rev  # no one else writes while the lock is held

    def _live(self, key: str, now: float) -> _Rec | None:
        rec = self._over[key] if key in self._over else self._s._data.get(key)
        if rec is None or (rec.expires_at is not None and rec.expires_at <= now):
            return None
        return rec

    def _write(self, key: str, kind: int, data: bytes, expires_at: float | None) -> int:
        self.check()
        self._rev += 1
        rec = _Rec(kind, data, self._rev, expires_at)
        self._over[key] = rec
        self._log.append((key, rec, self._rev, "put"))
        return self._rev

    def _remove(self, key: str, op: ChangeOp = "delete") -> bool:
        self.check()
        exists = self._over[key] is not None if key in self._over else key in self._s._data
        if not exists:
            return False
        self._rev += 1
        self._over[key] = None
        self._log.append((key, None, self._rev, op))
        return True

    def scan(self, prefix: str, limit: int, cursor: str | None) -> Page:
        """The store's keys merged with the ones this transaction created, in order."""
        s = self._s
        after = cursor if cursor is not None and cursor >= prefix else None
        if after is not None:
            start = bisect.bisect_right(s._sorted, after)
        else:
            start = bisect.bisect_left(s._sorted, prefix)
        created = sorted(
            k
            for k in self._over
            if k not in s._data and k.startswith(prefix) and (after is None or k > after)
        )
        upper = prefix_upper(prefix)
        now = time.time()
        items: list[Entry] = []
        more = False
        for key in heapq.merge(itertools.islice(s._sorted, start, None), created):
            if upper is not None and key >= upper:
                break
            if len(items) >= limit:
                more = True
                break
            rec = self._live(key, now)
            if rec is not None:
                items.append(s._entry(key, rec))
        return Page(items=items, cursor=items[-1].key if more and items else None)

    async def commit(self) -> None:
        s = self._s
        try:
            s._check_open()
            for key, rec, rev, op in self._log:
                s._set(key, rec, rev, op)
            s._rev = max(s._rev, self._rev)
        finally:
            s._tx_open = False
            s._lock.release()

    async def rollback(self) -> None:
        self._s._tx_open = False
        self._s._lock.release()

    async def savepoint(self) -> object:
        return dict(self._over), len(self._log), self._rev

    async def release(self, mark: object) -> None:
        """Nothing to do: the savepoint's writes stay in the overlay."""

    async def rollback_to(self, mark: object) -> None:
        over, logged, rev = cast("tuple[dict[str, _Rec | None], int, int]", mark)
        self._over, self._rev = over, rev
        del self._log[logged:]
