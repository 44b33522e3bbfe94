"""``NatsTransport``: distributed mode over NATS core (RPC, events) and KV (registry).

One config line — ``[kernel] transport = "nats://127.0.0.1:4222"`` — makes a
process a node: its active modules are exposed on queue groups, calls to
modules it does not run go out as NATS requests, and every event is
published on a subject (local subscribers receive it through NATS too, so
nothing is delivered twice). The subject scheme, headers and payloads are in
``docs/nats.md``: any NATS client can call an RPC or publish an event.

Semantics match local calls: the serving node validates, errors come back
as the same class, the remaining time travels and is enforced there, the
context (ids, principal, meta, trace) rides in headers. A call never waits
past its deadline; calls in flight when the connection drops fail at once
with ``UnavailableError``; new calls wait (within their deadline) for the
reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from organelle.codec import codec_for
from organelle.envelope import Envelope
from organelle.envelope._wire import wire_type
from organelle.errors import (
    CallTimeoutError,
    NotServedError,
    OrganelleError,
    TransportError,
    UnavailableError,
    ValidationError,
)
from organelle.transport._event_wire import EventWire
from organelle.transport._nats_headers import (
    codec_of,
    decode_error,
    headers_for,
    parse_headers,
    typed_result,
)
from organelle.transport._nats_options import NatsOptions, parse_options
from organelle.transport._nats_serve import Exposer
from organelle.transport._nats_wire import NatsWire
from organelle.transport.registry import Announcer, NatsRegistry, NodeInfo, node_key

if TYPE_CHECKING:
    from organelle.config.settings import KernelSettings
    from organelle.context import Context
    from organelle.envelope._claim import ClaimCheck
    from organelle.module import ModuleSpec
    from organelle.transport.base import Inbound

__all__ = ["NatsOptions", "NatsTransport"]

log = logging.getLogger("organelle.transport.nats")

_TARGET = re.compile(r"^[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+$")
_NO_RESPONDERS = 503
_MAX_CACHED_SUBJECTS = 4096
_monotonic = time.monotonic
_JSON = codec_for("json")
_Reply = tuple[bytes | None, bytes]
_MAX_REPLY_KINDS = 256
_PLAIN_HDR = b"NATS/1.0\r\nOrganelle-Id: %s\r\nOrganelle-Timeout-Ms: %d\r\n\r\n"
_CHILD_HDR = (
    b"NATS/1.0\r\nOrganelle-Id: %s\r\nOrganelle-Correlation-Id: %s\r\n"
    b"Organelle-Causation-Id: %s\r\nOrganelle-Timeout-Ms: %d\r\n\r\n"
)


class NatsTransport:
    """The NATS transport of one kernel (see the module docstring).

    Args:
        options: parsed options (``from_settings`` builds them from the config).
        call_timeout_s: deadline of a call whose context has none.
    """

    def __init__(
        self,
        options: NatsOptions,
        *,
        call_timeout_s: float = 30.0,
        claims: ClaimCheck | None = None,
    ) -> None:
        self.options = options
        self.call_timeout_s = call_timeout_s
        self._codec = codec_for(options.codec)
        self._codec_name = options.codec
        self._wire = NatsWire(options, on_lost=self._on_lost, on_back=self._on_back)
        self._events = EventWire(options.security, options.codec, log, claims)
        self._exposer = Exposer(self._wire, options, self._events)
        self._inbox = f"_INBOX.{os.urandom(8).hex()}."
        self._inbox_b = self._inbox.encode()
        self._inbox_len = len(self._inbox_b)
        self._tokens = itertools.count(1)
        self._pending: dict[bytes, asyncio.Future[_Reply]] = {}
        self._subjects: dict[str, bytes] = {}
        self._reply_kinds: dict[bytes, Callable[[bytes], Any]] = {}
        self._reply_unknown: set[bytes] = set()  # blocks not worth a decoder: not looked at again
        # Deadlines of calls in flight: (when, seq, future, target), earliest first,
        # behind one timer set for the earliest (see ``_sweep``).
        self._deadlines: list[tuple[float, int, asyncio.Future[_Reply], str]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._direct: dict[tuple[str, str], bytes] = {}
        self._versions: dict[str, Mapping[str, str]] = {}
        self._versions_of: object = None  # the registry view ``_versions`` was read from
        self._evt_prefix = f"{options.prefix}.evt."
        self._evt_subjects: dict[str, bytes] = {}  # topic -> its subject
        self._registry: NatsRegistry | None = None
        self._announcer: Announcer | None = None
        self._published = 0

    @classmethod
    def from_settings(
        cls, settings: KernelSettings, claims: ClaimCheck | None = None
    ) -> NatsTransport:
        """Build from ``[kernel] transport``, ``transport_options`` and ``node``.

        ``claims``: where payloads over ``[kernel] claim_check_above`` go.

        Raises:
            ConfigError: a bad URL or option.
        """
        return cls(parse_options(settings), call_timeout_s=settings.call_timeout_s, claims=claims)

    @property
    def connected(self) -> bool:
        """Whether the data connection is up (read by the health check)."""
        return self._wire.connected

    @property
    def solo(self) -> bool:
        """Never: other nodes share the server, and events come back through it."""
        return False

    @property
    def node(self) -> str:
        """This node's name in the registry."""
        return self.options.node

    # -- lifecycle -----------------------------------------------------------------------
    async def connect(self, inbound: Inbound) -> None:
        """Connect, listen for replies, and start heartbeating in the registry.

        Raises:
            TransportError: no server of the pool answered.
        """
        self._exposer.inbound = inbound
        await self._wire.connect()
        self._wire.subscribe(f"{self._inbox}*", self._on_reply)
        await self._wire.flush()
        registry = NatsRegistry(self.options)
        try:
            await registry.open()
        except TransportError as exc:
            log.warning("cluster registry off (%s); calls and events still work", exc)
            return
        self._registry = registry
        self._announcer = Announcer(registry, self._exposer.modules)
        self._exposer.may_shed = self._may_shed
        self._announcer.start()

    async def close(self) -> None:
        """Leave the registry, finish replies in progress, disconnect. Never raises."""
        try:
            for name in list(self._exposer.exposed):
                await self._exposer.withdraw(name)
            if self._announcer is not None:
                await self._announcer.stop()
            if self._registry is not None:
                await self._registry.close()
            await self._exposer.close()
        except Exception:
            log.exception("closing the NATS transport")
        finally:
            self._fail_pending(UnavailableError("the NATS transport was closed"))
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._deadlines.clear()
            await self._wire.close()

    async def expose(self, spec: ModuleSpec) -> None:
        """Serve a now-active local module's RPC methods and subscriptions."""
        await self._exposer.expose(spec)
        if self._announcer is not None:
            self._announcer.touch()

    async def withdraw(self, name: str) -> None:
        """Stop serving a local module (before it stops); idempotent."""
        await self._exposer.withdraw(name)
        if self._announcer is not None:
            self._announcer.touch()

    async def wait_for(
        self, name: str, timeout_s: float, accept: Callable[[str], bool] | None = None
    ) -> None:
        """Return once some node announces module ``name`` (in a version ``accept`` takes).

        Raises:
            CallTimeoutError: nobody did within ``timeout_s`` (or the registry is off);
                ``details["versions"]`` lists the versions served instead.
        """
        if name in self._exposer.exposed:
            return
        if self._announcer is None:
            raise CallTimeoutError(f"module {name!r}: the cluster registry is unavailable")
        await self._announcer.wait_for(name, timeout_s, accept)

    def versions(self, module: str) -> Mapping[str, str]:
        """The version of ``module`` each live node serves, by node (no I/O: the registry view).

        The view is what the last heartbeat read (every ``heartbeat_s``); the
        map of each module is built once per view.
        """
        announcer = self._announcer
        if announcer is None:
            return {}
        view = announcer.view
        if view is not self._versions_of:
            self._versions = {}
            self._versions_of = view
        found = self._versions.get(module)
        if found is None:
            found = self._versions[module] = announcer.versions(module)
        return found

    def _may_shed(self, module: str) -> bool:
        """Whether this node may leave ``module``'s balanced event groups for a while.

        The anchor — the live member with the lowest node name, by a fresh
        heartbeat — never leaves, so members shedding at once never leave a
        group empty (NATS core would drop its events unseen).
        """
        announcer = self._announcer
        if announcer is None:
            return False
        now = time.time()
        fresh = 2 * self.options.heartbeat_s + 0.5
        members = sorted(
            info.node
            for info in announcer.view.values()
            if module in info.modules and info.alive(now) and now - info.ts < fresh
        )
        return bool(members) and members[0] != self.node

    def rpc_options(self, module: str) -> Mapping[str, Mapping[str, Any]] | None:
        """What a node serving ``module`` declares of its methods (the registry view; no I/O).

        ``None`` while no live node announces the module.
        """
        announcer = self._announcer
        return None if announcer is None else announcer.options(module)

    async def nodes(self) -> list[NodeInfo]:
        """Every live node of the cluster, read now."""
        if self._announcer is None:
            return []
        nodes = await self._announcer.refresh(fresh=True)
        return sorted(nodes.values(), key=lambda n: n.node)

    # -- connection events ---------------------------------------------------------------
    def _on_lost(self) -> None:
        self._fail_pending(
            UnavailableError("the connection to NATS was lost while the call was in flight")
        )
        inbound = self._exposer.inbound
        if inbound is not None:
            inbound.connection_event("disconnected")

    def _on_back(self) -> None:
        if self._announcer is not None:
            self._announcer.touch()
        inbound = self._exposer.inbound
        if inbound is not None:
            inbound.connection_event("reconnected")

    def _fail_pending(self, exc: OrganelleError) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(exc)

    # -- RPC -----------------------------------------------------------------------------
    def _subject(self, target: str) -> bytes:
        subject = self._subjects.get(target)
        if subject is None:
            if not _TARGET.match(target):
                raise ValidationError(
                    f"call target {target!r} must look like 'module.method'",
                    errors=[{"field": "target", "message": "expected 'module.method'"}],
                )
            if len(self._subjects) > _MAX_CACHED_SUBJECTS:
                self._subjects.clear()
            subject = self._subjects[target] = f"{self.options.prefix}.rpc.{target}".encode()
        return subject

    def _direct_subject(self, node: str, target: str) -> bytes:
        """``<prefix>.node.<node>.rpc.<module>.<method>``: one node's own subscription."""
        subject = self._direct.get((node, target))
        if subject is None:
            self._subject(target)  # validates the target
            if len(self._direct) > _MAX_CACHED_SUBJECTS:
                self._direct.clear()
            subject = self._direct[node, target] = (
                f"{self.options.prefix}.node.{node_key(node)}.rpc.{target}".encode()
            )
        return subject

    def _on_reply(
        self, subject: bytes, _reply: bytes | None, hdr: bytes | None, data: bytes
    ) -> None:
        fut = self._pending.pop(subject[self._inbox_len :], None)
        if fut is not None and not fut.done():
            fut.set_result((hdr, data))

    def _watch(self, fut: asyncio.Future[_Reply], deadline: float, target: str, seq: int) -> None:
        """Fail ``fut`` with ``CallTimeoutError`` at ``deadline`` unless it is done by then.

        Why not a timer per call: on uvloop a ``call_later`` and its cancel
        cost more than the rest of the caller's side of a call. Calls mostly
        share a timeout, so a new deadline is rarely the earliest and the one
        timer stays as it is.
        """
        heap = self._deadlines
        if len(heap) > 2 * len(self._pending) + 64:  # drop the entries of finished calls
            heap[:] = [entry for entry in heap if not entry[2].done()]
            heapq.heapify(heap)
        heapq.heappush(heap, (deadline, seq, fut, target))
        if deadline < self._timer_at:
            self._arm(deadline)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(0.0, when - _monotonic()), self._sweep)

    def _sweep(self) -> None:
        """Fail every call past its deadline; set the timer for the next one."""
        self._timer = None
        self._timer_at = float("inf")
        heap = self._deadlines
        now = _monotonic()
        while heap and heap[0][0] <= now:
            _, _, fut, target = heapq.heappop(heap)
            if not fut.done():
                fut.set_exception(
                    CallTimeoutError(f"call to {target!r} timed out", details={"target": target})
                )
        while heap and heap[0][2].done():
            heapq.heappop(heap)
        if heap:
            self._arm(heap[0][0])

    async def request(  # noqa: C901, PLR0912 - one flat reading of the reply's kinds
        self, target: str, params: dict[str, Any], ctx: Context, node: str | None = None
    ) -> Any:
        """Call a module on another node (``node``: that one); the same errors as a local call.

        Raises:
            NotServedError: no live node announces the module (a ``NotFoundError``).
            ValidationError: bad params (checked by the serving node) or too large.
            CallTimeoutError: the deadline passed.
            UnavailableError: disconnected past the deadline, or nobody answers
                (at once when ``node`` does not; ``details["delivered"]`` is false).
        """
        subject = self._subject(target) if node is None else self._direct_subject(node, target)
        if ctx.deadline is None:
            ctx.deadline = _monotonic() + self.call_timeout_s
        deadline = ctx.deadline
        body = self._codec.encode(params)
        if len(body) > self._wire.max_payload:
            message = (
                f"parameters of {len(body)} bytes exceed the server's {self._wire.max_payload}"
            )
            raise ValidationError(message, errors=[{"field": "$", "message": message}])
        quiet_since = quiet_for = 0.0
        pause = 0.005
        while True:
            hdr, data = await self._roundtrip(subject, body, ctx, deadline, target)
            if hdr is None:  # a JSON success: the common case
                return _JSON.decode(data) if data else None
            typed = self._reply_kinds.get(hdr)
            if typed is not None and data:
                try:
                    return typed(data)
                except (msgspec.ValidationError, msgspec.DecodeError):
                    pass  # does not fit the class: read as below (left as decoded)
            status, headers = parse_headers(hdr)
            if status == _NO_RESPONDERS and node is not None:
                # That node does not serve the module (any more): never delivered.
                gone = UnavailableError(
                    f"node {node!r} does not answer calls to {target!r}",
                    details={"target": target, "delivered": False},
                )
                gone.node = node
                raise gone
            if status == _NO_RESPONDERS:
                # Nobody subscribed right now: a node may be reconnecting. Unknown
                # modules fail at once; known ones are retried for a short while.
                if not quiet_since:
                    quiet_since = _monotonic()
                    await self._check_known(target, deadline)
                    # after an outage the serving nodes may still be reconnecting
                    quiet_for = self.options.no_responders_wait_s
                    if self._announcer is not None:
                        quiet_for = max(quiet_for, self._announcer.settling_s())
                elif _monotonic() - quiet_since > quiet_for:
                    raise UnavailableError(
                        f"no node answers calls to {target!r}", details={"target": target}
                    )
                await asyncio.sleep(min(pause, max(0.0, deadline - _monotonic())))
                pause = min(pause * 2, 0.1)
                continue
            try:
                codec = codec_of(headers)
            except ValidationError as exc:
                raise TransportError(f"reply from {target!r}: {exc}") from None
            code = headers.get("organelle-error")
            if code is None:
                if status == 0 and codec is _JSON and hdr not in self._reply_unknown:
                    self._learn_reply(hdr, headers)
                return typed_result(headers, codec.decode(data) if data else None)
            if not headers.get("organelle-retry"):
                err = decode_error(codec, data, code)
                err.node = headers.get("organelle-node") or node
                raise err
            # Refused unrun by a node that is leaving: another instance takes it.

    def _learn_reply(self, hdr: bytes, headers: Mapping[str, str]) -> None:
        """Keep a decoder for a JSON success header block naming only a Struct or dataclass.

        Why: the block is the same for every reply of a method, and decoding
        straight into the class costs less than reading the headers, decoding
        to dicts and converting. A name not known here (or a pydantic model)
        is not kept: the general path reads it each time.
        """
        if len(self._reply_kinds) >= _MAX_REPLY_KINDS:
            return
        if len(headers) != 1:
            self._forget_reply(hdr)
            return
        name = headers.get("organelle-type")
        cls = wire_type(name) if name else None
        if cls is None or not (
            hasattr(cls, "__struct_fields__") or hasattr(cls, "__dataclass_fields__")
        ):
            self._forget_reply(hdr)
            return
        self._reply_kinds[hdr] = msgspec.json.Decoder(cls, strict=False).decode

    def _forget_reply(self, hdr: bytes) -> None:
        """Read this block the general way from now on (bounded: blocks may vary per reply)."""
        unknown = self._reply_unknown
        if len(unknown) >= _MAX_REPLY_KINDS:
            unknown.clear()  # a type loaded since may be learnt on the next round
        unknown.add(hdr)

    @staticmethod
    def _headers(ctx: Context, codec: str) -> bytes:
        """A request's header block: common shapes formatted here, others by ``headers_for``."""
        if ctx.principal is None and not ctx.meta and codec == "json" and ctx.deadline:
            ms = max(1, int((ctx.deadline - _monotonic()) * 1000))
            corr, cause = ctx.corr, ctx.cause
            if corr is None and cause is None:
                return _PLAIN_HDR % (ctx.request_id.encode(), ms)
            if corr is not None and cause is not None:
                return _CHILD_HDR % (
                    ctx.request_id.encode(),
                    ctx.correlation_id.encode(),
                    (ctx.causation_id or "").encode(),
                    ms,
                )
        return headers_for(ctx, codec, timeout=True)

    async def _roundtrip(
        self, subject: bytes, body: bytes, ctx: Context, deadline: float, target: str
    ) -> _Reply:
        """Send one request and wait for its reply, never past ``deadline``."""
        wire = self._wire
        left = deadline - _monotonic()
        if left <= 0:
            raise CallTimeoutError(f"call to {target!r} timed out", details={"target": target})
        if not wire.connected and not await wire.wait_connected(left):
            raise UnavailableError(f"call to {target!r}: not connected to NATS")
        loop = asyncio.get_running_loop()
        seq = next(self._tokens)
        token = b"%d" % seq
        fut: asyncio.Future[_Reply] = loop.create_future()
        self._pending[token] = fut
        wire.publish(subject, body, self._inbox_b + token, self._headers(ctx, self._codec_name))
        if len(self._pending) == 1:  # the only call in flight: no burst to write it with
            wire.write_now()
        self._watch(fut, deadline, target, seq)
        try:
            return await fut
        finally:
            self._pending.pop(token, None)

    async def _check_known(self, target: str, deadline: float) -> None:
        """Raise ``NotServedError`` when the registry (read now) knows nobody serving the module."""
        announcer = self._announcer
        if announcer is None:
            return
        module = target.partition(".")[0]
        try:
            async with asyncio.timeout(max(0.01, min(1.0, deadline - _monotonic()))):
                await announcer.refresh(fresh=True)
        except Exception as exc:  # registry away: cannot tell, keep retrying
            log.debug("registry read failed: %s", exc)
            return
        if announcer.serving(module) is False:
            raise NotServedError(f"no node serves module {module!r}", details={"target": target})

    # -- events --------------------------------------------------------------------------
    async def publish(self, topic: str, envelope: Envelope[Any], ctx: Context) -> None:
        """Publish an event to every subscriber on every node (local ones included).

        A payload over the claim-check threshold goes to the blob store first
        (``EventWire.seal``): the size limit applies to what is left.

        Raises:
            ValidationError: the payload cannot be encoded or is too large.
            UnavailableError: disconnected for longer than ``call_timeout_s``.
            StorageUnavailableError: a claimed payload's blob store is unreachable.
        """
        wire = self._wire
        framed = self._events.quick(ctx, envelope, wire.max_payload)
        if framed is None:
            framed = await self._events.seal(ctx, envelope, wire.max_payload)
        if not wire.ready:
            await self._until_ready(topic)
        subject = self._evt_subjects.get(topic)
        if subject is None:
            subject = self._evt_subject(topic)
        wire.publish(subject, framed[1], None, framed[0])
        self._published += 1

    async def _until_ready(self, topic: str) -> None:
        """Wait for the connection (within ``call_timeout_s``) and for room to write.

        Raises:
            UnavailableError: still not connected.
        """
        wire = self._wire
        if not wire.connected and not await wire.wait_connected(self.call_timeout_s):
            raise UnavailableError(f"cannot publish {topic!r}: not connected to NATS")
        await wire.writable()

    def _evt_subject(self, topic: str) -> bytes:
        subjects = self._evt_subjects
        if len(subjects) >= _MAX_CACHED_SUBJECTS:
            subjects.clear()
        subject = subjects[topic] = (self._evt_prefix + topic).encode()
        return subject

    @property
    def published(self) -> int:
        """How many events this node has published so far."""
        return self._published

    @property
    def rejected(self) -> Mapping[str, int]:
        """Incoming events dropped so far, by reason (``unsigned``, ``bad_signature``…)."""
        return self._events.rejected

    async def settle(self) -> None:
        """PING/PONG on the publishing connection, then wait until reads are queued.

        The server answers the PING only after routing what was published
        before it, so this node's own events have arrived when PONG does.
        """
        if self._wire.connected:
            with contextlib.suppress(OrganelleError, TimeoutError):  # gone: nothing comes back
                await self._wire.flush()
        await self._exposer.events_settled()
