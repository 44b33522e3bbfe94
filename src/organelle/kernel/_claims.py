"""The kernel's claim-check: the blob store that holds payloads too large for a message.

``Claims`` implements ``envelope.ClaimCheck`` for the transport (events) and
the stream host (records). It opens ``[kernel] blobs`` on first use — a node
that never sends or receives a large payload opens nothing, and the default
directory ``organelle-blobs`` is made only then — and closes it when the
kernel stops (a restart opens it again on first use).

Reading is streamed: the payload is gathered chunk by chunk into one buffer of
the size the reference declares (never more), the blob reader checking size
and SHA-256 as the chunks pass; so the transport's part costs the payload
once plus one chunk.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import TYPE_CHECKING

from organelle.envelope import uuid7
from organelle.envelope._claim import ClaimRef
from organelle.errors import (
    BlobIntegrityError,
    BlobNotFoundError,
    ClaimCheckError,
    StorageUnavailableError,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from organelle.blobs.base import BlobReader, BlobStore
    from organelle.config.settings import KernelSettings

__all__ = ["DEFAULT_URL", "Claims"]

DEFAULT_URL = "file://organelle-blobs"  # like organelle-streams.db: made on first use
_CONTENT_TYPE = "application/octet-stream"
_CHUNK_BYTES = 256 * 1024


def _failed(reason: str, ref: ClaimRef, message: str, **more: object) -> ClaimCheckError:
    return ClaimCheckError(
        f"claim-check {ref.uri}: {message}",
        details={"reason": reason, "key": ref.key, **more},
    )


class Claims:
    """Owns the claim-check blob store of one kernel (see the module docstring)."""

    def __init__(self, settings: Callable[[], KernelSettings]) -> None:
        self._settings = settings
        self._store: BlobStore | None = None
        self._lock = asyncio.Lock()
        self.claimed = 0  # payloads put in the store by this node
        self.redeemed = 0  # payloads read back by this node

    @property
    def above(self) -> int:
        """``[kernel] claim_check_above``: larger bodies are claimed; 0 is off."""
        return self._settings().claim_check_above

    @property
    def event_ttl_s(self) -> float | None:
        """``[kernel] claim_check_ttl_s``."""
        return self._settings().claim_check_ttl_s

    def record_ttl_s(self, max_age_s: float | None) -> float | None:
        """How long a claimed record lives: its stream's retention, else the setting."""
        return max_age_s if max_age_s is not None else self._settings().claim_check_record_ttl_s

    @property
    def store_if_open(self) -> BlobStore | None:
        """The blob store, if something has opened it."""
        return self._store

    async def store(self) -> BlobStore:
        """The blob store, opened on first use.

        Raises:
            ConfigError: a bad ``[kernel] blobs`` URL.
            StorageUnavailableError: the store is unreachable.
        """
        store = self._store
        if store is None:
            async with self._lock:
                store = self._store
                if store is None:
                    from organelle.blobs.url import open_blobs

                    store = self._store = await open_blobs(self._settings().blobs or DEFAULT_URL)
        return store

    async def claim(self, body: bytes, *, kind: str, ttl_s: float | None) -> ClaimRef:
        """Store ``body`` under ``claims/<kind>/<uuid7>`` for ``ttl_s`` seconds (``None``: always).

        Raises:
            StorageUnavailableError: the store is unreachable or closed.
        """
        store = await self.store()
        key = f"claims/{kind}/{uuid7()}"
        info = await store.put(key, body, content_type=_CONTENT_TYPE, ttl_s=ttl_s)
        self.claimed += 1
        sha = info.sha256 or hashlib.sha256(body).hexdigest()
        return ClaimRef(key=key, size=info.size, sha256=sha)

    async def redeem(self, ref: ClaimRef) -> bytes | bytearray:
        """The payload ``ref`` names (see ``ClaimCheck.redeem``)."""
        try:
            store = await self.store()
            reader = await store.open_read(ref.key, chunk_bytes=_CHUNK_BYTES)
        except BlobNotFoundError:
            raise _failed("claim_missing", ref, "no live blob (expired or deleted)") from None
        except StorageUnavailableError as exc:
            raise _failed("claim_unavailable", ref, str(exc)) from None
        async with reader:
            try:
                buf = await _gather(reader, ref)
            except BlobIntegrityError as exc:
                field = exc.details.get("field")
                raise _failed("claim_integrity", ref, str(exc), field=field) from None
            except StorageUnavailableError as exc:
                raise _failed("claim_unavailable", ref, str(exc)) from None
        self.redeemed += 1
        return buf

    async def close(self) -> None:
        """Close the store (at kernel stop); the next use opens it again."""
        async with self._lock:
            store, self._store = self._store, None
        if store is not None:
            await store.close()


async def _gather(reader: BlobReader, ref: ClaimRef) -> bytearray:
    """The reader's chunks in one buffer of the declared size, checked against ``ref``."""
    info = reader.info
    if info.size != ref.size:
        raise _failed("claim_integrity", ref, "size differs", expected=ref.size, actual=info.size)
    if info.sha256 is not None and info.sha256 != ref.sha256:
        raise _failed(
            "claim_integrity", ref, "SHA-256 differs", expected=ref.sha256, actual=info.sha256
        )
    # The reader checks what passes against ``info``, now known to match the
    # reference; without a recorded digest, hash here.
    digest = hashlib.sha256() if info.sha256 is None else None
    buf = bytearray(ref.size)
    pos = 0
    with memoryview(buf) as view:
        async for chunk in reader:
            end = pos + len(chunk)
            if end > ref.size:  # the reader stops a longer blob too; never write past
                raise _failed("claim_integrity", ref, "longer than declared")
            view[pos:end] = chunk
            pos = end
            if digest is not None:
                digest.update(chunk)
    if pos != ref.size:
        raise _failed("claim_integrity", ref, "shorter than declared", actual=pos)
    if digest is not None and digest.hexdigest() != ref.sha256:
        raise _failed("claim_integrity", ref, "SHA-256 differs", actual=digest.hexdigest())
    return buf
