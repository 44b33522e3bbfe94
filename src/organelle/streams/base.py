"""The ``StreamLog`` port: durable, partitioned, replayable logs read by consumer groups.

A stream is split into partitions; a record goes to the partition its key
hashes to, so records with one key keep their order. Offsets grow within a
partition (contiguous on SQLite, JetStream sequence numbers on NATS: they may
skip). A consumer group reads every partition in order, one record at a time
per partition, and moves its position only when a record is done: delivery is
at-least-once. Whoever claims a partition holds a lease; a claim, ``commit``
or ``dead`` by a holder whose lease another owner has since taken is refused
(``LeaseLostError``), so a stalled consumer cannot move the group's position.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, Self, runtime_checkable

from organelle.errors import ValidationError

__all__ = [
    "BaseStreamLog",
    "BatchClaims",
    "Delivery",
    "GroupInfo",
    "PartitionInfo",
    "Record",
    "Start",
    "StreamInfo",
    "StreamLog",
    "StreamSpec",
    "check_name",
    "partition_for",
]

Start = Literal["earliest", "latest"]
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_name(kind: str, name: object) -> str:
    """Stream and group names: letters, digits, ``-`` and ``_`` (they become subjects).

    Raises:
        ValidationError: anything else.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValidationError(
            f"{kind} name {name!r} must be 1-64 letters, digits, '-' or '_'",
            errors=[{"field": kind, "message": "invalid name"}],
        )
    return name


