"""Counting and cutting the bytes that pass through a backend."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable

__all__ = ["Digest", "regroup"]


class Digest:
    """Size and SHA-256 of the bytes a backend writes, counted as they pass."""

    __slots__ = ("_hash", "size")

    def __init__(self) -> None:
        import hashlib

        self._hash = hashlib.sha256()
        self.size = 0

    def update(self, chunk: bytes) -> bytes:
        """Count ``chunk``; return it unchanged."""
        self._hash.update(chunk)
        self.size += len(chunk)
        return chunk

    @property
    def hex(self) -> str:
        """The hex SHA-256 so far."""
        return self._hash.hexdigest()


async def regroup(chunks: AsyncIterable[bytes], size: int) -> AsyncGenerator[bytes, None]:
    """The same bytes in pieces of exactly ``size`` (the last one shorter).

    For backends with a fixed unit (a NATS chunk, an S3 part): holds at most
    one piece plus one incoming chunk.
    """
    buffer = bytearray()
    async for chunk in chunks:
        view = memoryview(chunk)
        if buffer:
            take = size - len(buffer)
            buffer += view[:take]
            view = view[take:]
            if len(buffer) < size:
                continue
            piece = bytes(buffer)
            buffer.clear()  # frees its storage: one copy of the piece is alive, not two
            yield piece
        while len(view) >= size:
            yield bytes(view[:size])
            view = view[size:]
        buffer += view
    if buffer:
        yield bytes(buffer)
