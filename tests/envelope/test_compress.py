"""Compressed bodies: both algorithms round-trip, and decompression never passes its bound."""

from __future__ import annotations

import os
import tracemalloc
import zlib

import pytest
import zstandard

from organelle.envelope._compress import compress, decompress, zstd_available
from organelle.errors import ConfigError, ValidationError

BODY = b'{"sku": "A1", "note": "' + b"lorem ipsum " * 20_000 + b'"}'


@pytest.mark.parametrize("algorithm", ["zstd", "gzip"])
def test_a_body_round_trips_smaller(algorithm: str) -> None:
    packed = compress(BODY, algorithm)
    assert len(packed) < len(BODY) // 20
    assert decompress(packed, algorithm, len(BODY)) == BODY
    assert decompress(compress(b"", algorithm), algorithm, 10) == b""


@pytest.mark.parametrize("algorithm", ["zstd", "gzip"])
def test_one_byte_over_the_bound_is_refused(algorithm: str) -> None:
    packed = compress(BODY, algorithm)
    with pytest.raises(ValidationError) as err:
        decompress(packed, algorithm, len(BODY) - 1)
    assert err.value.details["reason"] == "too_large"


@pytest.mark.parametrize("algorithm", ["zstd", "gzip"])
def test_a_bomb_is_refused_with_bounded_memory(algorithm: str) -> None:
    # 256 MiB of zeros: a quarter megabyte compressed with gzip, a few KiB with zstd.
    size = 256 << 20
    if algorithm == "gzip":
        packer = zlib.compressobj(9, wbits=31)
        chunk = bytes(1 << 20)
        bomb = b"".join(packer.compress(chunk) for _ in range(size >> 20)) + packer.flush()
    else:
        packer_z = zstandard.ZstdCompressor(level=19).compressobj()
        chunk = bytes(1 << 20)
        bomb = b"".join(packer_z.compress(chunk) for _ in range(size >> 20)) + packer_z.flush()
    tracemalloc.start()
    try:
        with pytest.raises(ValidationError) as err:
            decompress(bomb, algorithm, 1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.value.details["reason"] == "too_large"
    assert peak < 8 << 20  # a few chunks past the 1 MiB bound, never the 256 MiB


def test_a_zstd_frame_declaring_a_huge_size_is_refused_before_decoding() -> None:
    frame = zstandard.ZstdCompressor(write_content_size=True).compress(bytes(10 << 20))
    with pytest.raises(ValidationError) as err:
        decompress(frame, "zstd", 1 << 20)
    assert err.value.details["reason"] == "too_large"


@pytest.mark.parametrize(
    ("algorithm", "data"),
    [
        ("gzip", b"not gzip at all"),
        ("gzip", compress(BODY, "gzip")[:-40]),  # truncated
        ("gzip", compress(b"x", "gzip") + b"junk"),  # trailing bytes
        ("zstd", b"not zstd at all"),
        ("zstd", compress(os.urandom(4000), "zstd")[:-10]),  # truncated
        ("brotli", b"whatever"),
    ],
)
def test_corrupt_truncated_or_unknown_data_is_a_validation_error(
    algorithm: str, data: bytes
) -> None:
    with pytest.raises(ValidationError) as err:
        decompress(data, algorithm, 1 << 20)
    assert err.value.details["reason"] == "encoding"


def test_identity_passes_and_unknown_algorithms_do_not_compress() -> None:
    assert decompress(b"abc", "identity", 10) == b"abc"
    assert zstd_available()
    with pytest.raises(ConfigError):
        compress(b"abc", "lz4")
