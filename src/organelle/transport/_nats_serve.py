"""The serving half of the NATS transport: exposed modules, inbound calls and events.

A module's RPC methods share one queue subscription ``<prefix>.rpc.<module>.*``
(queue group ``<prefix>.rpc.<module>``), so every instance of a module on any
node takes a share and a withdrawn or dead one takes none; a plain one on
``<prefix>.node.<node>.rpc.<module>.*`` lets a caller address this node
(weighted routing, ``kernel/_routing.py``). Each ``@on``
handler gets ``<prefix>.evt.<pattern>``: in queue group
``<prefix>.evt.<module>.<handler>`` when balanced, plain when broadcast.
Whatever the wire sends, the sender gets a typed error reply and the node
keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from contextvars import Context as Context_
from contextvars import copy_context
from functools import partial
from typing import TYPE_CHECKING, Any

from organelle._coro import Continuation
from organelle.codec import Codec, codec_for
from organelle.context import Context
from organelle.envelope import wire_name
from organelle.errors import InternalError, OrganelleError, UnavailableError, ValidationError
from organelle.transport._event_wire import Claimed
from organelle.transport._nats_headers import (
    codec_of,
    context_from,
    event_context,
    header_map,
    parse_headers,
    reply_headers,
)
from organelle.transport.registry import ModuleEntry, node_key, rpc_options

if TYPE_CHECKING:
    from organelle.module import ModuleSpec
    from organelle.transport._event_wire import EventWire
    from organelle.transport._nats_options import NatsOptions
    from organelle.transport._nats_wire import NatsWire
    from organelle.transport.base import Inbound

__all__ = ["Exposer"]

_OnMsg = Callable[[bytes, bytes | None, bytes | None, bytes], None]

log = logging.getLogger("organelle.transport.nats")

_JSON = codec_for("json")
_monotonic = time.monotonic
_MAX_REPLY_KINDS = 256
_MAX_TOPICS = 4096

# The header block organelle's own callers send with a plain call (no principal,
# meta or codec): read with one match instead of the general parser. Anything
# else (another client's headers, odd spacing, more lines) takes the general path.
_PLAIN_REQUEST = re.compile(
    rb"NATS/1\.0\r\nOrganelle-Id: ([!-~]{1,200})\r\n"
    rb"(?:Organelle-Correlation-Id: ([!-~]{1,200})\r\n)?"
    rb"(?:Organelle-Causation-Id: ([!-~]{1,200})\r\n)?"
    rb"Organelle-Timeout-Ms: ([0-9]{1,15})\r\n\r\n"
).fullmatch


_Request = tuple[str, bytes, bytes | None, bytes]


class _InContext:
    """Awaitable that drives a started coroutine on, each step in the request's own context.

    The task awaiting it is the one whose step started the coroutine, so
    what the handler bound to "the current task" before it first waited
    (``asyncio.timeout``, a cancel) still applies to it.
    """

    __slots__ = ("context", "coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, None], first: Any, context: Context_) -> None:
        self.coro = coro
        self.first = first
        self.context = context

    def __await__(self) -> Generator[Any, Any, None]:
        coro, run, value = self.coro, self.context.run, self.first
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # a cancellation or timeout: the handler's to see
                try:
                    value = run(coro.throw, exc)
                except StopIteration:
                    return
            else:
                try:
                    value = run(coro.send, sent)
                except StopIteration:
                    return


def _too_large(what: str, size: int, limit: int) -> ValidationError:
    message = f"{what} of {size} bytes exceeds the limit of {limit} bytes"
    return ValidationError(message, errors=[{"field": "$", "message": message}])


class Exposer:
    """Subscribes exposed modules and serves what arrives for them."""

    def __init__(self, wire: NatsWire, options: NatsOptions, events: EventWire) -> None:
        self.wire = wire
        self.options = options
        self.events = events
        self.inbound: Inbound | None = None
        self.exposed: dict[str, tuple[ModuleSpec, list[int]]] = {}
        self._rpc_prefix = f"{options.prefix}.rpc."
        self._rpc_plen = len(self._rpc_prefix)
        self.direct_prefix = f"{options.prefix}.node.{node_key(options.node)}.rpc."
        self._direct_plen = len(self.direct_prefix)
        self._evt_plen = len(options.prefix) + len(".evt.")
        self._tasks: set[asyncio.Task[Any]] = set()
        self._topics: dict[bytes, str] = {}  # event subject -> topic
        self._reply_kinds: dict[str, dict[type, bytes]] = {}
        self._batch: list[_Request] | None = None  # requests read, their task not yet run
        self._backlog: deque[tuple[str, str, bytes, bytes | None, bytes]] | None = None
        self._backlog_bytes = 0
        self._draining: asyncio.Task[None] | None = None
        # Balanced event subscriptions by module: (sid, subject, handler, queue).
        self._balanced: dict[str, list[tuple[int, str, _OnMsg, str]]] = {}
        self._shed: list[str] = []  # modules whose balanced groups this node left
        self.sheds = 0  # times this node left its groups (a gauge of overload)
        # Whether this node may leave module's balanced groups now: another live
        # member stays (set by the transport, which reads the registry).
        self.may_shed: Callable[[str], bool] = lambda _module: False

    @property
    def max_in(self) -> int:
        """The largest request or event accepted."""
        return self.options.max_payload_bytes or self.wire.max_payload

    def modules(self) -> dict[str, ModuleEntry]:
        """What this node serves, for the registry."""
        return {
            name: ModuleEntry(
                version=str(spec.version),
                methods=sorted(spec.rpcs),
                events=[s.spec.pattern for s in spec.subscriptions],
                options=rpc_options(spec),
            )
            for name, (spec, _) in self.exposed.items()
        }

    # -- subscriptions -------------------------------------------------------------------
    async def expose(self, spec: ModuleSpec) -> None:
        """Subscribe the module; return once the server has the subscriptions."""
        if spec.name in self.exposed:
            return
        wire, prefix, name = self.wire, self.options.prefix, spec.name
        sids = []
        if spec.rpcs:
            sids.append(
                wire.subscribe(f"{self._rpc_prefix}{name}.*", self._on_rpc, f"{prefix}.rpc.{name}")
            )
            sids.append(wire.subscribe(f"{self.direct_prefix}{name}.*", self._on_direct))
        balanced = []
        for sub in spec.subscriptions:
            queue = f"{prefix}.evt.{name}.{sub.attr}" if sub.spec.delivery != "broadcast" else None
            handler = self._event_handler(name, sub.attr)
            subject = f"{prefix}.evt.{sub.spec.pattern}"
            sid = wire.subscribe(subject, handler, queue)
            sids.append(sid)
            if queue is not None:
                balanced.append((sid, subject, handler, queue))
        self.exposed[name] = (spec, sids)
        self._balanced[name] = balanced
        if wire.connected:
            await wire.flush()

    async def withdraw(self, name: str) -> None:
        """Unsubscribe the module; calls already on their way get a retryable refusal."""
        entry = self.exposed.pop(name, None)
        if entry is None:
            return
        if name in self._shed:  # its balanced groups are left already
            self._shed.remove(name)
        for sid in entry[1]:
            self.wire.unsubscribe(sid)
        self._balanced.pop(name, None)
        if self.wire.connected:
            try:
                await self.wire.flush(2.0)
            except (OrganelleError, TimeoutError):
                log.debug("flush after withdrawing %s failed", name)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Wait (bounded) for replies still being computed."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)

    # -- RPC -----------------------------------------------------------------------------
    def _on_rpc(self, subject: bytes, reply: bytes | None, hdr: bytes | None, data: bytes) -> None:
        if reply is None:
            log.debug("dropping a request on %r without a reply subject", subject)
            return
        target = self._method(subject, self._rpc_plen, reply)
        if target is not None:
            self._start(target, reply, hdr, data)

    def _start(self, target: str, reply: bytes, hdr: bytes | None, data: bytes) -> None:
        """Queue a request for the batch of this read (one task serves the whole batch)."""
        batch = self._batch
        if batch is None:
            batch = self._batch = []
            self._spawn(batch)
        batch.append((target, reply, hdr, data))

    def _spawn(self, batch: list[_Request]) -> None:
        task = asyncio.get_running_loop().create_task(self._serve_batch(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve_batch(self, batch: list[_Request]) -> None:
        """Serve the requests of a batch in turn, each in its own context, in this task.

        Why: a task per request (creation, a loop turn, the weak set of all
        tasks) cost more than the dispatch itself, and most handlers answer
        without waiting. The first one that waits keeps this task to the end
        (so a timeout or cancel it took on the current task still reaches it);
        the requests after it go on in a new task at once.
        """
        if self._batch is batch:
            self._batch = None  # what arrives from now on starts a batch of its own
        for i, (target, reply, hdr, data) in enumerate(batch):
            coro = self._serve(target, reply, hdr, data)
            context = copy_context()
            try:
                first = context.run(coro.send, None)
            except StopIteration:
                continue
            if i + 1 < len(batch):
                self._spawn(batch[i + 1 :])
            else:
                self.wire.write_now()
            await _InContext(coro, first, context)
            self.wire.write_now()
            return
        self.wire.write_now()  # the batch's replies in one write, without another loop turn

    def _method(self, subject: bytes, plen: int, reply: bytes) -> str | None:
        """The ``module.method`` of a request subject; a non-UTF-8 one is answered, ``None``."""
        try:
            return subject[plen:].decode()
        except UnicodeDecodeError:
            message = "the method of a request subject must be valid UTF-8"
            field = [{"field": "subject", "message": "not valid UTF-8"}]
            self._reply_error(reply, _JSON, ValidationError(message, errors=field))
            return None

    def _on_direct(
        self, subject: bytes, reply: bytes | None, hdr: bytes | None, data: bytes
    ) -> None:
        """A call addressed to this very node: served as one from the queue group."""
        if reply is None:
            return
        target = self._method(subject, self._direct_plen, reply)
        if target is not None:
            self._start(target, reply, hdr, data)

    @staticmethod
    def _decode_headers(hdr: bytes | None) -> tuple[Codec, dict[str, str]]:
        """``(codec, headers)`` of a message; an unknown codec raises (the reply stays JSON)."""
        headers = parse_headers(hdr)[1] if hdr else {}
        return (codec_of(headers) if headers else _JSON), headers

    def _params(self, codec: Codec, data: bytes) -> dict[str, Any]:
        if len(data) > self.max_in:
            raise _too_large("request", len(data), self.max_in)
        params = codec.decode(data) if data else {}
        if not isinstance(params, dict):
            raise ValidationError(
                "RPC parameters must be an object",
                errors=[{"field": "$", "message": "expected an object of parameters"}],
            )
        return params

    async def _serve(self, target: str, reply: bytes, hdr: bytes | None, data: bytes) -> None:
        codec: Codec = _JSON
        inbound = self.inbound
        if inbound is None or target.partition(".")[0] not in self.exposed:
            gone = UnavailableError(f"{target!r} is no longer served by this node")
            self._reply_error(reply, codec, gone, retry=True)
            return
        try:
            plain = _PLAIN_REQUEST(hdr) if hdr else None
            if plain is not None:
                ctx = self._plain_context(plain)
            else:
                codec, headers = self._decode_headers(hdr)
                ctx = context_from(headers)
            params = self._params(codec, data)
            result = await inbound.dispatch(target, params, ctx)
            body = codec.encode(result)
            if len(body) > self.wire.max_payload:
                raise _too_large("reply", len(body), self.wire.max_payload)  # noqa: TRY301
            self.wire.publish(reply, body, None, self._reply_headers(codec, result))
        except OrganelleError as err:
            self._reply_error(reply, codec, err)
        except Exception as exc:
            self._reply_error(reply, codec, InternalError.wrap(exc))

    @staticmethod
    def _plain_context(found: re.Match[bytes]) -> Context:
        """The context of a plain request's headers (as ``context_from`` reads them)."""
        rid, corr, cause, ms = found.groups()
        return Context(
            rid.decode(),
            _monotonic() + int(ms) / 1000,
            None if corr is None else corr.decode(),
            None if cause is None else cause.decode(),
            None,
            {},
            None,
        )

    def _reply_headers(self, codec: Codec, result: Any) -> bytes:
        """A success's header block, kept per result class (its wire name never changes)."""
        kinds = self._reply_kinds.get(codec.name)
        if kinds is None:
            kinds = self._reply_kinds[codec.name] = {}
        cls = type(result)
        block = kinds.get(cls)
        if block is None:
            block = reply_headers(codec.name, type_name=wire_name(result))
            if len(kinds) < _MAX_REPLY_KINDS:
                kinds[cls] = block
        return block

    def _reply_error(
        self, reply: bytes, codec: Codec, err: OrganelleError, *, retry: bool = False
    ) -> None:
        try:
            body = codec.encode(err.to_wire())
        except ValidationError:  # details that cannot be encoded: send the rest
            body = codec.encode({**err.to_wire(), "details": {}})
        if len(body) > self.wire.max_payload:
            body = codec.encode({**err.to_wire(), "details": {}})
        try:
            headers = reply_headers(codec.name, err.code, retry=retry, node=self.options.node)
            self.wire.publish(reply, body, None, headers)
        except UnavailableError:
            log.debug("could not reply %s: disconnected", err.code)

    # -- events --------------------------------------------------------------------------
    def _event_handler(
        self, module: str, attr: str
    ) -> Callable[[bytes, bytes | None, bytes | None, bytes], None]:
        # A partial, not a closure: no Python frame of its own per event.
        return partial(self._on_event, module, attr)

    def _on_event(  # noqa: PLR0911 - one flat path per event received, each way out a return
        self,
        module: str,
        attr: str,
        subject: bytes,
        _reply: bytes | None,
        hdr: bytes | None,
        data: bytes,
    ) -> None:
        inbound = self.inbound
        if inbound is None or module not in self.exposed:
            return
        if self._backlog is not None:  # the local queue is full: keep order behind it, unread
            self._hold(module, attr, subject, hdr, data)
            return
        # ``_read_event``, inline: this runs once per event received.
        topic = self._topics.get(subject)
        if topic is None:
            topic = self._topic(subject)
        try:
            headers = header_map(hdr) if hdr else {}
            limit = self.options.max_payload_bytes or self.wire.max_payload
            if len(data) > limit:
                raise _too_large("event", len(data), limit)  # noqa: TRY301
            payload = self.events.read(topic, headers, data, limit)
            ctx = event_context(headers, topic)
        except OrganelleError as err:
            self.events.drop(topic, err)
            return
        except Exception as exc:  # a decoder's own failure (deep nesting): still malformed
            self.events.drop(topic, ValidationError(f"{type(exc).__name__}: {exc}"))
            return
        # Handed to the local queue, or the backlog starts if it is full.
        if type(payload) is Claimed:  # fetched by the draining task; what follows waits
            self._start_backlog(None, None, (module, attr, payload, ctx))
            return
        coro = inbound.deliver(module, attr, payload, ctx)
        try:
            first = coro.send(None)
        except StopIteration:
            return
        except Exception:
            log.exception("delivering %r to %s.%s failed", ctx.topic, module, attr)
            return
        # The local queue is full. Reading goes on (PINGs, replies and RPC must
        # flow, and NATS core would drop for a reader that stops): what follows
        # waits in the backlog, bounded by max_backlog_bytes.
        self._start_backlog(coro, first, None)

    def _hold(self, module: str, attr: str, subject: bytes, hdr: bytes | None, data: bytes) -> None:
        """Queue an event unread behind the backlog (dropped past ``max_backlog_bytes``)."""
        backlog = self._backlog
        assert backlog is not None  # noqa: S101 - checked by the caller
        size = len(data) + (len(hdr) if hdr else 0)
        if self._backlog_bytes + size > self.options.max_backlog_bytes:
            self._overflow(subject)
            return
        self._backlog_bytes += size
        backlog.append((module, attr, subject, hdr, data))
        shed_at = self.options.shed_backlog_bytes
        if shed_at and not self._shed and self._backlog_bytes >= shed_at:
            self._leave_groups()

    def _read_event(
        self, subject: bytes, hdr: bytes | None, data: bytes
    ) -> tuple[Any, Context] | None:
        """``(payload, context)`` of an incoming event; ``None``: dropped (counted, logged)."""
        topic = self._topics.get(subject)
        if topic is None:
            topic = self._topic(subject)
        try:
            headers = header_map(hdr) if hdr else {}
            limit = self.options.max_payload_bytes or self.wire.max_payload
            if len(data) > limit:
                raise _too_large("event", len(data), limit)  # noqa: TRY301
            payload = self.events.read(topic, headers, data, limit)
            return payload, event_context(headers, topic)
        except OrganelleError as err:
            self.events.drop(topic, err)
        except Exception as exc:  # a decoder's own failure (deep nesting): still malformed
            self.events.drop(topic, ValidationError(f"{type(exc).__name__}: {exc}"))
        return None

    def _topic(self, subject: bytes) -> str:
        """The topic of an event subject (kept: a subscription sees the same few)."""
        topics = self._topics
        if len(topics) >= _MAX_TOPICS:
            topics.clear()
        topic = topics[subject] = subject[self._evt_plen :].decode(errors="replace")
        return topic

    def _overflow(self, subject: bytes) -> None:
        topic = subject[self._evt_plen :].decode(errors="replace")
        limit = self.options.max_backlog_bytes
        err = UnavailableError(
            f"the local event queue is full and the backlog holds {self._backlog_bytes} "
            f"of max_backlog_bytes={limit}",
            details={"reason": "overflow"},
        )
        self.events.drop(topic, err)

    def _start_backlog(
        self,
        coro: Coroutine[Any, Any, Any] | None,
        first: Any,
        claimed: tuple[str, str, Any, Context] | None,
    ) -> None:
        inbound = self.inbound
        assert inbound is not None  # noqa: S101 - checked by the caller
        self._backlog = deque()
        self._backlog_bytes = 0
        task = asyncio.get_running_loop().create_task(self._drain(inbound, coro, first, claimed))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._draining = task

    async def _drain(
        self,
        inbound: Inbound,
        coro: Coroutine[Any, Any, Any] | None,
        first: Any,
        claimed: tuple[str, str, Any, Context] | None,
    ) -> None:
        backlog = self._backlog
        assert backlog is not None  # noqa: S101 - set by _start_backlog
        try:
            if coro is not None:
                await self._finish(Continuation(coro, first))
            if claimed is not None:
                await self._deliver(inbound, *claimed)
            while backlog:
                module, attr, subject, hdr, data = backlog.popleft()
                self._backlog_bytes -= len(data) + (len(hdr) if hdr else 0)
                if self._shed and self._backlog_bytes <= self.options.shed_backlog_bytes // 2:
                    self._rejoin_groups()
                item = self._read_event(subject, hdr, data)
                if item is None:
                    continue
                payload, ctx = item
                if type(payload) is Claimed:
                    await self._deliver(inbound, module, attr, payload, ctx)
                    continue
                # As ``_on_event`` does: no coroutine of ours around a delivery
                # that finds room in the local queue (most, once it drains).
                coro = inbound.deliver(module, attr, payload, ctx)
                try:
                    first = coro.send(None)
                except StopIteration:
                    continue
                except Exception:
                    log.exception("delivering %r to %s.%s failed", ctx.topic, module, attr)
                    continue
                await self._finish(Continuation(coro, first))
        finally:
            self._backlog = None
            self._backlog_bytes = 0
            self._draining = None
            if self._shed:
                self._rejoin_groups()

    # -- shedding: a slow member leaves its balanced groups for a while ---------------------
    def _leave_groups(self) -> None:
        """Unsubscribe the balanced event groups another live member keeps serving.

        NATS core sends a group's events to its subscribed members only, so the
        others take them; a module whose other members are all gone (or that
        this node anchors: ``may_shed``) keeps its subscription, so a group is
        never left empty by its members shedding at once.
        """
        for module, entries in self._balanced.items():
            if not entries or not self.may_shed(module):
                continue
            sids = self.exposed[module][1]
            loop = asyncio.get_running_loop()
            for sid, *_ in entries:
                sids.remove(sid)
                # What the server sent before the UNSUB is still taken (into the backlog).
                task = loop.create_task(self.wire.leave(sid))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            self._shed.append(module)
        if self._shed:
            self.sheds += 1
            log.warning(
                "event backlog at %d bytes: leaving the balanced groups of %s to the other "
                "members until it halves",
                self._backlog_bytes,
                ", ".join(self._shed),
            )

    def _rejoin_groups(self) -> None:
        """Subscribe the balanced groups left by ``_leave_groups`` again."""
        for module in self._shed:
            if module not in self.exposed:
                continue
            _, sids = self.exposed[module]
            fresh = []
            for _, subject, handler, queue in self._balanced[module]:
                sid = self.wire.subscribe(subject, handler, queue)
                sids.append(sid)
                fresh.append((sid, subject, handler, queue))
            self._balanced[module] = fresh
        log.info("event backlog down to %d bytes: back in %s", self._backlog_bytes, self._shed)
        self._shed = []

    async def _deliver(
        self, inbound: Inbound, module: str, attr: str, payload: Any, ctx: Context
    ) -> None:
        if isinstance(payload, Claimed):
            try:
                payload = await self.events.redeem(payload)
            except OrganelleError as err:
                self.events.drop(payload.topic, err)
                return
        await self._finish(inbound.deliver(module, attr, payload, ctx))

    @staticmethod
    async def _finish(delivery: Any) -> None:
        """Await one delivery; a failure is logged and the backlog goes on (never lost)."""
        try:
            await delivery
        except Exception:
            log.exception("event delivery failed")

    async def events_settled(self) -> None:
        """Wait until every event read so far has been handed to the local queue."""
        while (task := self._draining) is not None:
            await asyncio.wait({task})
