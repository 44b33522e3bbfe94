"""What every backend shares: input checks, value encoding, sweeper, local watch fan-out.

Kept apart from ``base.py`` so the port stays a small readable contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import random
import sys
import time
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Self

import msgspec

from organelle.codec import codec_for, convert
from organelle.errors import ConflictError, StorageUnavailableError, TransactionUnsupportedError
from organelle.storage._tx import CURRENT, Chg, TxBlock, TxCore, any_tx
from organelle.storage.base import Change, Entry, Store, StoreTx, Watch, WatchFeed, bad
from organelle.storage.retry import RetryPolicy

if TYPE_CHECKING:
    from organelle.storage.namespace import NamespacedStore

KIND_BYTES = 0
KIND_MSGPACK = 1
KIND_JSON = 2
_KIND_OF = {"msgpack": KIND_MSGPACK, "json": KIND_JSON}
_CODEC_OF = {KIND_MSGPACK: "msgpack", KIND_JSON: "json"}
_PLAIN: dict[int, Any] = {
    KIND_MSGPACK: msgspec.msgpack.Decoder().decode,
    KIND_JSON: msgspec.json.Decoder().decode,
}

WATCH_QUEUE_MAX = 10_000
_SURROGATES = (0xD800, 0xDFFF)
INCR_BUDGET_S = 10.0


def prefix_upper(prefix: str) -> str | None:
    """Smallest string greater than every string starting with ``prefix``.

    ``None`` means no upper bound (empty prefix, or only U+10FFFF characters).
    """
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < sys.maxunicode:
            nxt = last + 1
            if _SURROGATES[0] <= nxt <= _SURROGATES[1]:  # skip surrogates: they are not valid keys
                nxt = 0xE000
            return "".join(chars) + chr(nxt)
    return None


async def cas_incr(store: Store, key: str, by: int) -> int:
    """Atomically add ``by`` to an int value with a compare-and-set loop.

    For backends without a native atomic increment; keeps the key's expiry.
    """
    deadline = time.monotonic() + INCR_BUDGET_S
    delay = 0.001
    while True:
        entry = await store.get(key)
        current = 0 if entry is None else BaseStore._as_int(key, entry.value)
        ttl_s = None
        if entry is not None and entry.expires_at is not None:
            ttl_s = max(entry.expires_at - time.time(), 1e-3)
        try:
            await store.compare_and_set(
                key, current + by, revision=None if entry is None else entry.revision, ttl_s=ttl_s
            )
        except ConflictError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(random.uniform(0, delay))  # noqa: S311 - jitter, not crypto
            delay = min(delay * 2, 0.05)
        else:
            return current + by


class BaseStore:
    """Shared machinery for the backends; not a port of its own.

    Args:
        codec: ``"msgpack"`` (default) or ``"json"`` for non-bytes values.
        max_value_bytes: refuse encoded values larger than this.
        max_key_bytes: refuse keys longer than this in UTF-8.
        sweep_interval_s: how often the background sweeper reclaims expired keys.
        retry: budget for transient backend errors.
    """

    def __init__(
        self,
        *,
        codec: str = "msgpack",
        max_value_bytes: int = 1 << 20,
        max_key_bytes: int = 1024,
        sweep_interval_s: float = 1.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        if codec not in _KIND_OF:
            raise bad("codec", f"unknown codec {codec!r}; expected 'msgpack' or 'json'")
        self._codec = codec_for(codec)
        self._kind = _KIND_OF[codec]
        self.max_value_bytes = max_value_bytes
        self.max_key_bytes = max_key_bytes
        self.sweep_interval_s = sweep_interval_s
        self.retry = retry or RetryPolicy()
        self._sweeper: asyncio.Task[None] | None = None
        self._watchers: list[tuple[str, asyncio.Queue[Change | BaseException]]] = []
        self._closed = False

    # -- input checks and encoding -------------------------------------------------

    def _key(self, key: object) -> str:
        if not isinstance(key, str):
            raise bad("key", f"key must be a str, not {type(key).__name__}")
        if not key:
            raise bad("key", "key must not be empty")
        if "\x00" in key:
            raise bad("key", "key must not contain NUL")
        try:
            size = len(key.encode())
        except UnicodeEncodeError as exc:
            raise bad("key", "key is not valid Unicode (lone surrogate)") from exc
        if size > self.max_key_bytes:
            raise bad("key", f"key is {size} bytes; the limit is {self.max_key_bytes}")
        return key

    def _keys(self, keys: Iterable[str]) -> list[str]:
        if isinstance(keys, str):
            raise bad("keys", "keys must be an iterable of str, not a str")
        return list(dict.fromkeys(self._key(k) for k in keys))

    def _prefix(self, prefix: object) -> str:
        if not isinstance(prefix, str) or "\x00" in prefix:
            raise bad("prefix", "prefix must be a str without NUL")
        return prefix

    @staticmethod
    def _cursor(cursor: object) -> str | None:
        if cursor is not None and not isinstance(cursor, str):
            raise bad("cursor", "cursor must be None or the str from the previous page")
        return cursor

    @staticmethod
    def _limit(limit: object) -> int:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise bad("limit", "limit must be a positive int")
        return limit

    @staticmethod
    def _ttl(ttl_s: object) -> float | None:
        if ttl_s is None:
            return None
        if (
            isinstance(ttl_s, bool)
            or not isinstance(ttl_s, int | float)
            or not math.isfinite(ttl_s)
            or ttl_s <= 0
        ):
            raise bad("ttl_s", "ttl_s must be a positive finite number of seconds")
        return float(ttl_s)

    def _write_ttl(self, ttl_s: object) -> float | None:
        """Validate a write's ``ttl_s``; a key that will expire needs the sweeper running."""
        ttl = self._ttl(ttl_s)
        if ttl is not None:
            self._start_sweeper()
        return ttl

    def _deadline(self, ttl_s: object) -> float | None:
        ttl = self._ttl(ttl_s)
        return None if ttl is None else time.time() + ttl

    @staticmethod
    def _revision(revision: object) -> int:
        if revision is None:
            return 0
        if isinstance(revision, bool) or not isinstance(revision, int) or revision < 0:
            raise bad("revision", "revision must be None or a non-negative int")
        return revision

    def _encode(self, value: Any) -> tuple[int, bytes]:
        if isinstance(value, bytes | bytearray | memoryview):
            kind, data = KIND_BYTES, bytes(value)
        else:
            kind, data = self._kind, self._codec.encode(value)
        if len(data) > self.max_value_bytes:
            raise bad(
                "value", f"value is {len(data)} bytes encoded; the limit is {self.max_value_bytes}"
            )
        return kind, data

    @staticmethod
    def _decode(kind: int, data: bytes, type_: Any = None) -> Any:
        if type_ is None and kind in _PLAIN:  # hot path: scans decode many values
            try:
                return _PLAIN[kind](data)
            except msgspec.DecodeError as exc:
                raise bad("value", f"stored value is not valid {_CODEC_OF[kind]}: {exc}") from exc
        if kind == KIND_BYTES:
            return data if type_ is None or type_ is bytes else convert(data, type_)
        codec = codec_for(_CODEC_OF.get(kind, "msgpack"))
        return codec.decode(data) if type_ is None else codec.decode(data, type_)

    @classmethod
    def _entries(cls, rows: Iterable[Sequence[Any]]) -> list[Entry]:
        """Build entries from ``(key, kind, data, revision, expires_at)`` rows.

        The scan hot path: one dict lookup per row picks the plain decoder,
        with no per-row call through ``_decode`` unless the kind needs it.
        """
        plain = _PLAIN.get
        out: list[Entry] = []
        append = out.append
        for key, kind, data, rev, exp in rows:
            decode = plain(kind)
            try:
                value = cls._decode(kind, data) if decode is None else decode(data)
            except msgspec.DecodeError:
                value = cls._decode(kind, data)  # raises the ValidationError naming the codec
            append(Entry(key=key, value=value, revision=rev, expires_at=exp))
        return out

    @staticmethod
    def _as_int(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("value", f"incr needs an int value at {key!r}, found {type(value).__name__}")
        return value

    @staticmethod
    def _conflict(key: str, expected: int, actual: int | None) -> ConflictError:
        return ConflictError(
            f"revision mismatch on {key!r}: expected {expected or 'absent'}, found "
            f"{actual or 'absent'}",
            details={"key": key, "expected": expected, "actual": actual},
        )

    def _check_open(self) -> None:
        if self._closed:
            raise StorageUnavailableError("store is closed")

    # -- transactions ---------------------------------------------------------------

    def _current(self) -> TxCore | None:
        """This store's open transaction in this context (the one read when there is none)."""
        tx = CURRENT.get()
        while tx is not None:
            if tx.home is self:
                return tx if tx.open else None
            tx = tx.parent
        return None

    def transaction(self) -> AbstractAsyncContextManager[StoreTx]:
        """Group operations: all commit when the block ends, or none (see ``Store``)."""
        return TxBlock(self._current, self._begin)

    async def _begin(self) -> TxCore:
        """Open a backend transaction (backends that have them override this)."""
        raise self._no_transactions()

    def _no_transactions(self) -> TransactionUnsupportedError:
        name = type(self).__name__
        return TransactionUnsupportedError(
            f"{name} has no multi-key transactions", details={"backend": name}
        )

    def current_tx(self) -> StoreTx | None:
        """The transaction of this store current in this context, or ``None``."""
        tx = any_tx() and self._current()
        return None if tx is None else tx.handle

    def _publish_changes(self, changes: list[Chg]) -> None:
        """Hand committed changes (key, kind, data, revision, op) to the watchers."""
        if not self._watchers:
            return
        for key, kind, data, rev, what in changes:
            value = None if kind is None or data is None else self._decode(kind, data)
            self._publish(Change(key=key, value=value, revision=rev, op=what))

    # -- lifecycle ----------------------------------------------------------------

    async def open(self) -> Self:
        """Connect (a no-op where there is nothing to connect); returns ``self``.

        Raises:
            StorageUnavailableError: the store is closed or stayed unreachable.
        """
        self._check_open()
        return self

    async def close(self) -> None:
        """Release what ``open`` took; idempotent."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- sweeper ------------------------------------------------------------------

    def _start_sweeper(self) -> None:
        if self._sweeper is None and not self._closed:
            with contextlib.suppress(RuntimeError):  # no running loop: try again later
                # A fresh context: started inside a transaction, it must not join it.
                self._sweeper = asyncio.get_running_loop().create_task(
                    self._sweep_loop(),
                    name=f"{type(self).__name__}.sweeper",
                    context=contextvars.Context(),
                )

    async def _sweep_loop(self) -> None:
        # ``_closed`` is checked too: a client library that turns the cancel of
        # an in-flight command into an ordinary error must not keep us looping.
        while not self._closed:
            await asyncio.sleep(self.sweep_interval_s)
            with contextlib.suppress(Exception):  # a failed sweep is retried next round
                await self.sweep()

    async def sweep(self) -> int:
        """Delete expired keys now; return how many. The sweeper calls it periodically."""
        return 0

    async def _stop_sweeper(self) -> None:
        task, self._sweeper = self._sweeper, None
        if task is None:
            return
        for _ in range(50):  # bounded: a swallowed cancel is cancelled again
            task.cancel()
            await asyncio.wait({task}, timeout=0.1)
            if task.done():
                break
        if task.done() and not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log it as lost

    # -- in-process watch fan-out -----------------------------------------------

    def _publish(self, change: Change) -> None:
        for prefix, queue in list(self._watchers):
            if change.key.startswith(prefix):
                try:
                    queue.put_nowait(change)
                except asyncio.QueueFull:
                    self._drop_watcher(queue)
                    queue.get_nowait()
                    queue.put_nowait(StorageUnavailableError("watcher fell too far behind"))

    def _drop_watcher(self, queue: asyncio.Queue[Change | BaseException]) -> None:
        self._watchers = [(p, q) for p, q in self._watchers if q is not queue]

    def _local_watch(self, prefix: str) -> Watch:
        prefix = self._prefix(prefix)

        async def opener() -> WatchFeed:
            self._check_open()
            queue: asyncio.Queue[Change | BaseException] = asyncio.Queue(WATCH_QUEUE_MAX)
            self._watchers.append((prefix, queue))

            async def close() -> None:
                self._drop_watcher(queue)

            return WatchFeed(queue=queue, close=close)

        return Watch(opener)

    def _end_watchers(self) -> None:
        for _, queue in self._watchers:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(StopAsyncIteration())
        self._watchers = []

    def namespace(self, name: str) -> NamespacedStore:
        """Return a view of this store whose keys live under ``name``."""
        from organelle.storage.namespace import NamespacedStore

        return NamespacedStore(self, name)  # type: ignore[arg-type]
