"""``MemoryStreamLog``: streams in this process's memory, for tests and demos.

The same rules as ``SqliteStreamLog``, so one contract suite holds for both:
offsets are contiguous per partition from 1 and never reused, a group's
position, lease and attempt count move together, retention trims from the
front. Every operation runs without awaiting, so each is atomic on the event
loop the way a transaction is atomic in SQLite. Nothing survives the process;
closing keeps the data, so a closed log opens again where it was.
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Self

from organelle.errors import LeaseLostError, StreamNotFoundError, ValidationError
from organelle.streams.base import (
    BaseStreamLog,
    Delivery,
    GroupInfo,
    PartitionInfo,
    Record,
    Start,
    StreamInfo,
    StreamSpec,
    check_name,
    partition_for,
)

__all__ = ["MemoryStreamLog"]


def _offset(record: Record) -> int:
    return record.offset


@dataclass(slots=True)
class _Partition:
    """Retained records in offset order, and the offset the next append gets."""

    records: list[Record] = field(default_factory=list)
    next_off: int = 1

    def first(self) -> int | None:
        return self.records[0].offset if self.records else None

    def start(self, start: Start) -> int:
        """Where a new group begins: the first retained record, or after the last."""
        first = self.first()
        return self.next_off if start == "latest" or first is None else first

    def index(self, offset: int) -> int:
        """Where the first retained record at or after ``offset`` is."""
        return bisect.bisect_left(self.records, offset, key=_offset)

    def since(self, offset: int, limit: int) -> list[Record]:
        i = self.index(offset)
        return self.records[i : i + limit]


@dataclass(slots=True)
class _Stream:
    spec: StreamSpec
    parts: list[_Partition]


@dataclass(slots=True)
class _Group:
    """One group's place in one partition, and who holds it until when."""

    next_off: int
    owner: str | None = None
    lease_until: float = 0.0
    attempts: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class _Letter:
    key: str | None
    data: bytes
    error: str
    ts: float