def partition_for(key: str | None, partitions: int, counter: int = 0) -> int:
    """The partition of ``key`` (stable across processes); keyless records round-robin."""
    if key is None:
        return counter % partitions
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamSpec:
    """How a stream is laid out and how long it keeps records.

    ``max_age_s`` / ``max_records`` (per partition) bound retention; ``None``
    keeps everything. The partition count is fixed when the stream is first
    created: a spec with another count is refused.
    """

    partitions: int = 1
    max_age_s: float | None = None
    max_records: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.partitions <= 1024:  # noqa: PLR2004 - a sane bound
            raise ValidationError("partitions must be between 1 and 1024")
        if self.max_age_s is not None and self.max_age_s <= 0:
            raise ValidationError("max_age_s must be positive")
        if self.max_records is not None and self.max_records < 1:
            raise ValidationError("max_records must be at least 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """One stored record: the payload as encoded bytes, plus its place and headers."""

    stream: str
    partition: int
    offset: int
    key: str | None
    data: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    ts: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """A record handed to a group's consumer; ``attempt`` counts its deliveries (1-based).

    ``lease_s`` is the lease it was claimed under: each commit renews it, so a
    member working through a claimed batch keeps the partition.
    """

    record: Record
    group: str
    attempt: int
    lease_s: float = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PartitionInfo:
    """Where a partition's retained records start and end (``first > last``: empty)."""

    partition: int
    first: int
    last: int


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupInfo:
    """A consumer group's position in one partition and how far behind it is."""

    group: str
    partition: int
    next_offset: int
    lag: int
    owner: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamInfo:
    """A stream's layout, retained range per partition and its groups' positions."""

    name: str
    spec: StreamSpec
    partitions: list[PartitionInfo]
    groups: list[GroupInfo]


class BatchClaims:
    """``claim`` as a batch of one, for a backend that implements ``claim_batch``."""

    async def claim_batch(
        self,
        group: str,
        stream: str,
        partition: int,
        owner: str,
        *,
        lease_s: float,
        start: Start = "earliest",
        limit: int = 1,
    ) -> list[Delivery]:
        """See ``StreamLog.claim_batch``."""
        raise NotImplementedError

    async def claim(
        self,
        group: str,
        stream: str,
        partition: int,
        owner: str,
        *,
        lease_s: float,
        start: Start = "earliest",
    ) -> Delivery | None:
        """Lease the group's next record of ``partition`` to ``owner`` (or ``None``)."""
        got = await self.claim_batch(
            group, stream, partition, owner, lease_s=lease_s, start=start, limit=1
        )
        return got[0] if got else None


class BaseStreamLog(BatchClaims):
    """What every backend shares: ``async with`` opens and closes, ``claim`` is a batch of one."""

    async def open(self) -> Self:
        """Connect / create what is needed (idempotent); returns ``self``."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release connections; idempotent, never raises."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


@runtime_checkable
class StreamLog(Protocol):
    """A durable log of streams; memory, SQLite and JetStream pass one contract suite."""

    async def open(self) -> StreamLog:
        """Connect / create what is needed; returns ``self`` (``open_log`` already did)."""
        ...

    async def close(self) -> None:
        """Release connections; idempotent, never raises."""
        ...

    async def __aenter__(self) -> Self:
        """Open if needed; ``async with await open_log(url) as log:``."""
        ...

    async def __aexit__(self, *exc: object) -> None:
        """Close."""
        ...

    async def ensure(self, stream: str, spec: StreamSpec) -> StreamSpec:
        """Create ``stream`` if missing (or update its retention); return its spec.

        Raises:
            ValidationError: the stream exists with another partition count.
        """
        ...

    async def append(
        self,
        stream: str,
        data: bytes,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, int]:
        """Store one record durably; return ``(partition, offset)`` once it is safe.

        Raises:
            StreamNotFoundError: ``ensure`` was never called for ``stream``.
        """
        ...

    async def read(
        self, stream: str, partition: int, from_offset: int = 0, limit: int = 100
    ) -> list[Record]:
        """Up to ``limit`` retained records of a partition with ``offset >= from_offset``."""
        ...

    async def claim(
        self,
        group: str,
        stream: str,
        partition: int,
        owner: str,
        *,
        lease_s: float,
        start: Start = "earliest",
    ) -> Delivery | None:
        """The group's next record of ``partition``, leased to ``owner``.

        ``None`` if there is none yet or another owner's lease is live. A new
        group starts at the first retained record (``earliest``) or after the
        last (``latest``).
        """
        ...

    async def claim_batch(
        self,
        group: str,
        stream: str,
        partition: int,
        owner: str,
        *,
        lease_s: float,
        start: Start = "earliest",
        limit: int = 1,
    ) -> list[Delivery]:
        """Like ``claim``, but up to ``limit`` consecutive records under one lease.

        Commit them one by one, in order; releasing gives back the rest. Only
        the first can be a redelivery (its ``attempt`` counts); the others
        come with ``attempt`` 1.
        """
        ...

    async def commit(self, delivery: Delivery, owner: str) -> None:
        """Done with ``delivery``: the group moves past it (and the lease is renewed).

        Raises:
            LeaseLostError: another owner holds the partition now.
        """
        ...

    async def release(self, delivery: Delivery, owner: str, *, attempted: bool = True) -> None:
        """Give the lease back without moving (the record comes again); never raises.

        The record counts as delivered ``delivery.attempt`` times, or one less
        when it was handed back unstarted (``attempted=False``, e.g. the rest
        of a batch at shutdown), so the next ``attempt`` is right either way.
        """
        ...

    async def dead(self, delivery: Delivery, owner: str, error: str) -> None:
        """Give up on ``delivery``: keep it as a dead letter and move past it.

        Raises:
            LeaseLostError: another owner holds the partition now.
        """
        ...

    async def dead_letters(
        self, group: str, stream: str, limit: int = 100
    ) -> list[dict[str, object]]:
        """The group's dead letters of ``stream``, oldest first (offset, partition, error, ts)."""
        ...

    async def seek(self, group: str, stream: str, to: Start | int) -> None:
        """Move the group, in every partition, to ``earliest``, ``latest`` or an offset."""
        ...

    async def info(self, stream: str) -> StreamInfo:
        """Layout, retained ranges and group positions.

        Raises:
            StreamNotFoundError: no such stream.
        """
        ...

    async def trim(self) -> int:
        """Apply retention now (backends also do it on their own); return records removed."""
        ...
