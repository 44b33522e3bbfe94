"""The ``BlobStore`` port: large binary objects under keys, with TTL and integrity checks.

Every backend (memory, filesystem, S3, NATS object store) implements the same
contract, checked by one suite in ``tests/contract/test_blobs.py``:

* keys are 1-1024 characters of ``[A-Za-z0-9._~=+:@!-]`` in ``/``-separated
  segments: no leading, trailing or double ``/``, no ``.`` or ``..`` segment;
* a write replaces the whole object at once: a reader sees the old bytes or
  the new ones, never a mix, and a stream that fails midway writes nothing;
* an expired blob is never returned (``get``, ``open_read``, ``head``,
  ``list``), whatever ``purge_expired`` has reclaimed so far;
* what is read back is checked against the size and SHA-256 recorded at
  write time (``BlobIntegrityError``);
* ``open_read`` and ``put_stream`` hold one chunk at a time, never the object.

``BaseBlobStore`` does the checks, the expiry and the integrity once; a
backend supplies five raw operations (``_write``, ``_read``, ``_head``,
``_remove``, ``_scan``) and its ``_open`` / ``_close``.
"""

from __future__ import annotations

import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Mapping,
)
from dataclasses import dataclass, field
from typing import Protocol, Self, runtime_checkable

from organelle.blobs._checks import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_CONTENT_TYPE,
    MAX_KEY_LENGTH,
    bad,
    check_chunk_bytes,
    check_content_type,
    check_key,
    check_metadata,
    check_prefix,
    check_ttl,
    checked_chunks,
    one_chunk,
)
from organelle.blobs._chunks import Digest, regroup
from organelle.errors import BlobIntegrityError, BlobNotFoundError, StorageUnavailableError

