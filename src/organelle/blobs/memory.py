"""``MemoryBlobStore``: blobs in a dict, for tests and throwaway data (``memory://``).

A blob is kept as the tuple of chunks it was written in (no join, so a
streamed write holds the object once, not twice) and swapped in whole when
the write ends, so readers see the old blob or the new one. Reads hand out
slices of those chunks; nothing is copied into a second whole object.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from organelle.blobs.base import BaseBlobStore, BlobInfo, BlobReader, Digest, Draft

__all__ = ["MemoryBlobStore"]


class MemoryBlobStore(BaseBlobStore):
    """A ``BlobStore`` in process memory; lost on exit.

    Args:
        **options: see ``BaseBlobStore`` (``clock``).
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._blobs: dict[str, tuple[BlobInfo, tuple[bytes, ...]]] = {}

    async def _close(self) -> None:
        self._blobs.clear()

    async def _write(self, draft: Draft, chunks: AsyncGenerator[bytes, None]) -> BlobInfo:
        digest = Digest()
        parts = tuple([digest.update(chunk) async for chunk in chunks])
        info = draft.info(digest.size, digest.hex)
        self._blobs[draft.key] = (info, parts)
        return info

    async def _read(self, key: str, chunk_bytes: int) -> BlobReader | None:
        found = self._blobs.get(key)
        if found is None:
            return None
        info, parts = found
        return BlobReader(info, _slices(parts, chunk_bytes))

    async def _head(self, key: str) -> BlobInfo | None:
        found = self._blobs.get(key)
        return None if found is None else found[0]

    async def _remove(self, key: str) -> BlobInfo | None:
        found = self._blobs.pop(key, None)
        return None if found is None else found[0]

    async def _scan(self, prefix: str) -> AsyncIterator[BlobInfo]:
        for key in sorted(k for k in self._blobs if k.startswith(prefix)):
            found = self._blobs.get(key)
            if found is not None:
                yield found[0]

    async def _remove_expired(self, key: str, now: float) -> bool:
        found = self._blobs.get(key)
        if found is None or not found[0].expired(now):
            return False
        del self._blobs[key]
        return True


async def _slices(parts: tuple[bytes, ...], size: int) -> AsyncGenerator[bytes, None]:
    for part in parts:
        if len(part) <= size:
            yield part
            continue
        view = memoryview(part)
        for start in range(0, len(part), size):
            yield bytes(view[start : start + size])
