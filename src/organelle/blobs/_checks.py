"""What the blob port accepts: keys, prefixes, content types, metadata, TTLs, chunks.

Kept apart from ``base.py`` so the port stays a small readable contract;
character sets rather than regular expressions, so importing costs nothing.
"""

from __future__ import annotations

import math
import string
from collections.abc import AsyncGenerator, AsyncIterable, Mapping

from organelle.errors import ValidationError

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_CONTENT_TYPE",
    "MAX_KEY_LENGTH",
    "bad",
    "check_chunk_bytes",
    "check_content_type",
    "check_key",
    "check_metadata",
    "check_prefix",
    "check_ttl",
    "checked_chunks",
    "one_chunk",
]

DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_KEY_LENGTH = 1024
MAX_METADATA_BYTES = 2048  # S3's limit on user metadata: the strictest backend sets it
DEFAULT_CHUNK_BYTES = 256 * 1024

_KEY_CHARS = frozenset(string.ascii_letters + string.digits + "._~=+:@!-")
_META_CHARS = frozenset(string.ascii_lowercase + string.digits + "-")
_PRINTABLE = frozenset(chr(c) for c in range(0x20, 0x7F))
_RESERVED_META = "organelle-"  # the backends keep their own fields under this prefix


def bad(field_: str, message: str) -> ValidationError:
    """A ``ValidationError`` naming one field (every bad-input error of the port)."""
    return ValidationError(message, errors=[{"field": field_, "message": message}])


def check_key(key: object) -> str:
    """Return ``key`` if it is a valid blob key, else raise ``ValidationError``.

    Keys map onto file names, S3 keys and NATS subjects alike, so the safe
    alphabet is narrow and path tricks (``..``, a leading ``/``) never pass.
    """
    if not isinstance(key, str):
        raise bad("key", f"key must be a str, not {type(key).__name__}")
    if not key or len(key) > MAX_KEY_LENGTH:
        raise bad("key", f"key must be 1-{MAX_KEY_LENGTH} characters, got {len(key)}")
    segments = key.split("/")
    if not all(segment and _KEY_CHARS.issuperset(segment) for segment in segments):
        raise bad(
            "key",
            f"key {key!r} must be '/'-separated segments of [A-Za-z0-9._~=+:@!-] "
            "(no leading, trailing or double '/')",
        )
    if any(segment in {".", ".."} for segment in segments):
        raise bad("key", f"key {key!r} must not have a '.' or '..' segment")
    return key


def check_prefix(prefix: object) -> str:
    """Return ``prefix`` if it can start a key (empty lists everything)."""
    if not isinstance(prefix, str) or len(prefix) > MAX_KEY_LENGTH:
        raise bad("prefix", f"prefix must be a str of at most {MAX_KEY_LENGTH} characters")
    if not _KEY_CHARS.union("/").issuperset(prefix) or prefix.startswith("/"):
        raise bad("prefix", f"prefix {prefix!r} cannot start a valid key")
    return prefix


def check_content_type(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > 255:  # noqa: PLR2004 - RFC 6838 bound
        raise bad("content_type", "content_type must be a str of 1-255 characters")
    if not _PRINTABLE.issuperset(value):
        raise bad("content_type", "content_type must be printable ASCII")
    return value


def check_metadata(metadata: object) -> dict[str, str]:
    """Lower-case ``[a-z0-9-]`` names and printable ASCII values: what S3 headers carry intact."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise bad("metadata", "metadata must be a mapping of str to str")
    out: dict[str, str] = {}
    for name, value in metadata.items():
        if (
            not isinstance(name, str)
            or not 0 < len(name) < 64  # noqa: PLR2004 - the documented bound
            or name.startswith("-")
            or not _META_CHARS.issuperset(name)
        ):
            raise bad("metadata", f"metadata name {name!r} must be 1-63 of [a-z0-9-]")
        if name.startswith(_RESERVED_META):
            raise bad("metadata", f"metadata name {name!r}: '{_RESERVED_META}' is reserved")
        if not isinstance(value, str) or not _PRINTABLE.issuperset(value):
            raise bad("metadata", f"metadata value of {name!r} must be a printable ASCII str")
        out[name] = value
    if sum(len(k) + len(v) for k, v in out.items()) > MAX_METADATA_BYTES:
        raise bad("metadata", f"metadata is larger than {MAX_METADATA_BYTES} bytes")
    return out


def check_ttl(ttl_s: object) -> float | None:
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


def check_chunk_bytes(chunk_bytes: object) -> int:
    if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, int) or chunk_bytes < 1:
        raise bad("chunk_bytes", "chunk_bytes must be a positive int")
    return chunk_bytes


async def checked_chunks(chunks: AsyncIterable[bytes]) -> AsyncGenerator[bytes, None]:
    """The caller's chunks as ``bytes``, empty ones dropped, anything else refused."""
    if not isinstance(chunks, AsyncIterable):
        raise bad("chunks", "chunks must be an async iterable of bytes")
    async for chunk in chunks:
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise bad("chunks", f"a chunk must be bytes, not {type(chunk).__name__}")
        if chunk:
            yield bytes(chunk)


async def one_chunk(data: bytes) -> AsyncGenerator[bytes, None]:
    yield data
