"""Event ids: UUIDv5 from the business key (a retry makes the same id), else UUIDv7.

The namespace is the app's: ``uuid5(NAMESPACE_URL, "organelle:<app>")``, so
two apps that happen to share a type and key do not share ids. Within the
namespace the name hashed is ``<type>@<version>:<key values>``, each value
encoded with msgspec JSON (stable across processes and Python versions).

UUIDv7 (RFC 9562) is time-ordered: 48 bits of Unix milliseconds, then a
counter that keeps ids from one process increasing within a millisecond, then
random bits. Python 3.11 has no ``uuid.uuid7``; this is the small part of it
organelle needs.

Both run once per event that has an envelope, so they are written for speed:
the SHA-1 state after the namespace and ``<type>@<version>:`` is kept per event
type and copied (``keyed_hasher``; the UUID text written in C from the raw
digest where the extension is built); a UUIDv7 reuses its millisecond's text and
takes its random bits from a buffer of ``os.urandom`` (one system call per 256
ids, not one per id), handed out so that threads never share them.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import msgspec

from organelle._native import speedups

__all__ = ["app_namespace", "keyed_hasher", "keyed_id", "py_uuid7", "utc_now", "uuid7"]

_json = msgspec.json.Encoder(order="sorted")
_time_ns = time.time_ns
_urandom = os.urandom
_COUNTER_MAX = 0xFFF  # 12 bits: 4096 ids in one millisecond
_BUFFER_BYTES = 2048  # hex digits for 256 ids per system call
_ID_DIGITS = 16
# The RFC 4122 variant (0b10) in the top bits of a hex digit drawn at random.
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}

_last_ms = -1
_counter = 0
_head = ""  # the millisecond's text: "tttttttt-tttt-7"
# 16 random hex digits per id, handed out by a list iterator: ``next`` on it is
# one step under the GIL, so two threads never take the same digits.
_random: Iterator[str] = iter(())


@lru_cache(maxsize=64)
def app_namespace(app: str) -> uuid.UUID:
    """The UUIDv5 namespace of one app's event ids."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"organelle:{app}")


def _dashed_v5(hexdigest: str) -> str:
    """``8-4-4-4-12`` text of a SHA-1 hex digest with the version (5) and variant bits set."""
    x = hexdigest
    return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VARIANT[x[16]]}{x[17:20]}-{x[20:32]}"


@lru_cache(maxsize=256)
def keyed_hasher(app: str, type_name: str, version: int) -> Callable[[Sequence[Any]], str]:
    """``keyed_id`` for one app and event type: a function of the key values alone.

    The SHA-1 state after the namespace and ``<type>@<version>:`` is computed
    once here; each id copies it and hashes the key values only.
    """
    seed = app_namespace(app).bytes + f"{type_name}@{version}:".encode()
    prefix = _sha1(seed)
    encode = _json.encode
    v5_text: Callable[[bytes], str] | None = None if speedups is None else speedups.v5_text

    if v5_text is not None:  # the text written in C from the raw digest

        def make(values: Sequence[Any]) -> str:
            digest = prefix.copy()
            digest.update(encode(tuple(values)))
            return v5_text(digest.digest())

        return make

    def make_py(values: Sequence[Any]) -> str:
        digest = prefix.copy()
        digest.update(encode(tuple(values)))
        return _dashed_v5(digest.hexdigest())

    return make_py


def _sha1(seed: bytes) -> Any:
    """A SHA-1 state over ``seed``: CPython's own SHA-1 where present, else hashlib's.

    ``_sha1`` copies its state with a ``memcpy``; OpenSSL's (``hashlib.sha1``)
    copies through ``EVP_MD_CTX_copy`` at about 1.7 k instructions more per
    id. Both give the same digest. Imported here, for the first keyed event:
    ``hashlib`` alone costs 4 ms at import.
    """
    import importlib

    try:
        sha1 = importlib.import_module("_sha1").sha1
    except ImportError:  # a build without it
        import hashlib

        return hashlib.sha1(seed, usedforsecurity=False)
    return sha1(seed)


def keyed_id(app: str, type_name: str, version: int, values: Sequence[Any]) -> str:
    """The deterministic id of the event of ``type_name@version`` with these key values.

    ``uuid.uuid5(app_namespace(app), name)`` computed without building
    ``uuid.UUID`` objects (the same bits).
    """
    return keyed_hasher(app, type_name, version)(values)


def py_uuid7() -> str:
    """A fresh time-ordered UUIDv7, increasing within this process (pure Python)."""
    global _last_ms, _counter, _head, _random  # noqa: PLW0603 - one clock per process
    ms = _time_ns() // 1_000_000
    if ms > _last_ms:
        _last_ms = ms
        _counter = _urandom(1)[0] << 2  # a random start, room to count up
        _head = f"{ms >> 16 & 0xFFFFFFFF:08x}-{ms & 0xFFFF:04x}-7"
    else:
        _counter += 1
        if _counter > _COUNTER_MAX:  # borrow the next millisecond
            _last_ms += 1
            _counter = 0
            _head = f"{_last_ms >> 16 & 0xFFFFFFFF:08x}-{_last_ms & 0xFFFF:04x}-7"
    r = next(_random, None)
    if r is None:
        digits = _urandom(_BUFFER_BYTES).hex()
        chunks = [digits[i : i + _ID_DIGITS] for i in range(0, len(digits), _ID_DIGITS)]
        _random = iter(chunks)
        r = next(_random)
    return f"{_head}{_counter:03x}-{_VARIANT[r[0]]}{r[1:4]}-{r[4:16]}"


def py_utc_now() -> datetime:
    """``datetime.now(UTC)`` (the pure form of ``utc_now``)."""
    return datetime.now(UTC)


uuid7: Callable[[], str] = py_uuid7 if speedups is None else speedups.uuid7
utc_now: Callable[[], datetime] = py_utc_now if speedups is None else speedups.utc_now
