"""``NatsKvStore``: storage on a NATS JetStream KV bucket (``nats-kv://host:port/bucket``).

Revisions are stream sequences and compare-and-set uses JetStream's
expected-last-subject-sequence, so both hold across processes and, with
``replicas=3``, across a broker failure. The value is stored as-is (raw bytes
or codec output) and the kind and expiry travel in message headers, so a
header-only listing can skip expired keys and other NATS clients read plain
payloads. Keys are escaped into the KV alphabet token by token (``_keys``),
so ``.`` keeps its subject meaning and a prefix ending at a dot is filtered
by the server. ``put_many`` is not atomic: NATS KV has no transactions, so
``transaction()`` is refused (``TransactionUnsupportedError``) rather than
faked: a buffered "commit" that could stop half-way would promise what the
bucket cannot keep. Each key's writes stay atomic (compare-and-set, ``incr``).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Self

from organelle.errors import StorageUnavailableError, TransactionUnsupportedError
from organelle.storage._common import WATCH_QUEUE_MAX, BaseStore, cas_incr
from organelle.storage._nats_keys import decode_key, encode_key, subject_filter
from organelle.storage.base import Change, Entry, Page, StoreTx, Watch, WatchFeed, bad
from organelle.storage.retry import retrying
from organelle.transport.nats_connect import NatsConnectOptions

__all__ = ["NatsKvStore"]

H_KIND, H_EXP, H_REASON = "Organelle-Kind", "Organelle-Expires", "Organelle-Reason"
H_OP, H_LAST = "KV-Operation", "Nats-Expected-Last-Subject-Sequence"
_WRONG_LAST = {10071, 10164}
_HEADROOM = 1024  # headers and protocol overhead inside the server's max_payload
_MAX_SUBJECT = 3800  # stays under the server's 4 KiB protocol control line
_Meta = tuple[int, float | None]


def _transient(exc: BaseException) -> bool:
    import nats.errors
    import nats.js.errors

    if isinstance(exc, nats.js.errors.APIError):  # 503: no leader / JetStream not ready yet
        return exc.code in {503, 408} and exc.err_code not in _WRONG_LAST
    return isinstance(
        exc,
        OSError
        | TimeoutError
        | nats.errors.TimeoutError
        | nats.errors.NoRespondersError
        | nats.errors.StaleConnectionError
        | nats.errors.OutboundBufferLimitError
        | nats.errors.ConnectionClosedError
        | nats.errors.NoServersError
        | nats.errors.ConnectionReconnectingError
        | nats.errors.FlushTimeoutError
        | nats.js.errors.NoStreamResponseError,
    )


class NatsKvStore(BaseStore):
    """Store on a JetStream KV bucket, created on first use if missing.

    Args:
        servers: a ``NatsConnectOptions`` (servers, credentials, TLS) or NATS
            URLs (give every cluster node so the client fails over).
        bucket: KV bucket name.
        replicas: bucket replicas when it is created (3 on a 3-node cluster).
        op_timeout_s: per-request timeout; retries then run within ``retry``.
        **opts: see ``BaseStore``; ``max_value_bytes`` is capped by the
            server's ``max_payload``.
    """

    def __init__(
        self,
        *,
        servers: NatsConnectOptions | Sequence[str] | str = "nats://127.0.0.1:4222",
        bucket: str = "organelle",
        replicas: int = 1,
        op_timeout_s: float = 5.0,
        **opts: Any,
    ) -> None:
        super().__init__(**opts)
        self.connect_options = NatsConnectOptions.coerce(servers)
        self.servers = self.connect_options.urls
        self.bucket = bucket
        self.replicas = replicas
        self.op_timeout_s = op_timeout_s
        self._stream = f"KV_{bucket}"
        self._pre = f"$KV.{bucket}."
        self._nc: Any = None
        self._js: Any = None
        self._direct = False
        self._open_lock = asyncio.Lock()

    # -- plumbing -------------------------------------------------------------------

    async def open(self) -> Self:
        """Connect and create the bucket if needed (``open_store`` does it); returns ``self``."""
        self._check_open()
        async with self._open_lock:
            if self._js is None:
                await retrying(
                    self._connect, policy=self.retry, is_transient=_transient, what="NATS"
                )
        return self

    async def _connect(self) -> None:
        import nats.js.api
        import nats.js.errors
        from nats.aio.client import Client

        async def quiet(_exc: Exception) -> None:
            """Reconnects are handled by retries; keep the log clean."""

        nc = Client()
        try:
            # nats-py keeps trying forever when no server answers the first
            # connect; bound it so the retry budget decides.
            async with asyncio.timeout(self.connect_options.open_budget_s):
                await nc.connect(
                    **self.connect_options.connect_kwargs(),
                    name=f"organelle-kv:{self.bucket}",
                    reconnect_time_wait=0.2,  # type: ignore[arg-type] # nats-py hints int; float works
                    max_reconnect_attempts=-1,
                    error_cb=quiet,
                )
            js = nc.jetstream(timeout=self.op_timeout_s)
            try:
                kv = await js.key_value(self.bucket)
            except nats.js.errors.BucketNotFoundError:
                kv = await js.create_key_value(
                    bucket=self.bucket,
                    history=1,
                    replicas=self.replicas,
                    storage=nats.js.api.StorageType.FILE,
                    direct=True,  # gets answered by any replica, without the JSON API
                )
        except BaseException:
            await nc.close()
            raise
        self.max_value_bytes = min(self.max_value_bytes, nc.max_payload - _HEADROOM)
        self._direct = bool(kv._direct)
        self._nc, self._js = nc, js

    async def _retry(self, op: Any) -> Any:
        if self._js is None:
            await self.open()
        self._check_open()
        return await retrying(op, policy=self.retry, is_transient=_transient, what="NATS")

    def _subject(self, key: str) -> str:
        subject = self._pre + encode_key(key)
        if len(subject) > _MAX_SUBJECT:
            raise bad("key", f"key is too long once escaped for NATS KV ({len(subject)} chars)")
        return subject

    async def _raw(
        self, subject: str, *, markers: bool = False
    ) -> tuple[bytes, int, dict[str, str]] | None:
        """The subject's last message; a delete marker reads as ``None`` unless ``markers``."""
        import nats.js.errors

        try:
            msg = await self._js.get_msg(self._stream, subject=subject, direct=self._direct)
        except nats.js.errors.NotFoundError:
            return None
        headers = dict(msg.headers or {})
        if not markers and headers.get(H_OP) in {"DEL", "PURGE"}:
            return None
        return msg.data or b"", int(msg.seq), headers

    @staticmethod
    def _meta(headers: dict[str, str]) -> tuple[int, float | None]:
        exp = headers.get(H_EXP)
        return int(headers.get(H_KIND, "1")), None if exp is None else float(exp)

    async def _live(self, key: str, type_: Any = None) -> Entry | None:
        raw = await self._retry(lambda: self._raw(self._subject(key)))
        if raw is None:
            return None
        data, rev, headers = raw
        kind, exp = self._meta(headers)
        if exp is not None and exp <= time.time():
            return None
        return Entry(key=key, value=self._decode(kind, data, type_), revision=rev, expires_at=exp)

    async def _publish_raw(self, subject: str, data: bytes, headers: dict[str, str]) -> int:
        import nats.js.errors

        try:
            ack = await self._js.publish(subject, data, headers=headers)
        except nats.js.errors.APIError as exc:
            if exc.err_code in _WRONG_LAST:
                raise _WrongLastError from exc
            raise
        return int(ack.seq)

    async def _write(self, key: str, value: Any, ttl_s: Any, last: int | None = None) -> int:
        subject = self._subject(key)
        kind, data = self._encode(value)
        exp = self._deadline(ttl_s)
        headers = {H_KIND: str(kind)}
        if exp is not None:
            headers[H_EXP] = repr(exp)
            self._start_sweeper()
        if last is not None:
            headers[H_LAST] = str(last)
        return int(await self._retry(lambda: self._publish_raw(subject, data, dict(headers))))

    # -- the port -------------------------------------------------------------------

    async def get(self, key: str, *, type: Any = None) -> Entry | None:  # noqa: A002 - mirrors codec.decode(target)
        """Return the live entry for ``key``, or ``None``."""
        return await self._live(self._key(key), type)

    async def put(self, key: str, value: Any, *, ttl_s: float | None = None) -> int:
        """Write ``value``; return its revision (the stream sequence)."""
        return await self._write(self._key(key), value, ttl_s)

    async def put_many(
        self, items: Mapping[str, Any], *, ttl_s: float | None = None
    ) -> dict[str, int]:
        """Write all ``items`` concurrently (validated first; not atomic on NATS KV)."""
        checked = {self._key(k): v for k, v in items.items()}
        for value in checked.values():
            self._encode(value)
        self._ttl(ttl_s)
        revs = await _gather([self._write(k, v, ttl_s) for k, v in checked.items()])
        return dict(zip(checked, revs, strict=True))

    async def delete(self, key: str, *, reason: str | None = None, rev: int | None = None) -> bool:
        """Remove ``key`` (a delete marker); ``True`` if it was live."""
        key = self._key(key)
        subject = self._subject(key)
        while True:
            raw = await self._retry(lambda: self._raw(subject))
            if raw is None or (rev is not None and raw[1] != rev):
                return False
            _, exp = self._meta(raw[2])
            headers = {H_OP: "DEL", H_LAST: str(raw[1])}
            if reason:
                headers[H_REASON] = reason
            try:
                await self._retry(lambda h=headers: self._publish_raw(subject, b"", h))
            except _WrongLastError:
                continue  # written meanwhile: look again
            return exp is None or exp > time.time()

    async def delete_many(self, keys: Iterable[str]) -> int:
        """Remove ``keys`` concurrently; return how many were live."""
        return sum(await _gather([self.delete(k) for k in self._keys(keys)]))

    async def get_many(self, keys: Iterable[str]) -> dict[str, Entry]:
        """Return the live entries among ``keys`` (fetched concurrently)."""
        entries = await _gather([self._live(k) for k in self._keys(keys)])
        return {e.key: e for e in entries if e is not None}

    async def scan(self, prefix: str = "", *, limit: int = 100, cursor: str | None = None) -> Page:
        """Return up to ``limit`` live entries under ``prefix`` after ``cursor``, in key order.

        NATS KV has no ordered index: each page lists the keys under the
        prefix's dotted part (headers only), then fetches the page's values.
        """
        prefix, limit, cursor = self._prefix(prefix), self._limit(limit), self._cursor(cursor)
        now = time.time()
        listed = await self._retry(lambda: self._list(subject_filter(prefix)))
        keys = sorted(
            k
            for k, (_, exp) in listed.items()
            if k.startswith(prefix)
            and (cursor is None or k > cursor)
            and (exp is None or exp > now)
        )
        items: list[Entry] = []
        i = 0
        while len(items) < limit and i < len(keys):
            chunk = keys[i : i + limit - len(items)]
            i += len(chunk)
            items += [e for e in await _gather([self._live(k) for k in chunk]) if e is not None]
        more = i < len(keys)
        return Page(items=items, cursor=items[-1].key if more and items else None)

    async def _list(self, filt: str) -> dict[str, _Meta]:
        import nats.js.api

        found: dict[str, _Meta] = {}
        done = asyncio.Event()

        async def on_msg(msg: Any) -> None:
            headers = dict(msg.headers or {})
            if headers.get(H_OP) not in {"DEL", "PURGE"}:
                found[decode_key(msg.subject[len(self._pre) :])] = (
                    msg.metadata.sequence.stream,
                    self._meta(headers)[1],
                )
            else:
                found.pop(decode_key(msg.subject[len(self._pre) :]), None)
            if msg.metadata.num_pending == 0:
                done.set()

        sub = await self._js.subscribe(
            self._pre + filt,
            cb=on_msg,
            stream=self._stream,
            ordered_consumer=True,
            deliver_policy=nats.js.api.DeliverPolicy.LAST_PER_SUBJECT,
            headers_only=True,
        )
        try:
            info = await sub.consumer_info()
            if info.num_pending == 0 and info.delivered.consumer_seq == 0:
                return found
            async with asyncio.timeout(self.op_timeout_s * 4):
                await done.wait()
        finally:
            await sub.unsubscribe()
        return found

    async def compare_and_set(
        self, key: str, value: Any, *, revision: int | None, ttl_s: float | None = None
    ) -> int:
        """Write only if ``key`` is at ``revision`` (``None``/``0``: absent or expired)."""
        key, expected = self._key(key), self._revision(revision)
        self._encode(value)
        self._ttl(ttl_s)
        # One read, delete markers included: the write then expects exactly the
        # sequence seen (0: the subject never had a message), so a writer that
        # slipped in after this read makes the write fail rather than be overwritten.
        raw = await self._retry(lambda: self._raw(self._subject(key), markers=True))
        last = 0 if raw is None else raw[1]
        deleted = raw is not None and raw[2].get(H_OP) in {"DEL", "PURGE"}
        exp = None if raw is None or deleted else self._meta(raw[2])[1]
        live = raw is not None and not deleted and (exp is None or exp > time.time())
        if (live and last != expected) or (not live and expected != 0):
            raise self._conflict(key, expected, last if live else None)
        try:
            return await self._write(key, value, ttl_s, last=last)
        except _WrongLastError:
            raise self._conflict(key, expected, None) from None

    async def incr(self, key: str, by: int = 1) -> int:
        """Atomically add ``by`` (a compare-and-set loop on the key's revision)."""
        return await cas_incr(self, self._key(key), self._as_int("by", by))

    def watch(self, prefix: str = "") -> Watch:
        """Yield changes under ``prefix`` from every client of the bucket."""
        prefix = self._prefix(prefix)

        async def opener() -> WatchFeed:
            import nats.js.api

            await self.open()
            out: asyncio.Queue[Change | BaseException] = asyncio.Queue(WATCH_QUEUE_MAX)

            async def on_msg(msg: Any) -> None:
                key = decode_key(msg.subject[len(self._pre) :])
                if not key.startswith(prefix):
                    return
                headers = dict(msg.headers or {})
                rev = msg.metadata.sequence.stream
                if headers.get(H_OP) in {"DEL", "PURGE"}:
                    op = "expire" if headers.get(H_REASON) == "expire" else "delete"
                    change = Change(key=key, value=None, revision=rev, op=op)  # type: ignore[arg-type]
                else:
                    kind, _ = self._meta(headers)
                    change = Change(key=key, value=self._decode(kind, msg.data), revision=rev)
                try:
                    out.put_nowait(change)
                except asyncio.QueueFull:
                    out.get_nowait()
                    out.put_nowait(StorageUnavailableError("watcher fell too far behind"))

            sub = await self._retry(
                lambda: self._js.subscribe(
                    self._pre + subject_filter(prefix),
                    cb=on_msg,
                    stream=self._stream,
                    ordered_consumer=True,
                    deliver_policy=nats.js.api.DeliverPolicy.NEW,
                )
            )
            return WatchFeed(queue=out, close=sub.unsubscribe)

        return Watch(opener)

    def transaction(self) -> AbstractAsyncContextManager[StoreTx]:
        """Refused: NATS KV has no multi-key transactions.

        Raises:
            TransactionUnsupportedError: always (``details["backend"]`` is
                ``"NatsKvStore"``); use SQLite or PostgreSQL storage where
                writes must commit together.
        """
        raise TransactionUnsupportedError(
            "NATS KV has no multi-key transactions: each key's write is atomic on its own "
            "(compare_and_set, incr), several keys never commit together; use SQLite or "
            "PostgreSQL storage for transaction()",
            details={"backend": type(self).__name__},
        )

    async def sweep(self) -> int:
        """Delete expired keys now (delete markers tagged ``expire``); return how many."""
        now = time.time()
        listed = await self._retry(lambda: self._list(">"))
        expired = [(k, rev) for k, (rev, exp) in listed.items() if exp is not None and exp <= now]
        await _gather([self.delete(k, reason="expire", rev=rev) for k, rev in expired])
        return len(expired)

    async def close(self) -> None:
        """Stop the sweeper and close the connection."""
        if self._closed:
            return
        self._closed = True
        await self._stop_sweeper()
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            try:
                async with asyncio.timeout(5):
                    await nc.close()
            except (TimeoutError, OSError):
                pass


class _WrongLastError(Exception):
    """The subject moved on since we read it (JetStream err 10071)."""


async def _gather(coros: list[Any], width: int = 64) -> list[Any]:
    """``asyncio.gather`` with at most ``width`` requests in flight."""
    sem = asyncio.Semaphore(width)

    async def one(coro: Any) -> Any:
        async with sem:
            return await coro

    try:
        return list(await asyncio.gather(*(one(c) for c in coros)))
    finally:
        # cancelled (a store closing mid-sweep): the requests that never began
        # are closed here, not left to warn "never awaited" when collected
        for coro in coros:
            if inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
                coro.close()
