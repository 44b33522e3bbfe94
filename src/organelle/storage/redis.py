"""``RedisStore``: storage on Redis or Valkey (``redis://host:port/db?prefix=name``).

Each key is a hash (kind, data, revision, expiry) under ``{prefix}:k:``; a
sorted set of all keys with score 0 gives ``scan`` its code point order (Redis
compares members bytewise, and UTF-8 byte order is code point order). Every
write is one Lua script: the revision comes from a per-store counter, the key
index and the expiry index move with the value, and the change is published
on ``{prefix}:chg`` in the same atomic step, so revisions, compare-and-set and
``put_many`` are atomic and watchers see changes in commit order.

What Redis cannot promise, said plainly: ``transaction()`` is refused
(``TransactionUnsupportedError``): a script is atomic but cannot hold a
transaction open across the caller's awaits, and faking one with buffered
writes would promise isolation Redis does not give. ``watch`` rides on
pub/sub, which is at-most-once: a watcher whose connection drops ends with
``StorageUnavailableError`` rather than silently skipping changes. Durability
is the server's: with ``appendonly yes`` and ``appendfsync always`` an
acknowledged write is on disk; with the defaults it can be lost on a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Self

from organelle.errors import StorageUnavailableError, TransactionUnsupportedError
from organelle.storage._common import WATCH_QUEUE_MAX, BaseStore, cas_incr, prefix_upper
from organelle.storage._redis_client import connect, is_transient, split_url
from organelle.storage._redis_lua import CAS, DELETE, INCR, PUT, SCAN, SWEEP
from organelle.storage.base import (
    Change,
    ChangeOp,
    Entry,
    Page,
    StoreTx,
    Watch,
    WatchFeed,
    bad,
)
from organelle.storage.retry import retrying

__all__ = ["RedisStore"]

_EXACT = 2**53  # Lua numbers are doubles: integers beyond this are not exact
EXPIRE_GRACE_S = 1.0  # Redis's own expiry trails ours: the sweeper publishes the change first
SWEEP_BATCH = 1000


class RedisStore(BaseStore):
    """Store on Redis or Valkey, one store per key prefix.

    Args:
        url: ``redis://[:password@]host:port/db`` (``rediss://`` for TLS); a
            ``?prefix=`` parameter there overrides ``prefix``.
        prefix: every key of this store lives under ``{prefix}:``.
        client: an existing ``redis.asyncio.Redis`` to use instead of ``url``
            (it is not closed by ``close``).
        **opts: see ``BaseStore``.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "organelle",
        client: Any = None,
        **opts: Any,
    ) -> None:
        super().__init__(**opts)
        self.url, self.prefix = split_url(url, default_prefix=prefix)
        tag = "{" + self.prefix + "}:"
        self._hash_prefix = (tag + "k:").encode()
        self._keys3 = [tag + "rev", tag + "idx", tag + "exp"]
        self._chan = (tag + "chg").encode()
        self._own_client = client is None
        self._r: Any = client
        self._scripts: dict[str, Any] = {}

    # -- plumbing -------------------------------------------------------------------

    async def open(self) -> Self:
        """Connect and load the scripts (``open_store`` does it); returns ``self``."""
        self._check_open()
        if self._r is None:
            self._r = connect(self.url)
        if not self._scripts:
            await retrying(self._r.ping, policy=self.retry, is_transient=is_transient, what="Redis")
            for name, src in (
                ("put", PUT),
                ("cas", CAS),
                ("incr", INCR),
                ("delete", DELETE),
                ("sweep", SWEEP),
                ("scan", SCAN),
            ):
                self._scripts[name] = self._r.register_script(src)
        return self

    async def _call(self, op: Any) -> Any:
        if not self._scripts:
            await self.open()
        self._check_open()
        try:  # the common case, without the retry machinery around it
            return await op()
        except Exception as exc:
            if not is_transient(exc):
                raise
        return await retrying(op, policy=self.retry, is_transient=is_transient, what="Redis")

    async def _script(self, name: str, keys: list[Any], args: list[Any]) -> Any:
        return await self._call(lambda: self._scripts[name](keys=keys, args=args))

    def _hk(self, key: str) -> bytes:
        return self._hash_prefix + key.encode()

    def _item(self, key: str, value: Any, exp: float | None) -> list[Any]:
        kind, data = self._encode(value)
        if exp is None:
            return [key, kind, data, "", ""]
        return [key, kind, data, repr(exp), math.ceil((exp + EXPIRE_GRACE_S) * 1000)]

    def _entry(self, key: str, raw: list[Any], type_: Any = None) -> Entry | None:
        kind, data, rev, exp = raw
        if rev is None:
            return None
        expires = float(exp) if exp else None
        if expires is not None and expires <= time.time():
            return None
        value = self._decode(int(kind), data, type_)
        return Entry(key=key, value=value, revision=int(rev), expires_at=expires)

    # -- the port -------------------------------------------------------------------

    async def get(self, key: str, *, type: Any = None) -> Entry | None:  # noqa: A002 - mirrors codec.decode(target)
        """Return the live entry for ``key``, or ``None``."""
        key = self._key(key)
        hk = self._hk(key)
        raw = await self._call(lambda: self._r.hmget(hk, "k", "d", "r", "e"))
        return self._entry(key, raw, type)

    async def get_many(self, keys: Iterable[str]) -> dict[str, Entry]:
        """Return the live entries among ``keys`` (one pipelined round trip)."""
        wanted = self._keys(keys)
        if not wanted:
            return {}

        async def fetch() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            for key in wanted:
                pipe.hmget(self._hk(key), "k", "d", "r", "e")
            return list(await pipe.execute())

        rows = await self._call(fetch)
        out: dict[str, Entry] = {}
        for key, raw in zip(wanted, rows, strict=True):
            entry = self._entry(key, raw)
            if entry is not None:
                out[key] = entry
        return out

    async def put(self, key: str, value: Any, *, ttl_s: float | None = None) -> int:
        """Write ``value``; return its revision."""
        item = self._item(self._key(key), value, self._deadline(self._write_ttl(ttl_s)))
        (rev,) = await self._script("put", self._keys3, [self._hash_prefix, self._chan, *item])
        return int(rev)

    async def put_many(
        self, items: Mapping[str, Any], *, ttl_s: float | None = None
    ) -> dict[str, int]:
        """Write all ``items`` atomically (one script: all or, on bad input, none)."""
        exp = self._deadline(self._write_ttl(ttl_s))
        flat: list[Any] = []
        keys = []
        for key, value in items.items():
            keys.append(self._key(key))
            flat += self._item(keys[-1], value, exp)
        if not keys:
            return {}
        revs = await self._script("put", self._keys3, [self._hash_prefix, self._chan, *flat])
        return {k: int(r) for k, r in zip(keys, revs, strict=True)}

    async def delete(self, key: str) -> bool:
        """Remove ``key``; ``True`` if it was live."""
        return await self.delete_many([key]) == 1

    async def delete_many(self, keys: Iterable[str]) -> int:
        """Remove ``keys`` atomically; return how many were live."""
        wanted = self._keys(keys)
        if not wanted:
            return 0
        args = [self._hash_prefix, self._chan, repr(time.time()), *wanted]
        return int(await self._script("delete", self._keys3, args))

    async def scan(self, prefix: str = "", *, limit: int = 100, cursor: str | None = None) -> Page:
        """Return up to ``limit`` live entries under ``prefix`` after ``cursor``, in key order."""
        prefix, limit, cursor = self._prefix(prefix), self._limit(limit), self._cursor(cursor)
        if cursor is not None and cursor >= prefix:
            low = b"(" + cursor.encode()
        else:
            low = b"[" + prefix.encode() if prefix else b"-"
        upper = prefix_upper(prefix)
        high = b"+" if upper is None else b"(" + upper.encode()
        args = [self._hash_prefix, repr(time.time()), low, high, limit + 1]
        flat = await self._script("scan", [self._keys3[1]], args)
        rows = [
            (flat[i].decode(), int(flat[i + 1]), flat[i + 2], int(flat[i + 3]), flat[i + 4])
            for i in range(0, len(flat), 5)
        ]
        more = len(rows) > limit
        items = self._entries(
            (key, kind, data, rev, float(exp) if exp else None)
            for key, kind, data, rev, exp in rows[:limit]
        )
        return Page(items=items, cursor=items[-1].key if more else None)

    async def compare_and_set(
        self, key: str, value: Any, *, revision: int | None, ttl_s: float | None = None
    ) -> int:
        """Write only if ``key`` is at ``revision`` (``None``/``0``: absent or expired)."""
        key, expected = self._key(key), self._revision(revision)
        item = self._item(key, value, self._deadline(self._write_ttl(ttl_s)))
        args = [self._hash_prefix, self._chan, repr(time.time()), key, expected, *item[1:]]
        ok, rev = await self._script("cas", self._keys3, args)
        if not ok:
            raise self._conflict(key, expected, int(rev) or None)
        return int(rev)

    async def incr(self, key: str, by: int = 1) -> int:
        """Atomically add ``by`` in one script; keeps the key's expiry.

        Past 2**53 (where Lua's doubles lose integers) it falls back to a
        compare-and-set loop, exact at any size.
        """
        key, by = self._key(key), self._as_int("by", by)
        if abs(by) < _EXACT:
            args = [self._hash_prefix, self._chan, repr(time.time()), key, by, self._kind]
            got = await self._script("incr", self._keys3, args)
            if got[0] == 1:
                return int(got[1])
            if got[0] == 0:
                raise bad("value", f"incr needs an int value at {key!r}")
        return await cas_incr(self, key, by)

    def watch(self, prefix: str = "") -> Watch:
        """Yield changes under ``prefix`` from every client of this store (Redis pub/sub)."""
        prefix = self._prefix(prefix)

        async def opener() -> WatchFeed:
            await self.open()
            out: asyncio.Queue[Change | BaseException] = asyncio.Queue(WATCH_QUEUE_MAX)
            pubsub = self._r.pubsub()
            await self._call(lambda: pubsub.subscribe(self._chan))
            # The confirmation: from here on, every later write reaches us.
            await self._call(lambda: pubsub.get_message(timeout=5.0))
            task = asyncio.get_running_loop().create_task(self._pump(pubsub, prefix, out))

            async def close() -> None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

            return WatchFeed(queue=out, close=close)

        return Watch(opener)

    async def _pump(
        self, pubsub: Any, prefix: str, out: asyncio.Queue[Change | BaseException]
    ) -> None:
        try:
            async for msg in pubsub.listen():
                if msg.get("type") != b"message" and msg.get("type") != "message":
                    continue
                op, rev, kind, key_b, data = msg["data"].split(b"\0", 4)
                key = key_b.decode()
                if not key.startswith(prefix):
                    continue
                if op == b"put":
                    change = Change(key=key, value=self._decode(int(kind), data), revision=int(rev))
                else:
                    what: ChangeOp = "delete" if op == b"delete" else "expire"
                    change = Change(key=key, value=None, revision=int(rev), op=what)
                try:
                    out.put_nowait(change)
                except asyncio.QueueFull:
                    out.get_nowait()
                    out.put_nowait(StorageUnavailableError("watcher fell too far behind"))
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any loss of the feed ends the watch
            with contextlib.suppress(asyncio.QueueFull):
                out.put_nowait(
                    StorageUnavailableError(
                        f"Redis watch connection lost, changes may be missed: {exc}"
                    )
                )

    def transaction(self) -> AbstractAsyncContextManager[StoreTx]:
        """Refused: a Redis script cannot stay open across the caller's awaits.

        Raises:
            TransactionUnsupportedError: always (``details["backend"]`` is
                ``"RedisStore"``); ``put_many`` and ``delete_many`` are atomic,
                and SQLite or PostgreSQL storage gives ``transaction()``.
        """
        raise TransactionUnsupportedError(
            "Redis has no multi-key transactions that span awaits: each call is atomic on its own "
            "(put_many, delete_many, compare_and_set, incr), several calls never commit together; "
            "use SQLite or PostgreSQL storage for transaction()",
            details={"backend": type(self).__name__},
        )

    async def sweep(self) -> int:
        """Delete expired keys now (each with an ``expire`` change); return how many."""
        args = [self._hash_prefix, self._chan, repr(time.time()), SWEEP_BATCH]
        return int(await self._script("sweep", self._keys3, args))

    async def close(self) -> None:
        """Stop the sweeper and close the connection pool (unless it was given)."""
        if self._closed:
            return
        self._closed = True
        await self._stop_sweeper()
        client, self._r = self._r, None
        if client is not None and self._own_client:
            with contextlib.suppress(Exception):
                await client.aclose()
