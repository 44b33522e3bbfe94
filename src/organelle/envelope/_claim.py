"""The claim-check on the wire: a payload kept in a blob store, the message holding its reference.

A body larger than ``[kernel] claim_check_above`` is written to the kernel's
blob store; the event or stream record then carries, instead of the body:

==============================  ===================================================
``ce-dataref``                  the CloudEvents ``dataref`` extension: a URI-reference
                                to the data, here ``urn:organelle:blob:<key>``
``Organelle-Dataref-Size``      the body's length in bytes
``Organelle-Dataref-Sha256``    the body's SHA-256, hex
==============================  ===================================================

and an empty body. ``content-type`` still names the data's media type. The
headers are ``ce-*`` and ``Organelle-*``, so a signature covers them (and,
through the SHA-256, the payload). Pure: the blob I/O is done by whoever
implements ``ClaimCheck`` (the kernel's ``Claims`` part); the transport and
the stream host are handed it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote, unquote

from organelle.errors import ValidationError

__all__ = [
    "BLOB_URN",
    "DATAREF",
    "SHA256_HEADER",
    "SIZE_HEADER",
    "ClaimCheck",
    "ClaimRef",
    "claim_of",
    "without_claim",
]

DATAREF = "ce-dataref"
SIZE_HEADER = "Organelle-Dataref-Size"
SHA256_HEADER = "Organelle-Dataref-Sha256"
BLOB_URN = "urn:organelle:blob:"
_SIZE = SIZE_HEADER.lower()
_SHA256 = SHA256_HEADER.lower()
_OURS = frozenset({DATAREF, _SIZE, _SHA256})
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SAFE = "/:@!~=+.-_"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimRef:
    """Where a claimed payload is, and what it must be.

    Attributes:
        key: the blob's key in the store.
        size: the payload's length in bytes.
        sha256: the payload's SHA-256, lower-case hex.
    """

    key: str
    size: int
    sha256: str

    @property
    def uri(self) -> str:
        """The ``ce-dataref`` value: ``urn:organelle:blob:<key>``."""
        return BLOB_URN + self.key

    def headers(self) -> dict[str, str]:
        """The headers that stand for the payload (names as organelle writes them)."""
        return {
            DATAREF: quote(self.uri, safe=_SAFE),
            SIZE_HEADER: str(self.size),
            SHA256_HEADER: self.sha256,
        }


def _malformed(message: str) -> ValidationError:
    return ValidationError(message, errors=[{"field": DATAREF, "message": message}])


def _header(headers: Mapping[str, str], lower: str) -> str:
    found = headers.get(lower)
    if found is None:
        found = next((v for k, v in headers.items() if k.lower() == lower), "")
    return found.strip()


def claim_of(headers: Mapping[str, str]) -> ClaimRef | None:
    """The claim in ``headers``, or ``None`` when there is none of organelle's.

    ``ce-dataref`` is looked up as written (lower case, as every ``ce-*``
    header organelle writes and NATS parses); the two others in any case.

    A ``ce-dataref`` that is not ``urn:organelle:blob:…`` (another producer's
    reference) is not a claim: the event keeps it as an extension.

    Raises:
        ValidationError: an organelle reference without a valid size or SHA-256.
    """
    ref = headers.get(DATAREF)
    if ref is None:
        return None
    uri = unquote(ref).strip()
    if not uri.startswith(BLOB_URN):
        return None
    key = uri[len(BLOB_URN) :]
    size_text = _header(headers, _SIZE)
    sha = _header(headers, _SHA256).lower()
    if not key or not size_text.isdigit():
        raise _malformed(f"claim-check reference {uri!r} without a key or a valid size")
    if not _HEX64.match(sha):
        raise _malformed(f"claim-check reference {uri!r} without a valid SHA-256")
    return ClaimRef(key=key, size=int(size_text), sha256=sha)


def without_claim(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` without the claim's own (what the envelope is rebuilt from)."""
    return {k: v for k, v in headers.items() if k.lower() not in _OURS}


class ClaimCheck(Protocol):
    """Puts large bodies in a blob store and fetches them back (the kernel's ``Claims``).

    Handed to the transports and the stream host; they never see the store.
    """

    @property
    def above(self) -> int:
        """Bodies longer than this many bytes are claimed; 0: none (the check is off)."""
        ...

    @property
    def event_ttl_s(self) -> float | None:
        """How long a claimed event's payload lives (``claim_check_ttl_s``)."""
        ...

    async def claim(self, body: bytes, *, kind: str, ttl_s: float | None) -> ClaimRef:
        """Store ``body`` under a fresh key (``claims/<kind>/…``), expiring after ``ttl_s``.

        Raises:
            StorageUnavailableError: the blob store is unreachable (the send fails).
        """
        ...

    async def redeem(self, ref: ClaimRef) -> bytes | bytearray:
        """The payload ``ref`` names, read chunk by chunk and checked against its size and SHA-256.

        Raises:
            ClaimCheckError: the blob is missing or expired (``claim_missing``),
                differs from the reference (``claim_integrity``), or the store is
                unreachable (``claim_unavailable``).
        """
        ...
