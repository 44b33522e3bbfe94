"""The kernel's side of durable streams: the log, ``append``, and the ``@consume`` members.

Opened with the job queue (before modules load), consumers start once every
module is active and stop before modules stop, like the job worker. Payloads
are encoded with the JSON codec; a consumer's payload is converted to its
handler's declared type (upcast first when the record is of an older version
of that ``@event`` type). Each record carries the appender's ids and trace
headers, so the consumer's context links to the request that appended it.
Each record runs through the kernel's one pipeline as a ``"stream"``
invocation; each outcome (done, failed, dead, lost) goes to the listeners.
A body over ``[kernel] claim_check_above`` goes to the claim-check's blob
store (expiring with the stream's ``max_age_s``, else
``claim_check_record_ttl_s``); the record holds the reference, and the
consumer fetches and checks the payload before the handler sees it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from organelle.codec import JsonCodec
from organelle.context import context, root_context
from organelle.envelope import (
    Envelope,
    EnvelopeFactory,
    event_type,
    from_headers,
    lift,
    to_headers,
)
from organelle.errors import ClaimCheckError, ConfigError, ValidationError
from organelle.kernel._dispatch import Invocation, run_invocation
from organelle.kernel._listen import RecordReport

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractAsyncContextManager

    from organelle.config.settings import KernelSettings
    from organelle.kernel._claims import Claims
    from organelle.kernel._dispatch import CallNext
    from organelle.kernel._inbox import StoreInbox
    from organelle.kernel._listen import Listeners
    from organelle.kernel._slots import Slot, Slots
    from organelle.module._describe import Consumer
    from organelle.streams.base import Delivery, Record, StreamLog, StreamSpec
    from organelle.streams.consumer import ConsumerStats, GroupConsumer, Outcome, RecordObserver

__all__ = ["DEFAULT_URL", "StreamHost"]

DEFAULT_URL = "sqlite:///organelle-streams.db"
_codec = JsonCodec()
_H_CORR = "organelle-correlation-id"
_H_CAUSE = "organelle-causation-id"
_TRACE = ("traceparent", "tracestate")
# A claimed record's blob outlives the record's own max_age_s by this much: the
# log trims lazily, and a consumer reading a record at the edge still finds it.
_GRACE_S = 600.0
_DATAREF = "ce-dataref"  # envelope._claim.DATAREF, imported when a record has it


class StreamHost:
    """Owns the stream log and this node's consumer group members; binds each slot's consumers.

    As a binder (stage ``serve``) it makes a group member for each of a slot's
    ``@consume`` handlers and stops them on detach: the group's position stays
    where it is, so the records wait for the next member of the group.
    """

    kind = "consumers"
    stage = "serve"

    def __init__(
        self,
        slots: Slots,
        settings: Callable[[], KernelSettings],
        chain: Callable[[], CallNext | None],
        running: Callable[[], bool],
        listeners: Listeners,
    ) -> None:
        self._slots = slots
        self._settings = settings
        self._chain = chain
        self._running = running
        self._listeners = listeners
        self.log: StreamLog | None = None
        self.consumers: list[GroupConsumer] = []
        self._ensured: dict[str, StreamSpec] = {}
        self._lock = asyncio.Lock()
        self._started = False
        self.envelopes: Callable[[], EnvelopeFactory] | None = None  # set by the kernel
        self.inbox: StoreInbox | None = None  # where idempotent consumers remember records
        self.claims: Claims | None = None  # where large records' payloads go (set by the kernel)

    def _local(self) -> list[tuple[str, Consumer]]:
        return [(slot.name, c) for slot in self._slots.values() for c in slot.spec.consumers]

    def spec_for(self, stream: str) -> StreamSpec:
        """The layout ``[kernel.stream_specs.<name>]`` configures for ``stream``, or the default."""
        from organelle.streams.base import StreamSpec

        raw = self._settings().stream_specs.get(stream, {})
        try:
            return StreamSpec(**raw)
        except (TypeError, ValidationError) as exc:
            raise ConfigError(f"kernel.stream_specs.{stream}: {exc}") from None

    async def open(self) -> None:
        """Open the log if a module consumes a stream or ``[kernel] streams`` names one."""
        settings = self._settings()
        if not self._local() and not settings.streams:
            return
        await self._open_log()

    async def _open_log(self) -> None:
        from organelle.streams.url import open_log

        settings = self._settings()

        for stream in settings.stream_specs:
            self.spec_for(stream)  # a bad section fails the start, before anything runs
        self.log = await open_log(settings.streams or DEFAULT_URL)

    async def ensure(self, stream: str) -> StreamSpec:
        """Create ``stream`` with its configured spec once per kernel."""
        spec = self._ensured.get(stream)
        if spec is None:
            log = self._require()
            async with self._lock:
                spec = self._ensured.get(stream)
                if spec is None:
                    spec = await log.ensure(stream, self.spec_for(stream))
                    self._ensured[stream] = spec
        return spec

    def _require(self) -> StreamLog:
        if self.log is None:
            raise ConfigError(
                "no stream log: no module declares @consume and [kernel] streams is not set"
                if self._running()
                else "the stream log opens when the kernel starts"
            )
        return self.log

    async def append(
        self,
        stream: str,
        payload: Any,
        key: str | None,
        headers: Mapping[str, str] | None,
        *,
        event_id: str | None = None,
    ) -> tuple[int, int]:
        """Encode and store one record durably; wake local members of its groups."""
        log = self._require()
        spec = await self.ensure(stream)
        ctx = context()
        meta = {k: str(ctx.meta[k]) for k in _TRACE if k in ctx.meta}
        meta[_H_CORR] = ctx.correlation_id
        meta[_H_CAUSE] = ctx.request_id
        body = _codec.encode(payload)
        if self.envelopes is not None:
            typed = event_type(payload)
            env = self.envelopes().make(
                stream if typed is None else typed.name, payload, ctx, key=key, event_id=event_id
            )
            meta.update(to_headers(env))
        claims = self.claims
        if claims is not None and claims.above and len(body) > claims.above:
            # The record holds the reference; the blob lives as long as the record.
            ttl_s = claims.record_ttl_s(spec.max_age_s)
            ref = await claims.claim(
                body, kind="records", ttl_s=None if ttl_s is None else ttl_s + _GRACE_S
            )
            meta.update(ref.headers())
            body = b""
        placed = await log.append(stream, body, key=key, headers={**meta, **(headers or {})})
        for member in self.consumers:
            if member.stream == stream:
                member.wake()
        return placed

    async def attach(self, slot: Slot) -> None:
        """Join the slot's consumer groups (members start with the kernel, or now)."""
        consumers = slot.spec.consumers
        if not consumers:
            return
        if self.log is None:  # the first consumer, added at run time
            await self._open_log()
        from organelle.streams.consumer import ConsumerStats, GroupConsumer

        assert self.log is not None  # noqa: S101 - opened above
        for consumer in consumers:
            o = consumer.options
            spec = await self.ensure(o.stream)
            group = o.group or slot.name
            stats = ConsumerStats(o.stream, group, slot.name, consumer.attr)
            member = GroupConsumer(
                self.log,
                stream=o.stream,
                group=group,
                partitions=spec.partitions,
                handler=self._handler(slot.name, consumer, stats),
                stats=stats,
                start=o.start,
                max_attempts=o.max_attempts,
                backoff_s=o.backoff_s,
                backoff_max_s=o.backoff_max_s,
                lease_s=o.lease_s,
                observer=self._reporter(stats),
                scope=self._scope(consumer, stats) if o.idempotent else None,
            )
            if self._started:
                member.start()
            self.consumers.append(member)

    async def detach(self, slot: Slot) -> None:
        """Leave the slot's groups: records in flight finish (bounded), the rest wait."""
        mine = [m for m in self.consumers if m.stats.module == slot.name]
        self.consumers = [m for m in self.consumers if m.stats.module != slot.name]
        for member in mine:
            await member.stop(self._settings().drain_timeout_s)

    async def switch(self, old: Slot, new: Slot) -> None:
        """A reload: members look the live instance up per record; nothing to move."""

    async def start(self) -> None:
        """Start the members bound so far (once every module is active)."""
        self._started = True
        for member in self.consumers:
            member.start()

    def stats(self) -> list[ConsumerStats]:
        """Counters of every local group member."""
        return [c.stats for c in self.consumers]

    async def _payload_of(self, rec: Record) -> tuple[Any, Mapping[str, str]]:
        """A record's decoded payload and headers, its claimed blob fetched if it has one.

        Raises:
            ClaimCheckError: the blob is missing, damaged or there is no blob store
                (the attempt fails: retried, then dead-lettered).
        """
        headers: Mapping[str, str] = rec.headers
        if _DATAREF not in headers:
            return _codec.decode(rec.data), headers
        from organelle.envelope._claim import claim_of, without_claim

        ref = claim_of(headers)
        if ref is None:
            return _codec.decode(rec.data), headers
        if self.claims is None:
            raise ClaimCheckError(
                f"claim-check {ref.uri}: no blob store",
                details={"reason": "claim_unavailable", "key": ref.key},
            )
        return _codec.decode(await self.claims.redeem(ref)), without_claim(headers)

    def _handler(self, module: str, consumer: Consumer, stats: ConsumerStats) -> Any:
        slots = self._slots
        chain_of = self._chain
        contract = consumer.contract
        attr = consumer.attr
        validate = consumer.options.validate
        idempotent = consumer.options.idempotent
        whole = contract.wants_envelope
        name = _inbox_name(consumer, stats)
        target = contract.target
        typed = event_type(target) if isinstance(target, type) else None  # upcast to it

        async def run(delivery: Delivery) -> None:
            rec = delivery.record
            payload, headers = await self._payload_of(rec)
            env = from_headers(headers, payload)
            # A record without an id (not appended by organelle) cannot be recognised again.
            inbox = self.inbox if idempotent and env is not None else None
            if env is None:
                env = _record_envelope(rec, payload)
            elif typed is not None and env.dataversion is not None:
                payload = lift(typed, env)  # a record of an older version: upcast
            if validate:
                payload = contract.convert(payload)
            arg = env.with_data(payload) if whole else payload
            fn = getattr(slots.require(module).instance, attr)  # the live one, after reloads too
            meta = {k: rec.headers[k] for k in _TRACE if k in rec.headers}
            ctx = root_context(None, meta=meta or None, topic=rec.stream)
            ctx.corr = rec.headers.get(_H_CORR)
            ctx.cause = rec.headers.get(_H_CAUSE)

            async def call(_: Invocation) -> Any:
                return await (fn(arg) if contract.takes_payload else fn())

            inv = Invocation("stream", rec.stream, module, None, arg, ctx, call)
            work = run_invocation(chain_of(), inv)
            if inbox is None:
                await work
            elif not (await inbox.once(name, env.id, work))[0]:
                stats.duplicates += 1

        return run

    def _scope(
        self, consumer: Consumer, stats: ConsumerStats
    ) -> Callable[[list[Delivery]], AbstractAsyncContextManager[object]] | None:
        """An idempotent consumer's runs of records: one inbox transaction each."""
        inbox = self.inbox
        if inbox is None:
            return None
        name = _inbox_name(consumer, stats)

        def scope(deliveries: list[Delivery]) -> AbstractAsyncContextManager[object]:
            return inbox.batch(name, filter(None, map(_event_id, deliveries)))

        return scope

    def _reporter(self, stats: ConsumerStats) -> RecordObserver:
        """What a member tells of each record: a ``RecordReport`` for the listeners."""
        listeners = self._listeners

        def report(outcome: Outcome, delivery: Delivery, took: float, error: str | None) -> None:
            if listeners.records:
                rec = delivery.record
                listeners.record(
                    RecordReport(
                        outcome=outcome,
                        stream=stats.stream,
                        group=stats.group,
                        module=stats.module,
                        handler=stats.handler,
                        partition=rec.partition,
                        offset=rec.offset,
                        attempt=delivery.attempt,
                        duration_s=took,
                        error=error,
                    )
                )

        return report

    async def idle(self, timeout_s: float = 30.0) -> None:
        """Wait until every local group has consumed all it can see and nothing runs."""
        if self.log is None or not self.consumers:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            busy = any(c.stats.in_flight for c in self.consumers)
            if not busy:
                lagging = False
                for member in self.consumers:
                    if await self._lagging(member):
                        lagging = True
                        member.wake()
                        break
                if not lagging:
                    return
            await asyncio.sleep(0.005)
        raise TimeoutError(f"stream consumers still busy after {timeout_s:g}s")

    async def _lagging(self, member: GroupConsumer) -> bool:
        assert self.log is not None  # noqa: S101 - checked by the caller
        info = await self.log.info(member.stream)
        rows = {g.partition: g for g in info.groups if g.group == member.group}
        for part in info.partitions:
            row = rows.get(part.partition)
            if row is not None:
                if row.lag:
                    return True
            elif member.start_at == "earliest" and part.last >= part.first:
                return True  # the group has not looked at this partition yet
        return False

    async def stop_work(self, timeout_s: float) -> None:
        """Stop the members, letting records in flight finish (before modules stop)."""
        members, self.consumers = self.consumers, []
        self._started = False
        for member in members:
            await member.stop(timeout_s)

    async def close(self) -> None:
        """Close the log (after modules stopped)."""
        log, self.log = self.log, None
        self._ensured.clear()
        if log is not None:
            await log.close()


def _inbox_name(consumer: Consumer, stats: ConsumerStats) -> str:
    """The inbox's name for one consumer: its records' ids are remembered under it."""
    return f"stream.{consumer.options.stream}.{stats.group}.{consumer.attr}"


def _event_id(delivery: Delivery) -> str | None:
    """The envelope id of a record, to look it up in the inbox ahead (``None``: none/bad)."""
    try:
        env = from_headers(delivery.record.headers, None)
    except ValidationError:
        return None
    return None if env is None else env.id


def _record_envelope(rec: Record, payload: Any) -> Envelope[Any]:
    """The envelope of a record appended without one (before envelopes, or by hand).

    Its id is the record's place; the inbox never keys on it (a stream log
    recreated from scratch reuses places).
    """
    return Envelope(
        id=f"{rec.stream}/{rec.partition}/{rec.offset}",
        source=f"/organelle/stream/{rec.stream}",
        type=rec.stream,
        data=payload,
        partitionkey=rec.key,
    )
