"""Streams in one SQLite file: the embedded default, durable with ``synchronous=FULL``.

Appends go through the shared group-commit thread (``storage/_sqlite_thread``):
concurrent appends share one fsync and none is acknowledged before its commit.
Offsets are contiguous per partition from 1 and never reused (the next one is
kept in ``org_stream_parts``, so trimming does not rewind it). Several
processes may share the file: ``BEGIN IMMEDIATE`` orders their writes, and
group leases live in the same transaction as the position they guard.
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Self

import msgspec

from organelle.errors import LeaseLostError, StreamNotFoundError, ValidationError
from organelle.storage._sqlite_thread import DURABLE, READ, WRITE, SqliteThread, use_wal
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

__all__ = ["SqliteStreamLog"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS org_streams (
    name TEXT PRIMARY KEY, partitions INTEGER NOT NULL, max_age_s REAL, max_records INTEGER);
CREATE TABLE IF NOT EXISTS org_stream_parts (
    stream TEXT NOT NULL, part INTEGER NOT NULL, next_off INTEGER NOT NULL,
    PRIMARY KEY (stream, part)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS org_stream_records (
    stream TEXT NOT NULL, part INTEGER NOT NULL, off INTEGER NOT NULL, key TEXT,
    data BLOB NOT NULL, headers BLOB NOT NULL, ts REAL NOT NULL,
    PRIMARY KEY (stream, part, off)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS org_stream_groups (
    grp TEXT NOT NULL, stream TEXT NOT NULL, part INTEGER NOT NULL, next_off INTEGER NOT NULL,
    owner TEXT, lease_until REAL NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (grp, stream, part)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS org_stream_dead (
    grp TEXT NOT NULL, stream TEXT NOT NULL, part INTEGER NOT NULL, off INTEGER NOT NULL,
    key TEXT, data BLOB NOT NULL, error TEXT NOT NULL, ts REAL NOT NULL,
    PRIMARY KEY (grp, stream, part, off)) WITHOUT ROWID;
"""

_headers_enc = msgspec.json.Encoder().encode
_headers_dec = msgspec.json.Decoder(dict[str, str]).decode
_REC_COLS = "part, off, key, data, headers, ts"

Sync = Literal["full", "normal"]


def _record(stream: str, row: tuple[Any, ...]) -> Record:
    part, off, key, data, headers, ts = row
    return Record(
        stream=stream,
        partition=part,
        offset=off,
        key=key,
        data=bytes(data),
        headers=_headers_dec(headers),
        ts=ts,
    )