class MemoryStreamLog(BaseStreamLog):
    """A ``StreamLog`` that lives and dies with the process.

    Args:
        clock: wall-clock seconds (leases, ages); inject a fake one in tests.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._streams: dict[str, _Stream] = {}
        self._groups: dict[tuple[str, str, int], _Group] = {}
        self._dead: dict[tuple[str, str, int, int], _Letter] = {}
        self._round_robin = itertools.count()

    async def open(self) -> Self:
        """Nothing to connect; returns ``self``."""
        return self

    async def close(self) -> None:
        """Nothing to release; the data stays until the object goes."""

    def _stream(self, stream: str) -> _Stream:
        found = self._streams.get(stream)
        if found is None:
            raise StreamNotFoundError(f"no stream named {stream!r}", details={"stream": stream})
        return found

    def _partition(self, stream: str, partition: int) -> _Partition:
        """The partition, or an empty one for a number the stream does not have."""
        parts = self._stream(stream).parts
        return parts[partition] if 0 <= partition < len(parts) else _Partition()

    # -- streams -----------------------------------------------------------------------
    async def ensure(self, stream: str, spec: StreamSpec) -> StreamSpec:
        """Create ``stream`` or update its retention; the partition count is fixed."""
        check_name("stream", stream)
        found = self._streams.get(stream)
        if found is None:
            parts = [_Partition() for _ in range(spec.partitions)]
            self._streams[stream] = _Stream(spec=spec, parts=parts)
            return spec
        if found.spec.partitions != spec.partitions:
            raise ValidationError(
                f"stream {stream!r} has {found.spec.partitions} partitions, not {spec.partitions}",
                errors=[{"field": "partitions", "message": "cannot change"}],
            )
        found.spec = spec
        return spec

    async def append(
        self,
        stream: str,
        data: bytes,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, int]:
        """Store one record; return ``(partition, offset)``."""
        found = self._stream(stream)
        part = partition_for(key, found.spec.partitions, next(self._round_robin))
        p = found.parts[part]
        off, p.next_off = p.next_off, p.next_off + 1
        p.records.append(
            Record(
                stream=stream,
                partition=part,
                offset=off,
                key=key,
                data=bytes(data),
                headers=dict(headers or {}),
                ts=self.clock(),
            )
        )
        limit = found.spec.max_records
        if limit is not None and off > limit:  # keep offsets past off - limit, as SQLite does
            del p.records[: p.index(off - limit + 1)]
        return part, off

    async def read(
        self, stream: str, partition: int, from_offset: int = 0, limit: int = 100
    ) -> list[Record]:
        """Retained records of one partition from ``from_offset`` on, in order."""
        return self._partition(stream, partition).since(from_offset, limit)

    # -- groups ------------------------------------------------------------------------
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
        """Lease up to ``limit`` of the group's next records of ``partition`` to ``owner``."""
        check_name("group", group)
        now = self.clock()
        slot = (group, stream, partition)
        g = self._groups.get(slot)
        if g is None:
            g = self._groups[slot] = _Group(self._partition(stream, partition).start(start))
        elif g.owner is not None and g.owner != owner and g.lease_until > now:
            return []
        records = self._partition(stream, partition).since(g.next_off, max(1, limit))
        if not records:
            return []
        attempts = g.attempts if records[0].offset == g.next_off else 0  # else: trimmed away
        g.next_off, g.owner, g.lease_until = records[0].offset, owner, now + lease_s
        g.attempts = attempts + 1
        return [
            Delivery(record=r, group=group, attempt=g.attempts if i == 0 else 1, lease_s=lease_s)
            for i, r in enumerate(records)
        ]

    def _move_past(self, delivery: Delivery, owner: str) -> None:
        rec = delivery.record
        g = self._groups.get((delivery.group, rec.stream, rec.partition))
        if g is None or g.owner != owner or g.next_off > rec.offset:
            raise LeaseLostError(
                f"group {delivery.group!r} lost partition {rec.partition} of {rec.stream!r}",
                details={"group": delivery.group, "stream": rec.stream, "offset": rec.offset},
            )
        g.next_off, g.attempts = rec.offset + 1, 0
        g.lease_until = self.clock() + delivery.lease_s

    async def commit(self, delivery: Delivery, owner: str) -> None:
        """Move the group past ``delivery`` (refused if another owner took over)."""
        self._move_past(delivery, owner)

    async def release(self, delivery: Delivery, owner: str, *, attempted: bool = True) -> None:
        """Drop the lease so the record is claimed again; never raises."""
        rec = delivery.record
        g = self._groups.get((delivery.group, rec.stream, rec.partition))
        if g is None or g.owner != owner:
            return
        g.owner, g.lease_until = None, 0.0
        if g.next_off == rec.offset:
            g.attempts = delivery.attempt if attempted else delivery.attempt - 1

    async def dead(self, delivery: Delivery, owner: str, error: str) -> None:
        """Keep ``delivery`` as a dead letter and move the group past it."""
        self._move_past(delivery, owner)
        rec = delivery.record
        self._dead[delivery.group, rec.stream, rec.partition, rec.offset] = _Letter(
            key=rec.key, data=rec.data, error=error, ts=self.clock()
        )

    async def dead_letters(
        self, group: str, stream: str, limit: int = 100
    ) -> list[dict[str, object]]:
        """Dead letters of ``group`` on ``stream``, oldest first."""
        mine = [
            (letter.ts, part, off, letter)
            for (grp, st, part, off), letter in self._dead.items()
            if grp == group and st == stream
        ]
        mine.sort(key=lambda item: item[:3])
        return [
            {
                "partition": part,
                "offset": off,
                "key": letter.key,
                "data": letter.data,
                "error": letter.error,
                "ts": ts,
            }
            for ts, part, off, letter in mine[:limit]
        ]

    async def seek(self, group: str, stream: str, to: Start | int) -> None:
        """Set the group's position in every partition (``earliest``/``latest``/an offset)."""
        check_name("group", group)
        for part, p in enumerate(self._stream(stream).parts):
            self._groups[group, stream, part] = _Group(to if isinstance(to, int) else p.start(to))

    async def info(self, stream: str) -> StreamInfo:
        """Retained range per partition and each group's position and lag."""
        found = self._stream(stream)
        parts = [
            PartitionInfo(partition=i, first=p.first() or p.next_off, last=p.next_off - 1)
            for i, p in enumerate(found.parts)
        ]
        ends = {i: p.next_off for i, p in enumerate(found.parts)}
        groups = [
            GroupInfo(
                group=grp,
                partition=part,
                next_offset=g.next_off,
                lag=max(0, ends.get(part, g.next_off) - g.next_off),
                owner=g.owner,
            )
            for (grp, st, part), g in sorted(self._groups.items(), key=lambda kv: kv[0])
            if st == stream
        ]
        return StreamInfo(name=stream, spec=found.spec, partitions=parts, groups=groups)

    async def trim(self) -> int:
        """Drop records past every stream's age and count limits; return how many."""
        removed = 0
        now = self.clock()
        for found in self._streams.values():
            age, count = found.spec.max_age_s, found.spec.max_records
            for p in found.parts:
                before = len(p.records)
                if age is not None:
                    p.records = [r for r in p.records if r.ts >= now - age]
                if count is not None:
                    p.records = [r for r in p.records if r.offset >= p.next_off - count]
                removed += before - len(p.records)
        return removed