__all__ = [
    "DEFAULT_CONTENT_TYPE",
    "MAX_KEY_LENGTH",
    "BaseBlobStore",
    "BlobInfo",
    "BlobReader",
    "BlobStore",
    "Digest",
    "Draft",
    "check_key",
    "check_prefix",
    "regroup",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class BlobInfo:
    """What a store knows of one blob, without its bytes.

    Attributes:
        key: the key it was written under.
        size: length in bytes.
        content_type: the MIME type given at write time.
        created: Unix time of the write (the writer's clock).
        expires_at: Unix time after which it is gone, or ``None``.
        sha256: hex SHA-256 of the bytes, or ``None`` where the backend has
            none recorded (an object another client wrote to S3 or NATS).
        metadata: the caller's own string pairs, as given at write time.
    """

    key: str
    size: int
    content_type: str = DEFAULT_CONTENT_TYPE
    created: float = 0.0
    expires_at: float | None = None
    sha256: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def expired(self, now: float) -> bool:
        """Whether the blob is past its ``expires_at`` at ``now``."""
        return self.expires_at is not None and self.expires_at <= now


@dataclass(frozen=True, slots=True, kw_only=True)
class Draft:
    """Everything a backend writes beside the bytes, checked and stamped by the base."""

    key: str
    content_type: str
    created: float
    expires_at: float | None
    metadata: dict[str, str]

    def info(self, size: int, sha256: str) -> BlobInfo:
        """The ``BlobInfo`` of the finished write."""
        return BlobInfo(
            key=self.key,
            size=size,
            content_type=self.content_type,
            created=self.created,
            expires_at=self.expires_at,
            sha256=sha256,
            metadata=dict(self.metadata),
        )


class BlobReader(AsyncIterator[bytes]):
    """The chunks of one blob, checked against its size and SHA-256 as they pass.

    Returned by ``BlobStore.open_read``; ``info`` is known before the first
    chunk. The check completes when the last chunk has passed, so treat the
    bytes as unverified until iteration ends without ``BlobIntegrityError``::

        async with await blobs.open_read("reports/2024.pdf") as reader:
            async for chunk in reader:
                out.write(chunk)
    """

    def __init__(
        self,
        info: BlobInfo,
        chunks: AsyncGenerator[bytes, None],
        release: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Built by a backend: ``release`` frees what ``chunks`` holds, even if never started."""
        import hashlib

        self.info = info
        self._chunks = chunks
        self._release = release
        self._hash = hashlib.sha256()
        self._size = 0
        self._done = False

    async def __anext__(self) -> bytes:
        if self._done:
            raise StopAsyncIteration
        try:
            chunk = await anext(self._chunks)
        except StopAsyncIteration:
            await self.aclose()  # the handle goes back at the end, with or without ``async with``
            self._verify()
            raise
        except BaseException:
            await self.aclose()
            raise
        self._size += len(chunk)
        if self._size > self.info.size:
            await self.aclose()
            raise self._mismatch("size", self.info.size, f"more than {self.info.size}")
        self._hash.update(chunk)
        return chunk

    def _verify(self) -> None:
        if self._size != self.info.size:
            raise self._mismatch("size", self.info.size, self._size)
        actual = self._hash.hexdigest()
        if self.info.sha256 is not None and actual != self.info.sha256:
            raise self._mismatch("sha256", self.info.sha256, actual)

    def _mismatch(self, what: str, expected: object, actual: object) -> BlobIntegrityError:
        return BlobIntegrityError(
            f"blob {self.info.key!r}: {what} is {actual}, {expected} was written",
            details={"key": self.info.key, "field": what, "expected": expected, "actual": actual},
        )

    async def read_all(self) -> bytes:
        """The remaining bytes, joined (what ``get`` returns)."""
        parts = [chunk async for chunk in self]
        return b"".join(parts)

    async def aclose(self) -> None:
        """Stop reading and release the backend's handle; idempotent."""
        self._done = True
        try:
            await self._chunks.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                await release()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


@runtime_checkable
class BlobStore(Protocol):
    """Async port for large binary objects; see the module docstring for the contract."""

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        ttl_s: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> BlobInfo:
        """Write ``data`` under ``key`` (replacing it), expiring after ``ttl_s``."""
        ...

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        ttl_s: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> BlobInfo:
        """Write the concatenated ``chunks``, one chunk in memory at a time."""
        ...

    async def get(self, key: str) -> bytes:
        """Return the whole blob.

        Raises:
            BlobNotFoundError: absent or expired.
            BlobIntegrityError: the bytes differ from what was written.
        """
        ...

    async def open_read(self, key: str, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> BlobReader:
        """Return a reader over the blob's chunks (``BlobNotFoundError`` if absent)."""
        ...

    async def head(self, key: str) -> BlobInfo | None:
        """Return the live blob's info, or ``None``."""
        ...

    async def delete(self, key: str) -> bool:
        """Remove the blob; ``True`` if a live one was removed."""
        ...

    def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        """Yield the live blobs whose key starts with ``prefix``, in key order."""
        ...

    async def purge_expired(self) -> int:
        """Reclaim the space of expired blobs now; return how many were removed."""
        ...

    async def close(self) -> None:
        """Release connections and handles; idempotent."""
        ...

    async def __aenter__(self) -> Self:
        """Open if needed: ``async with await open_blobs(url) as blobs:``."""
        ...

    async def __aexit__(self, *exc: object) -> None:
        """Close."""
        ...


class BaseBlobStore:
    """What every backend shares: checks, opening, expiry and the integrity-checked reader.

    Args:
        clock: wall-clock seconds; sets ``created`` and decides expiry, so a
            test can move time instead of sleeping.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._opened = False
        self._closed = False

    # -- lifecycle ----------------------------------------------------------------

    async def open(self) -> Self:
        """Connect or create what the backend needs (``open_blobs`` does it); returns ``self``.

        Raises:
            StorageUnavailableError: the store is closed or its backend unreachable.
        """
        self._check_open()
        if not self._opened:
            await self._open()
            self._opened = True
        return self

    async def close(self) -> None:
        """Release what ``open`` took; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._opened:
            await self._close()

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StorageUnavailableError("blob store is closed")

    async def _ready(self) -> None:
        self._check_open()
        if not self._opened:
            await self.open()

    # -- the port -----------------------------------------------------------------

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        ttl_s: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> BlobInfo:
        """Write ``data`` under ``key``, replacing any blob there.

        Raises:
            ValidationError: bad key, data, content type, TTL or metadata.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise bad("data", f"data must be bytes, not {type(data).__name__}")
        draft = self._draft(key, content_type, ttl_s, metadata)
        await self._ready()
        return await self._write(draft, one_chunk(bytes(data)))

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        ttl_s: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> BlobInfo:
        """Write the concatenation of ``chunks`` without holding it in memory.

        If ``chunks`` raises, nothing is written and the error propagates.
        """
        draft = self._draft(key, content_type, ttl_s, metadata)
        await self._ready()
        return await self._write(draft, checked_chunks(chunks))

    async def get(self, key: str) -> bytes:
        """Return the whole blob, checked against its recorded size and SHA-256."""
        async with await self.open_read(key) as reader:
            return await reader.read_all()

    async def open_read(self, key: str, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> BlobReader:
        """Return a ``BlobReader`` over the blob's chunks of about ``chunk_bytes``.

        Raises:
            BlobNotFoundError: absent or expired.
        """
        key = check_key(key)
        chunk_bytes = check_chunk_bytes(chunk_bytes)
        await self._ready()
        reader = await self._read(key, chunk_bytes)
        if reader is not None and reader.info.expired(self.clock()):
            await reader.aclose()
            reader = None
        if reader is None:
            raise BlobNotFoundError(f"no blob {key!r}", details={"key": key})
        return reader

    async def head(self, key: str) -> BlobInfo | None:
        """Return the live blob's info, or ``None``."""
        key = check_key(key)
        await self._ready()
        info = await self._head(key)
        return None if info is None or info.expired(self.clock()) else info

    async def delete(self, key: str) -> bool:
        """Remove the blob; ``True`` if a live one was removed."""
        key = check_key(key)
        await self._ready()
        removed = await self._remove(key)
        return removed is not None and not removed.expired(self.clock())

    async def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        """Yield the live blobs under ``prefix`` in key order."""
        prefix = check_prefix(prefix)
        await self._ready()
        now = self.clock()
        async for info in self._scan(prefix):
            if not info.expired(now):
                yield info

    async def purge_expired(self) -> int:
        """Remove every expired blob now; return how many went.

        Each one is checked again just before it is removed, so a blob
        rewritten since the listing stays (within the backend's own race
        window, see ``docs/blobs.md``).
        """
        await self._ready()
        now = self.clock()
        expired = [info.key async for info in self._scan("") if info.expired(now)]
        count = 0
        for key in expired:
            if await self._remove_expired(key, now):
                count += 1
        return count

    # -- what a backend supplies ----------------------------------------------------

    async def _open(self) -> None:
        """Connect, create the bucket or directory."""

    async def _close(self) -> None:
        """Release what ``_open`` took."""

    async def _write(self, draft: Draft, chunks: AsyncGenerator[bytes, None]) -> BlobInfo:
        """Store the chunks atomically under ``draft.key``; nothing if ``chunks`` raises."""
        raise NotImplementedError

    async def _read(self, key: str, chunk_bytes: int) -> BlobReader | None:
        """A reader over the stored blob (expired or not), or ``None``."""
        raise NotImplementedError

    async def _head(self, key: str) -> BlobInfo | None:
        """The stored info, expired or not, or ``None``."""
        raise NotImplementedError

    async def _remove(self, key: str) -> BlobInfo | None:
        """Remove the blob; return the info of what was there (expired or not)."""
        raise NotImplementedError

    def _scan(self, prefix: str) -> AsyncIterator[BlobInfo]:
        """Every stored blob under ``prefix`` in key order, expired ones included."""
        raise NotImplementedError

    async def _remove_expired(self, key: str, now: float) -> bool:
        """Remove ``key`` if it is still expired at ``now``; backends narrow the race."""
        info = await self._head(key)
        if info is None or not info.expired(now):
            return False
        await self._remove(key)
        return True

    # -- helpers -------------------------------------------------------------------

    def _draft(
        self, key: str, content_type: str, ttl_s: float | None, metadata: Mapping[str, str] | None
    ) -> Draft:
        key = check_key(key)
        content_type = check_content_type(content_type)
        ttl = check_ttl(ttl_s)
        meta = check_metadata(metadata)
        now = self.clock()
        return Draft(
            key=key,
            content_type=content_type,
            created=now,
            expires_at=None if ttl is None else now + ttl,
            metadata=meta,
        )
