"""Compressing event bodies on the wire: zstd (the ``zstandard`` package) or gzip (stdlib).

The body is compressed after it is encoded and before it is signed; the
``Organelle-Encoding`` header names the algorithm (``content-type`` keeps
naming the media type of the *uncompressed* data, so a CloudEvents SDK sees
the right ``datacontenttype`` — and must check this header first).

Decompression is bounded: output is produced in chunks of at most 64 KiB and
refused as soon as it passes ``max_bytes``, so a small "bomb" never grows
into a large allocation. zstd frames declaring a larger content size are
refused before a byte is produced, and the decoder's window is capped to the
bound. ``zstandard`` is optional (the ``zstd`` extra); gzip always works.
"""

from __future__ import annotations

import zlib
from typing import Any

from organelle.errors import ConfigError, ValidationError

__all__ = ["ENCODINGS", "ENCODING_HEADER", "compress", "decompress", "zstd_available"]

ENCODING_HEADER = "Organelle-Encoding"
ENCODINGS = ("zstd", "gzip")
_CHUNK = 64 * 1024
_GZIP_WBITS = 31  # 16 + MAX_WBITS: a gzip wrapper, nothing else
# Every regular zstd level (1-19) needs at most an 8 MiB window; more is refused.
_ZSTD_MIN_WINDOW_LOG = 23
_ZSTD_MAX_WINDOW_LOG = 31
_DEFAULT_LEVEL = {"zstd": 3, "gzip": 6}


def _zstd() -> Any | None:
    try:
        import zstandard
    except ImportError:
        return None
    return zstandard


def zstd_available() -> bool:
    """Whether the ``zstandard`` package is installed here."""
    return _zstd() is not None


def compress(body: bytes, algorithm: str, level: int | None = None) -> bytes:
    """``body`` compressed with ``algorithm`` (``zstd`` or ``gzip``).

    Raises:
        ConfigError: an unknown algorithm, or ``zstd`` without ``zstandard``.
    """
    if algorithm == "gzip":
        packer = zlib.compressobj(_DEFAULT_LEVEL["gzip"] if level is None else level, wbits=31)
        return packer.compress(body) + packer.flush()
    if algorithm == "zstd":
        zstandard = _zstd()
        if zstandard is None:
            raise ConfigError("zstd compression needs the zstandard package: organelle[zstd]")
        packer = zstandard.ZstdCompressor(
            level=_DEFAULT_LEVEL["zstd"] if level is None else level, write_content_size=True
        )
        out: bytes = packer.compress(body)
        return out
    raise ConfigError(f"unknown compression {algorithm!r}; expected one of {ENCODINGS}")


def _refuse(reason: str, message: str) -> ValidationError:
    return ValidationError(
        message,
        errors=[{"field": "organelle-encoding", "message": message}],
        details={"reason": reason},
    )


def _too_large(max_bytes: int) -> ValidationError:
    return _refuse("too_large", f"the event body decompresses to more than {max_bytes} bytes")


def decompress(body: bytes, algorithm: str, max_bytes: int) -> bytes:
    """``body`` decompressed, never more than ``max_bytes`` of it.

    Raises:
        ValidationError: ``details["reason"]`` is ``"too_large"`` when the output
            would pass ``max_bytes``, ``"encoding"`` for an unknown or unavailable
            algorithm, corrupt or truncated data.
    """
    algorithm = algorithm.strip().lower()
    if algorithm == "gzip":
        return _gunzip(body, max_bytes)
    if algorithm == "zstd":
        return _unzstd(body, max_bytes)
    if algorithm in ("", "identity"):
        return body
    raise _refuse("encoding", f"unknown Organelle-Encoding {algorithm!r}")


def _gunzip(body: bytes, max_bytes: int) -> bytes:
    unpacker = zlib.decompressobj(wbits=_GZIP_WBITS)
    out = bytearray()
    pending = body
    try:
        while not unpacker.eof:
            chunk = unpacker.decompress(pending, min(_CHUNK, max_bytes + 1 - len(out)))
            out += chunk
            if len(out) > max_bytes:
                raise _too_large(max_bytes)
            pending = unpacker.unconsumed_tail
            if not chunk and not pending and not unpacker.eof:
                raise _refuse("encoding", "truncated gzip data")
    except zlib.error as exc:
        raise _refuse("encoding", f"corrupt gzip data: {exc}") from None
    if unpacker.unused_data:
        raise _refuse("encoding", "trailing bytes after the gzip data")
    return bytes(out)


def _unzstd(body: bytes, max_bytes: int) -> bytes:
    zstandard = _zstd()
    if zstandard is None:
        raise _refuse("encoding", "a zstd-compressed event, but zstandard is not installed here")
    try:
        declared = zstandard.frame_content_size(body)
    except zstandard.ZstdError as exc:
        raise _refuse("encoding", f"corrupt zstd data: {exc}") from None
    if declared > max_bytes:
        raise _too_large(max_bytes)
    # The window is most of what the decoder allocates: no more than the output may be,
    # or what the regular levels use.
    window_log = min(
        max(_ZSTD_MIN_WINDOW_LOG, max(1, max_bytes - 1).bit_length()), _ZSTD_MAX_WINDOW_LOG
    )
    unpacker = zstandard.ZstdDecompressor(max_window_size=1 << window_log)
    out = bytearray()
    try:
        with unpacker.stream_reader(body, read_across_frames=True) as reader:
            while chunk := reader.read(min(_CHUNK, max_bytes + 1 - len(out))):
                out += chunk
                if len(out) > max_bytes:
                    raise _too_large(max_bytes)
    except zstandard.ZstdError as exc:
        if "memory" in str(exc):  # a window past the cap: too large to decode here
            raise _too_large(max_bytes) from None
        raise _refuse("encoding", f"corrupt zstd data: {exc}") from None
    if (declared >= 0 and len(out) != declared) or (body and not out and declared != 0):
        raise _refuse("encoding", "truncated zstd data")
    return bytes(out)
