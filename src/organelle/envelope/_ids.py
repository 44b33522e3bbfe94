"""Event ids: UUIDv5 from the business key (a retry makes the same id), else UUIDv7.

The namespace is the app's: ``uuid5(NAMESPACE_URL, "organelle:<app>")``, so
two apps that happen to share a type and key do not share ids. Within the
namespace the name hashed is ``<type>@<version>:<key values>``, each value
encoded with msgspec JSON (stable across processes and Python versions).

UUIDv7 (RFC 9562) is time-ordered: 48 bits of Unix milliseconds, then a
counter that keeps ids from one process increasing within a millisecond, then
random bits. Python 3.11 has no ``uuid.uuid7``; this is the small part of it
organelle needs.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import msgspec

__all__ = ["app_namespace", "keyed_id", "uuid7"]

_json = msgspec.json.Encoder(order="sorted")
_last_ms = 0
_counter = 0
_COUNTER_MAX = 0xFFF
_MS = (1 << 48) - 1
_RAND_B = (1 << 62) - 1
_VARIANT = 0b10 << 62
_urandom = os.urandom  # 12 bits: 4096 ids in one millisecond


@lru_cache(maxsize=64)
def app_namespace(app: str) -> uuid.UUID:
    """The UUIDv5 namespace of one app's event ids."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"organelle:{app}")


@lru_cache(maxsize=64)
def _namespace_bytes(app: str) -> bytes:
    return app_namespace(app).bytes


def _dashed(hex32: str) -> str:
    """``8-4-4-4-12`` form of 32 hex digits (what ``str(uuid.UUID)`` prints)."""
    return f"{hex32[:8]}-{hex32[8:12]}-{hex32[12:16]}-{hex32[16:20]}-{hex32[20:]}"


def keyed_id(app: str, type_name: str, version: int, values: Sequence[Any]) -> str:
    """The deterministic id of the event of ``type_name@version`` with these key values.

    ``uuid.uuid5(app_namespace(app), name)`` computed without building
    ``uuid.UUID`` objects (the same bits, a third of the time: it runs once
    per keyed event).
    """
    name = f"{type_name}@{version}:".encode() + _json.encode(list(values))
    import hashlib  # 4 ms at import: loaded for the first keyed event

    digest = bytearray(hashlib.sha1(_namespace_bytes(app) + name, usedforsecurity=False).digest())
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return _dashed(digest[:16].hex())


def uuid7() -> str:
    """A fresh time-ordered UUIDv7, increasing within this process."""
    global _last_ms, _counter  # noqa: PLW0603 - one clock per process
    ms = time.time_ns() // 1_000_000
    if ms > _last_ms:
        _last_ms = ms
        _counter = int.from_bytes(os.urandom(2), "big") & 0x3FF  # room to count up
    else:
        _counter += 1
        if _counter > _COUNTER_MAX:  # borrow the next millisecond
            _last_ms += 1
            _counter = 0
        ms = _last_ms
    rand_b = int.from_bytes(_urandom(8), "big") & _RAND_B | _VARIANT
    hi = (ms & _MS) << 16 | 0x7000 | _counter
    text = f"{hi:016x}{rand_b:016x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