class SqliteStreamLog(BaseStreamLog):
    """Streams stored in one SQLite file (``":memory:"`` for tests).

    Args:
        path: database file (created with its directory).
        synchronous: ``"full"`` (default: an acknowledged append survives power
            loss) or ``"normal"`` (survives a process crash).
        clock: wall-clock seconds (leases, ages); inject a fake one in tests.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: Sync = "full",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = str(path)
        self.synchronous = synchronous
        self.clock = clock
        self._thread: SqliteThread | None = None
        self._round_robin = itertools.count()

    async def open(self) -> Self:
        """Create the schema and start the writer thread; returns ``self``."""
        if self._thread is None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            thread = SqliteThread(
                self._connect, "organelle-streams", full_sync=self.synchronous == "full"
            )
            await thread.started()
            self._thread = thread
        return self

    async def close(self) -> None:
        """Finish queued work and close the file; never raises."""
        thread, self._thread = self._thread, None
        if thread is not None:
            await thread.stop()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 0")  # the thread retries BEGIN itself
        if self.path != ":memory:":
            use_wal(conn)
        conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
        conn.executescript(_SCHEMA)
        return conn

    async def _run(self, op: Callable[[sqlite3.Connection], Any], mode: int = WRITE) -> Any:
        if self._thread is None:
            await self.open()
        assert self._thread is not None  # noqa: S101 - open() set it
        return await self._thread.submit(op, mode=mode)

    # -- streams -----------------------------------------------------------------------
    async def ensure(self, stream: str, spec: StreamSpec) -> StreamSpec:
        """Create ``stream`` or update its retention; the partition count is fixed."""
        check_name("stream", stream)

        def op(c: sqlite3.Connection) -> StreamSpec:
            row = c.execute(
                "SELECT partitions FROM org_streams WHERE name = ?", (stream,)
            ).fetchone()
            if row is not None and row[0] != spec.partitions:
                raise ValidationError(
                    f"stream {stream!r} has {row[0]} partitions, not {spec.partitions}",
                    errors=[{"field": "partitions", "message": "cannot change"}],
                )
            c.execute(
                "INSERT INTO org_streams VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
                " max_age_s = excluded.max_age_s, max_records = excluded.max_records",
                (stream, spec.partitions, spec.max_age_s, spec.max_records),
            )
            c.executemany(
                "INSERT OR IGNORE INTO org_stream_parts VALUES (?, ?, 1)",
                [(stream, p) for p in range(spec.partitions)],
            )
            return spec

        result: StreamSpec = await self._run(op, DURABLE)
        return result

    async def append(
        self,
        stream: str,
        data: bytes,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, int]:
        """Store one record; return ``(partition, offset)`` after its durable commit."""
        encoded = _headers_enc(dict(headers or {}))
        turn = next(self._round_robin)

        def op(c: sqlite3.Connection) -> tuple[int, int]:
            row = c.execute(
                "SELECT partitions, max_records FROM org_streams WHERE name = ?", (stream,)
            ).fetchone()
            if row is None:
                raise StreamNotFoundError(f"no stream named {stream!r}", details={"stream": stream})
            part = partition_for(key, row[0], turn)
            off = c.execute(
                "UPDATE org_stream_parts SET next_off = next_off + 1"
                " WHERE stream = ? AND part = ? RETURNING next_off - 1",
                (stream, part),
            ).fetchone()[0]
            c.execute(
                "INSERT INTO org_stream_records VALUES (?, ?, ?, ?, ?, ?, ?)",
                (stream, part, off, key, data, encoded, self.clock()),
            )
            if row[1] is not None and off > row[1]:
                c.execute(
                    "DELETE FROM org_stream_records WHERE stream = ? AND part = ? AND off <= ?",
                    (stream, part, off - row[1]),
                )
            return part, off

        result: tuple[int, int] = await self._run(op, DURABLE)
        return result

    async def read(
        self, stream: str, partition: int, from_offset: int = 0, limit: int = 100
    ) -> list[Record]:
        """Retained records of one partition from ``from_offset`` on, in order."""

        def op(c: sqlite3.Connection) -> list[Record]:
            _spec(c, stream)
            rows = c.execute(
                f"SELECT {_REC_COLS} FROM org_stream_records"  # noqa: S608 - constant columns
                " WHERE stream = ? AND part = ? AND off >= ? ORDER BY off LIMIT ?",
                (stream, partition, from_offset, limit),
            ).fetchall()
            return [_record(stream, r) for r in rows]

        result: list[Record] = await self._run(op, READ)
        return result

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

        def op(c: sqlite3.Connection) -> list[Delivery]:
            now = self.clock()
            g = c.execute(
                "SELECT next_off, owner, lease_until, attempts FROM org_stream_groups"
                " WHERE grp = ? AND stream = ? AND part = ?",
                (group, stream, partition),
            ).fetchone()
            if g is None:
                _spec(c, stream)
                nxt = _position(c, stream, partition, start)
                c.execute(
                    "INSERT INTO org_stream_groups (grp, stream, part, next_off)"
                    " VALUES (?, ?, ?, ?)",
                    (group, stream, partition, nxt),
                )
                attempts = 0
            else:
                nxt, holder, until, attempts = g
                if holder is not None and holder != owner and until > now:
                    return []
            rows = c.execute(
                f"SELECT {_REC_COLS} FROM org_stream_records"  # noqa: S608 - constant columns
                " WHERE stream = ? AND part = ? AND off >= ? ORDER BY off LIMIT ?",
                (stream, partition, nxt, max(1, limit)),
            ).fetchall()
            if not rows:
                return []
            records = [_record(stream, r) for r in rows]
            if records[0].offset != nxt:  # what it pointed at was trimmed away
                attempts = 0
            c.execute(
                "UPDATE org_stream_groups SET next_off = ?, owner = ?, lease_until = ?,"
                " attempts = ? WHERE grp = ? AND stream = ? AND part = ?",
                (records[0].offset, owner, now + lease_s, attempts + 1, group, stream, partition),
            )
            return [
                Delivery(
                    record=r, group=group, attempt=attempts + 1 if i == 0 else 1, lease_s=lease_s
                )
                for i, r in enumerate(records)
            ]

        result: list[Delivery] = await self._run(op, WRITE)
        return result

    def _move_past(self, c: sqlite3.Connection, delivery: Delivery, owner: str) -> None:
        rec = delivery.record
        done = c.execute(
            "UPDATE org_stream_groups SET next_off = ?, attempts = 0, lease_until = ?"
            " WHERE grp = ? AND stream = ? AND part = ? AND owner = ? AND next_off <= ?",
            (
                rec.offset + 1,
                self.clock() + delivery.lease_s,
                delivery.group,
                rec.stream,
                rec.partition,
                owner,
                rec.offset,
            ),
        ).rowcount
        if not done:
            raise LeaseLostError(
                f"group {delivery.group!r} lost partition {rec.partition} of {rec.stream!r}",
                details={"group": delivery.group, "stream": rec.stream, "offset": rec.offset},
            )

    async def commit(self, delivery: Delivery, owner: str) -> None:
        """Move the group past ``delivery`` (refused if another owner took over)."""
        await self._run(lambda c: self._move_past(c, delivery, owner), WRITE)

    async def release(self, delivery: Delivery, owner: str, *, attempted: bool = True) -> None:
        """Drop the lease so the record is claimed again; never raises."""
        rec = delivery.record
        count = delivery.attempt if attempted else delivery.attempt - 1

        def op(c: sqlite3.Connection) -> None:
            c.execute(
                "UPDATE org_stream_groups SET lease_until = 0, owner = NULL,"
                " attempts = CASE WHEN next_off = ? THEN ? ELSE attempts END"
                " WHERE grp = ? AND stream = ? AND part = ? AND owner = ?",
                (rec.offset, count, delivery.group, rec.stream, rec.partition, owner),
            )

        with contextlib.suppress(Exception):  # the lease expires on its own anyway
            await self._run(op, WRITE)

    async def dead(self, delivery: Delivery, owner: str, error: str) -> None:
        """Keep ``delivery`` as a dead letter and move the group past it."""
        rec = delivery.record

        def op(c: sqlite3.Connection) -> None:
            self._move_past(c, delivery, owner)
            c.execute(
                "INSERT OR REPLACE INTO org_stream_dead VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    delivery.group,
                    rec.stream,
                    rec.partition,
                    rec.offset,
                    rec.key,
                    rec.data,
                    error,
                    self.clock(),
                ),
            )

        await self._run(op, DURABLE)

    async def dead_letters(
        self, group: str, stream: str, limit: int = 100
    ) -> list[dict[str, object]]:
        """Dead letters of ``group`` on ``stream``, oldest first."""

        def op(c: sqlite3.Connection) -> list[dict[str, object]]:
            rows = c.execute(
                "SELECT part, off, key, data, error, ts FROM org_stream_dead"
                " WHERE grp = ? AND stream = ? ORDER BY ts, part, off LIMIT ?",
                (group, stream, limit),
            ).fetchall()
            keys = ("partition", "offset", "key", "data", "error", "ts")
            return [dict(zip(keys, (*r[:3], bytes(r[3]), *r[4:]), strict=True)) for r in rows]

        result: list[dict[str, object]] = await self._run(op, READ)
        return result

    async def seek(self, group: str, stream: str, to: Start | int) -> None:
        """Set the group's position in every partition (``earliest``/``latest``/an offset)."""
        check_name("group", group)

        def op(c: sqlite3.Connection) -> None:
            spec = _spec(c, stream)
            for part in range(spec.partitions):
                nxt = to if isinstance(to, int) else _position(c, stream, part, to)
                c.execute(
                    "INSERT INTO org_stream_groups (grp, stream, part, next_off)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (grp, stream, part) DO UPDATE SET"
                    " next_off = excluded.next_off, attempts = 0, owner = NULL, lease_until = 0",
                    (group, stream, part, nxt),
                )

        await self._run(op, DURABLE)

    async def info(self, stream: str) -> StreamInfo:
        """Retained range per partition and each group's position and lag."""

        def op(c: sqlite3.Connection) -> StreamInfo:
            spec = _spec(c, stream)
            parts: list[PartitionInfo] = []
            ends: dict[int, int] = {}
            for part, nxt in c.execute(
                "SELECT part, next_off FROM org_stream_parts WHERE stream = ? ORDER BY part",
                (stream,),
            ):
                first = c.execute(
                    "SELECT MIN(off) FROM org_stream_records WHERE stream = ? AND part = ?",
                    (stream, part),
                ).fetchone()[0]
                parts.append(PartitionInfo(partition=part, first=first or nxt, last=nxt - 1))
                ends[part] = nxt
            groups = [
                GroupInfo(
                    group=g, partition=p, next_offset=n, lag=max(0, ends.get(p, n) - n), owner=o
                )
                for g, p, n, o in c.execute(
                    "SELECT grp, part, next_off, owner FROM org_stream_groups"
                    " WHERE stream = ? ORDER BY grp, part",
                    (stream,),
                )
            ]
            return StreamInfo(name=stream, spec=spec, partitions=parts, groups=groups)

        result: StreamInfo = await self._run(op, READ)
        return result

    async def trim(self) -> int:
        """Delete records past every stream's age and count limits."""

        def op(c: sqlite3.Connection) -> int:
            removed = 0
            now = self.clock()
            for name, age, count in c.execute(
                "SELECT name, max_age_s, max_records FROM org_streams"
            ).fetchall():
                if age is not None:
                    removed += c.execute(
                        "DELETE FROM org_stream_records WHERE stream = ? AND ts < ?",
                        (name, now - age),
                    ).rowcount
                if count is not None:
                    for part, nxt in c.execute(
                        "SELECT part, next_off FROM org_stream_parts WHERE stream = ?", (name,)
                    ).fetchall():
                        removed += c.execute(
                            "DELETE FROM org_stream_records WHERE stream = ? AND part = ?"
                            " AND off < ?",
                            (name, part, nxt - count),
                        ).rowcount
            return removed

        result: int = await self._run(op, WRITE)
        return result


def _spec(c: sqlite3.Connection, stream: str) -> StreamSpec:
    row = c.execute(
        "SELECT partitions, max_age_s, max_records FROM org_streams WHERE name = ?", (stream,)
    ).fetchone()
    if row is None:
        raise StreamNotFoundError(f"no stream named {stream!r}", details={"stream": stream})
    return StreamSpec(partitions=row[0], max_age_s=row[1], max_records=row[2])


def _position(c: sqlite3.Connection, stream: str, part: int, start: Start) -> int:
    nxt = c.execute(
        "SELECT next_off FROM org_stream_parts WHERE stream = ? AND part = ?", (stream, part)
    ).fetchone()
    end = 1 if nxt is None else int(nxt[0])
    if start == "latest":
        return end
    first = c.execute(
        "SELECT MIN(off) FROM org_stream_records WHERE stream = ? AND part = ?", (stream, part)
    ).fetchone()[0]
    return end if first is None else int(first)
