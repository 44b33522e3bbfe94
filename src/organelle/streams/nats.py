"""``JetStreamLog``: streams on NATS JetStream, group positions in a KV bucket.

Each organelle stream is a JetStream stream ``<prefix>_<name>`` (file storage)
with one subject per partition, ``<prefix>.st.<name>.<partition>``; the
partition count is fixed in its metadata and retention maps onto the limits
the server enforces itself (``max_age``, ``max_msgs_per_subject``). An offset
is the record's stream sequence: it grows within a partition and skips the
others' numbers. An append returns after the PubAck (stored; to survive power
loss, run R3 or the server with ``sync_interval: always``).

Groups mirror the SQLite backend instead of using JetStream consumers: the
lease varies per claim and a stalled holder must be refused, which a
consumer's fixed ``ack_wait`` cannot express. Each (stream, group, partition)
keeps next offset, owner, lease end and attempts in the KV bucket
``<prefix>_groups``, changed by compare-and-set, so leases fence across
processes (lease times use the local clock). A claim reads its batch with
one batched direct get ("up to k messages on this subject from sequence N",
skipping what retention removed; ``_nats_direct``) and reads the next batch
while this one is handled. A batch costs three round trips, not two per
record: the entry this process last wrote is trusted until a compare-and-set
fails, and commits within a batch are held back while at least half the
lease is left, written by the batch's last commit (or a release, a dead
letter, the next claim, ``close``): a process that dies mid-batch has up to
a batch delivered again. Dead
letters go to the stream ``<prefix>_DEAD``, one subject per (group, stream,
partition, offset), so a record dead-lettered twice keeps one letter.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self

import msgspec
from nats.aio.client import Client
from nats.js import api
from nats.js.errors import APIError, NoStreamResponseError

from organelle._jetstream_pub import JsPublisher
from organelle.errors import (
    ConfigError,
    LeaseLostError,
    OrganelleError,
    StreamNotFoundError,
    UnavailableError,
    ValidationError,
)
from organelle.streams._jetstream import (
    IN_USE,
    META_PARTITIONS,
    NO_STREAM,
    Pos,
    Positions,
    get_msg,
    headers_out,
    letter_in,
    letter_out,
    mapped,
    partition_count,
    pending,
    retention,
    spec_of,
    to_record,
)
from organelle.streams._nats_direct import DirectBatches, ReadAhead, direct_record
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
from organelle.transport.nats_connect import NatsConnectOptions

__all__ = ["JetStreamLog"]

_CAS_TRIES = 5
_BATCHED_SINCE = (2, 11)  # nats-server version of batched direct gets
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # as ``check_name`` allows


class JetStreamLog(BaseStreamLog):
    """A ``StreamLog`` on NATS JetStream.

    Args:
        servers: a ``NatsConnectOptions`` (servers, credentials, TLS) or NATS
            URLs (give every cluster node).
        prefix: names this log's streams, subjects and bucket; logs with the same
            prefix on the same server share their data.
        replicas: JetStream replicas of what this log creates (3 on a cluster).
        op_timeout_s: bound on each JetStream request.
        clock: wall-clock seconds for leases and dead-letter times.
    """

    def __init__(
        self,
        servers: NatsConnectOptions | Sequence[str] | str,
        *,
        prefix: str = "ORGANELLE",
        replicas: int = 1,
        op_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", prefix):
            raise ConfigError(f"stream log prefix {prefix!r}: 1-32 letters, digits, '-' or '_'")
        self.connect_options = NatsConnectOptions.coerce(servers)
        self.servers = self.connect_options.urls
        self.prefix = prefix
        self.replicas = replicas
        self.op_timeout_s = op_timeout_s
        self.clock = clock
        self._nc: Any = None
        self._js: Any = None
        self._pos: Any = None  # Positions, once open
        self._pub: JsPublisher | None = None  # appends
        self._dead = f"{prefix}_DEAD"
        self._parts: dict[str, int] = {}  # partition counts never change: cache them
        self._direct: dict[str, bool] = {}  # whether a stream answers batched direct gets
        self._batches: Any = None  # DirectBatches, once open
        self._batched = False  # whether the server answers batched direct gets
        # Commits held back within a claimed batch, and each batch's last offset, per
        # (stream, group, partition) key: (owner, offset).
        self._pending: dict[str, tuple[str, int]] = {}
        self._ends: dict[str, tuple[str, int]] = {}
        self._ahead = ReadAhead()  # the batch after a claimed one, read meanwhile
        self._round_robin = itertools.count()
        self._lock = asyncio.Lock()

    async def open(self) -> Self:
        """Connect and create the groups bucket and dead-letter stream if missing."""
        async with self._lock:
            if self._nc is None:
                with mapped():
                    await self._open()
        return self

    async def _open(self) -> None:
        async def quiet(_exc: Exception) -> None:
            """Failures surface as UnavailableError on the calls they hit."""

        connect = self.connect_options
        nc = Client()
        try:
            try:  # nats-py keeps trying forever when no server accepts the first connect
                async with asyncio.timeout(connect.open_budget_s):
                    await nc.connect(
                        **connect.connect_kwargs(),
                        name=f"organelle-streams:{self.prefix}",
                        max_reconnect_attempts=-1,
                        error_cb=quiet,
                    )
            except TimeoutError:
                raise UnavailableError(
                    f"no NATS server accepted the stream log's connection at {self.servers}"
                ) from None
            js = nc.jetstream(timeout=self.op_timeout_s)
            self._pos = await Positions.open(js, f"{self.prefix}_groups", self.replicas)
            dead = api.StreamConfig(
                name=self._dead,
                subjects=[f"{self.prefix}.dead.>"],
                storage=api.StorageType.FILE,
                num_replicas=self.replicas,
                max_msgs_per_subject=1,  # one letter per (group, stream, partition, offset)
            )
            try:
                await js.add_stream(dead)
            except APIError as exc:  # exists, configured otherwise: use it as it is
                if exc.err_code != IN_USE:
                    raise
            batches = await DirectBatches(nc, self.op_timeout_s).open()
            pub = JsPublisher(nc, timeout_s=self.op_timeout_s)
            await pub.open()
        except BaseException:
            with contextlib.suppress(Exception):
                await nc.close()
            raise
        self._nc, self._js, self._batches, self._pub = nc, js, batches, pub
        version = nc.connected_server_version
        # Batched direct gets came with nats-server 2.11; an older one answers one message.
        self._batched = (version.major, version.minor) >= _BATCHED_SINCE

    async def close(self) -> None:
        """Write commits still held back, then close the connection; never raises."""
        if self._pending and self._pos is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.op_timeout_s):
                    for key in list(self._pending):
                        await self._flush(key)
        nc, self._nc, self._js, self._pos = self._nc, None, None, None
        pub, self._pub = self._pub, None
        if pub is not None:
            await pub.close()
        batches, self._batches = self._batches, None
        self._parts.clear()
        self._direct.clear()
        self._pending.clear()
        self._ends.clear()
        self._ahead.clear()
        if batches is not None:
            with contextlib.suppress(Exception):
                await batches.close()
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()

    async def _ready(self) -> Any:
        if self._js is None:
            await self.open()
        return self._js

    # -- names and raw access -----------------------------------------------------------
    def _name(self, stream: str) -> str:
        return f"{self.prefix}_{stream}"

    def _subject(self, stream: str, partition: int | str) -> str:
        return f"{self.prefix}.st.{stream}.{partition}"

    async def _stream_info(self, stream: str, subjects: str | None = None) -> Any:
        try:
            check_name("stream", stream)
        except ValidationError:
            raise StreamNotFoundError(f"no stream named {stream!r}") from None
        js = await self._ready()
        try:
            return await js.stream_info(self._name(stream), subjects_filter=subjects)
        except APIError as exc:
            if exc.err_code == NO_STREAM:
                self._parts.pop(stream, None)
                raise StreamNotFoundError(
                    f"no stream named {stream!r}", details={"stream": stream}
                ) from exc
            raise

    async def _partitions(self, stream: str) -> int:
        parts = self._parts.get(stream)
        if parts is None:
            config = (await self._stream_info(stream)).config
            parts = partition_count(stream, config)
            self._parts[stream] = parts
            self._direct[stream] = bool(config.allow_direct) and self._batched
        return parts

    async def _next(self, js_stream: str, seq: int, subject: str) -> Any:
        """The first message on ``subject`` (wildcards allowed) with sequence >= ``seq``."""
        await self._ready()
        ask = {"seq": max(seq, 1), "next_by_subj": subject}
        return await get_msg(self._nc, js_stream, ask, self.op_timeout_s)

    async def _record(self, stream: str, partition: int, seq: int) -> Record | None:
        msg = await self._next(self._name(stream), seq, self._subject(stream, partition))
        return None if msg is None else to_record(stream, partition, msg)

    async def _records(self, stream: str, partition: int, seq: int, limit: int) -> list[Record]:
        """Up to ``limit`` records of a partition from ``seq`` on: one round trip if direct."""
        if self._direct.get(stream):
            try:
                msgs = await self._batches.fetch(
                    self._name(stream), self._subject(stream, partition), seq, limit
                )
            except OrganelleError:  # deleted or remade, maybe: look the stream up again
                self._parts.pop(stream, None)
                self._direct.pop(stream, None)
                raise
            return [direct_record(stream, partition, m) for m in msgs]
        out: list[Record] = []  # a stream made without allow_direct: one get per record
        while len(out) < limit:
            record = await self._record(stream, partition, seq)
            if record is None:
                break
            out.append(record)
            seq = record.offset + 1
        return out

    # -- streams -----------------------------------------------------------------------
    async def ensure(self, stream: str, spec: StreamSpec) -> StreamSpec:
        """Create ``stream`` or update its retention; the partition count is fixed."""
        check_name("stream", stream)
        with mapped():
            js = await self._ready()
            try:
                config = (await self._stream_info(stream)).config
            except StreamNotFoundError:
                config = api.StreamConfig(
                    name=self._name(stream),
                    description=f"organelle stream {stream}",
                    subjects=[self._subject(stream, "*")],
                    storage=api.StorageType.FILE,
                    num_replicas=self.replicas,
                    metadata={META_PARTITIONS: str(spec.partitions)},
                    allow_direct=True,
                    **retention(spec),
                )
                try:
                    await js.add_stream(config)
                except APIError as exc:  # created meanwhile by another process
                    if exc.err_code != IN_USE:
                        raise
                    config = (await self._stream_info(stream)).config
            have = partition_count(stream, config)
            if have != spec.partitions:
                raise ValidationError(
                    f"stream {stream!r} has {have} partitions, not {spec.partitions}",
                    errors=[{"field": "partitions", "message": "cannot change"}],
                )
            wanted: dict[str, Any] = {**retention(spec), "allow_direct": True}
            if any(getattr(config, k) != v for k, v in wanted.items()):
                await js.update_stream(config.evolve(**wanted))
            self._parts[stream] = have
            self._direct[stream] = self._batched
        return spec

    async def append(
        self,
        stream: str,
        data: bytes,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, int]:
        """Publish one record; return ``(partition, offset)`` once JetStream has stored it."""
        turn = next(self._round_robin)
        with mapped():
            part = partition_for(key, await self._partitions(stream), turn)
            out = headers_out(key, headers)
            out["Nats-Expected-Stream"] = self._name(stream)
            if self._pub is None:
                raise UnavailableError("the stream log is closed")
            try:
                seq = await self._pub.publish(self._subject(stream, part), data, out)
            except NoStreamResponseError as exc:  # deleted behind our back
                self._parts.pop(stream, None)
                raise StreamNotFoundError(f"no stream named {stream!r}") from exc
        return part, seq

    async def read(
        self, stream: str, partition: int, from_offset: int = 0, limit: int = 100
    ) -> list[Record]:
        """Retained records of one partition from ``from_offset`` on, in order."""
        out: list[Record] = []
        with mapped():
            await self._partitions(stream)
            seq = from_offset
            while len(out) < limit:
                record = await self._record(stream, partition, seq)
                if record is None:
                    break
                out.append(record)
                seq = record.offset + 1
        return out

    # -- groups ------------------------------------------------------------------------
    async def _position(self, stream: str, partition: int, start: Start) -> int:
        """Where a new group starts: the first retained record, or after the last."""
        if start == "earliest":
            first = await self._record(stream, partition, 1)
            if first is not None:
                return first.offset
        return int((await self._stream_info(stream)).state.last_seq) + 1

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
        """Lease up to ``limit`` of the group's next records of ``partition`` to ``owner``.

        Three round trips at most (the position this process last wrote is
        trusted until a compare-and-set says otherwise): the records, in one
        batched read, and the lease, which also writes the commits held back
        from the batch before.
        """
        check_name("group", group)
        key = Positions.key(group, stream, partition)
        with mapped():
            await self._partitions(stream)
            loaded = self._pos.known(key)
            for _ in range(_CAS_TRIES):  # a lost compare-and-set: look again
                now = self.clock()
                if loaded is None:
                    loaded = await self._pos.load(key)
                if loaded is None:
                    pos, rev = Pos(next=await self._position(stream, partition, start)), None
                else:
                    pos, rev = loaded
                    if pos.owner is not None and pos.owner != owner and pos.until > now:
                        return []
                pending = self._pending.get(key)
                if (
                    pending is not None
                    and pending[0] == owner == pos.owner
                    and pending[1] > pos.next
                ):
                    # Our own commits, held back: this claim's write carries them.
                    pos = msgspec.structs.replace(pos, next=pending[1], attempts=0)
                records = await self._ahead.take(key, pos.next, max(1, limit)) or (
                    await self._records(stream, partition, pos.next, max(1, limit))
                )
                if not records:
                    if (rev is None or pending is not None) and not await self._pos.save(
                        key, pos, rev
                    ):
                        loaded = None
                        continue
                    self._pending.pop(key, None)
                    return []
                # What the group pointed at was trimmed away: a new record, a first attempt.
                attempts = pos.attempts if records[0].offset == pos.next else 0
                taken = Pos(
                    next=records[0].offset, owner=owner, until=now + lease_s, attempts=attempts + 1
                )
                if not await self._pos.save(key, taken, rev):
                    loaded = None
                    continue
                self._pending.pop(key, None)
                self._ends[key] = (owner, records[-1].offset)
                if len(records) == limit > 1:  # a full batch: more are likely waiting
                    nxt = records[-1].offset + 1
                    self._ahead.start(key, nxt, self._records(stream, partition, nxt, limit))
                return [
                    Delivery(
                        record=r,
                        group=group,
                        attempt=attempts + 1 if i == 0 else 1,
                        lease_s=lease_s,
                    )
                    for i, r in enumerate(records)
                ]
        return []

    async def _held(
        self, delivery: Delivery, owner: str, *, fresh: bool = True
    ) -> tuple[str, Pos, int]:
        rec = delivery.record
        key = Positions.key(delivery.group, rec.stream, rec.partition)
        loaded = None if fresh else self._pos.known(key)
        if loaded is None or loaded[0].owner != owner or loaded[0].next > rec.offset:
            loaded = await self._pos.load(key)
        if loaded is None or loaded[0].owner != owner or loaded[0].next > rec.offset:
            self._pending.pop(key, None)
            raise LeaseLostError(
                f"group {delivery.group!r} lost partition {rec.partition} of {rec.stream!r}",
                details={"group": delivery.group, "stream": rec.stream, "offset": rec.offset},
            )
        return key, *loaded

    async def _move_past(self, delivery: Delivery, owner: str, letter: bytes | None = None) -> None:
        """Advance the group past ``delivery`` under ``owner``'s lease, filing ``letter`` first."""
        rec = delivery.record
        filed = None
        await self._ready()
        try:
            for attempt in range(_CAS_TRIES):
                # First with what we last wrote (no read); a lost set reads afresh.
                key, pos, rev = await self._held(delivery, owner, fresh=attempt > 0)
                if letter is not None and filed is None:
                    subject = f"{self.prefix}.dead.{delivery.group}.{rec.stream}"
                    filed = await self._js.publish(
                        f"{subject}.{rec.partition}.{rec.offset}", letter, stream=self._dead
                    )
                pending = self._pending.get(key)
                moved = msgspec.structs.replace(
                    pos,
                    next=max(rec.offset + 1, pending[1] if pending and pending[0] == owner else 0),
                    attempts=0,
                    until=self.clock() + delivery.lease_s,
                )
                if await self._pos.save(key, moved, rev):
                    self._pending.pop(key, None)
                    return
            await self._held(delivery, owner)  # raises if someone else took over
            raise UnavailableError(f"group {delivery.group!r}: position kept changing; retry")
        except LeaseLostError:
            if filed is not None:  # the new holder decides about this record
                with contextlib.suppress(Exception):
                    await self._js.delete_msg(self._dead, filed.seq)
            raise

    async def _flush(self, key: str) -> None:
        """Write the commits held back for ``key`` (closing); a lost lease drops them."""
        owner, offset = self._pending.pop(key)
        loaded = self._pos.known(key)
        if loaded is not None and loaded[0].owner == owner and loaded[0].next < offset:
            pos = msgspec.structs.replace(loaded[0], next=offset, attempts=0)
            await self._pos.save(key, pos, loaded[1])

    async def commit(self, delivery: Delivery, owner: str) -> None:
        """Move the group past ``delivery`` (refused if another owner took over).

        Within a claimed batch, while at least half the lease is left, the
        move is only noted: the batch's last commit (or a release, a dead
        letter, the next claim, ``close``) writes it, one compare-and-set for
        the whole batch. A process that dies first leaves those records to be
        delivered again: up to a batch.
        """
        rec = delivery.record
        key = f"{rec.stream}.{delivery.group}.{rec.partition}"  # Positions.key
        end = self._ends.get(key)
        if end is not None and end[0] == owner and rec.offset < end[1]:
            known = self._pos.known(key)
            if (
                known is not None
                and known[0].owner == owner
                and known[0].next <= rec.offset
                and known[0].until - self.clock() > delivery.lease_s / 2
            ):
                self._pending[key] = (owner, rec.offset + 1)
                return
        with mapped():
            await self._move_past(delivery, owner)

    async def release(self, delivery: Delivery, owner: str, *, attempted: bool = True) -> None:
        """Drop the lease so the record is claimed again; never raises."""
        count = delivery.attempt if attempted else delivery.attempt - 1
        with contextlib.suppress(Exception):  # the lease expires on its own anyway
            key, pos, rev = await self._held(delivery, owner)
            pending = self._pending.pop(key, None)
            self._ends.pop(key, None)
            self._ahead.drop(key)
            if pending is not None and pending[0] == owner and pending[1] > pos.next:
                pos = msgspec.structs.replace(pos, next=pending[1], attempts=0)
            attempts = count if pos.next == delivery.record.offset else pos.attempts
            await self._pos.save(
                key,
                msgspec.structs.replace(pos, owner=None, until=0.0, attempts=attempts),
                rev,
            )

    async def dead(self, delivery: Delivery, owner: str, error: str) -> None:
        """Keep ``delivery`` as a dead letter and move the group past it."""
        letter = letter_out(delivery.record, error, self.clock())
        with mapped():
            await self._move_past(delivery, owner, letter)

    async def dead_letters(
        self, group: str, stream: str, limit: int = 100
    ) -> list[dict[str, object]]:
        """Dead letters of ``group`` on ``stream``, oldest first."""
        out: list[dict[str, object]] = []
        if not all(_NAME.fullmatch(n) for n in (group, stream)):
            return out  # never made: no letters
        with mapped():
            seq = 1
            while len(out) < limit:
                msg = await self._next(self._dead, seq, f"{self.prefix}.dead.{group}.{stream}.>")
                if msg is None:
                    break
                seq = int(msg["seq"]) + 1
                out.append(letter_in(msg))
        return out

    async def seek(self, group: str, stream: str, to: Start | int) -> None:
        """Set the group's position in every partition (``earliest``/``latest``/an offset)."""
        check_name("group", group)
        with mapped():
            for part in range(await self._partitions(stream)):
                nxt = to if isinstance(to, int) else await self._position(stream, part, to)
                key = Positions.key(group, stream, part)
                self._pending.pop(key, None)  # held-back commits are overruled
                self._ahead.drop(key)
                await self._pos.put(key, Pos(next=nxt))

    async def info(self, stream: str) -> StreamInfo:
        """Retained range per partition and each group's position and lag."""
        with mapped():
            si = await self._stream_info(stream, self._subject(stream, "*"))
            counts: dict[str, int] = si.state.subjects or {}
            end = int(si.state.last_seq)
            parts: list[PartitionInfo] = []
            for p in range(partition_count(stream, si.config)):
                first = last = None
                if counts.get(self._subject(stream, p)):
                    first = await self._record(stream, p, 1)
                    ask = {"last_by_subj": self._subject(stream, p)}
                    last = await get_msg(self._nc, self._name(stream), ask, self.op_timeout_s)
                parts.append(
                    PartitionInfo(
                        partition=p,
                        first=end + 1 if first is None else first.offset,
                        last=end if last is None else int(last["seq"]),
                    )
                )
            groups = await self._groups(stream, parts, counts)
        return StreamInfo(
            name=stream, spec=spec_of(stream, si.config), partitions=parts, groups=groups
        )

    async def _groups(
        self, stream: str, parts: list[PartitionInfo], counts: dict[str, int]
    ) -> list[GroupInfo]:
        out = []
        for group, part, pos in await self._pos.of_stream(stream):
            rng = next((p for p in parts if p.partition == part), None)
            if rng is None or pos.next > rng.last:
                lag = 0
            elif pos.next <= rng.first:
                lag = counts.get(self._subject(stream, part), 0)
            else:
                lag = await pending(
                    self._js, self._name(stream), self._subject(stream, part), pos.next
                )
            out.append(
                GroupInfo(
                    group=group, partition=part, next_offset=pos.next, lag=lag, owner=pos.owner
                )
            )
        return out

    async def trim(self) -> int:
        """Nothing to do: JetStream applies ``max_records`` on append and ``max_age`` itself."""
        return 0
