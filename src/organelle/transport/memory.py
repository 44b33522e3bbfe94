"""``MemoryTransport``: kernels of one process as one cluster, with the semantics of NATS.

``[kernel] transport = "memory://<name>"`` makes a kernel a node of the
process's broker called ``<name>`` (``_memory_broker.py``); every kernel on
the same name is a node of the same cluster. It is for tests and
single-process clusters, and it is meant to be indistinguishable from
``NatsTransport`` except by speed, so code tested on it behaves the same
over NATS:

* parameters, results, events and errors cross by being encoded and decoded
  with the wire codec: a handler never shares an object with its caller, a
  Struct comes back as a dict, bytes as base64 in JSON — what NATS gives;
* the context is carried as the NATS headers carry it (it is turned into that
  header block and back): ids, correlation and causation, the remaining time
  as a fresh local deadline, the principal (as a ``Principal``), meta;
* calls are balanced over the nodes exposing the module (round robin where
  NATS picks at random; a node that withdrew gets none), a balanced event goes
  to one instance per ``(module, handler)``, a broadcast one to every
  instance, the sender's own subscribers included, each exactly once;
* a served call runs in a task of its own with empty contextvars, as on
  another process, and no call waits past its deadline;
* the same errors: ``NotServedError`` when no node exposes the module,
  ``CallTimeoutError``, ``UnavailableError``, a handler's own error rebuilt
  from its code.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from organelle.codec import codec_for
from organelle.envelope import Envelope, rebuild
from organelle.envelope._security import EventSecurity, parse_security
from organelle.errors import (
    CallTimeoutError,
    ConfigError,
    NotServedError,
    OrganelleError,
    UnavailableError,
    ValidationError,
)
from organelle.transport._event_wire import EventWire
from organelle.transport._memory_broker import Broker, Reply, broker_named, open_brokers
from organelle.transport._memory_serve import MemoryNode
from organelle.transport._nats_headers import (
    decode_error,
    headers_for,
    parse_headers,
)
from organelle.transport.registry import ModuleEntry, NodeInfo, rpc_options

if TYPE_CHECKING:
    from organelle.config.settings import KernelSettings
    from organelle.context import Context
    from organelle.envelope._claim import ClaimCheck
    from organelle.module import ModuleSpec
    from organelle.transport.base import Inbound

__all__ = ["MemoryOptions", "MemoryTransport", "open_brokers"]

log = logging.getLogger("organelle.transport.memory")

_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
_TARGET = re.compile(r"^[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+$")
_MAX_PAYLOAD = 1 << 20  # nats-server's default max_payload
_CLOSE_WAIT_S = 5.0
_monotonic = time.monotonic


def _bad(key: str, reason: str) -> ConfigError:
    label = f"kernel.transport_options.{key}" if key != "transport" else "kernel.transport"
    return ConfigError(f"{label}: {reason}", details={"key": label})


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryOptions:
    """Options of ``memory://<name>``: the URL, ``[kernel] node`` and ``transport_options``.

    Attributes:
        broker: the broker's name; a bare ``memory://`` gets a private one of its own.
        node: this node's name, unique in its broker.
        solo: the bare ``memory://``: no other node can join (see ``MemoryTransport.solo``).
        codec: ``json`` or ``msgpack``: what this node encodes its requests and events with.
        max_payload_bytes: the largest request, reply or event (NATS's default, 1 MiB).
        security: signing, compression and protected fields of events
            (``transport_options.security``; docs/event-security.md).
    """

    broker: str
    node: str
    codec: str = "json"
    max_payload_bytes: int = _MAX_PAYLOAD
    solo: bool = False
    security: EventSecurity = field(default_factory=EventSecurity.default)

    @classmethod
    def from_settings(cls, settings: KernelSettings) -> MemoryOptions:
        """Parse ``memory://<name>`` and the two options a memory node has.

        Raises:
            ConfigError: a bad broker name, an unknown option or a bad value.
        """
        scheme, _, name = settings.transport.partition("://")
        if scheme != "memory" or (name and not _NAME.match(name)):
            raise _bad(
                "transport", f"{settings.transport!r}: expected memory:// or memory://<name>"
            )
        node = settings.node or f"{socket.gethostname()}-{os.getpid()}-{os.urandom(2).hex()}"
        if not name:
            # One process, one node, a broker nobody else can name. Its options are
            # those of the transport the app switches to by URL (nats://…): kept, unread.
            return cls(broker=f"solo.{os.urandom(8).hex()}", node=node, solo=True)
        values: dict[str, Any] = {}
        for key, value in settings.transport_options.items():
            if key == "codec":
                if value not in ("json", "msgpack"):
                    raise _bad(key, "expected 'json' or 'msgpack'")
            elif key == "max_payload_bytes":
                if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                    raise _bad(key, f"expected a positive integer, got {value!r}")
            elif key == "security":
                value = parse_security(value)  # noqa: PLW2901 - the parsed form replaces it
            else:
                raise _bad(
                    key, "unknown option; expected one of: codec, max_payload_bytes, security"
                )
            values[key] = value
        return cls(broker=name, node=node, **values)


class MemoryTransport(MemoryNode):
    """The in-process transport of one kernel (see the module docstring).

    Args:
        options: parsed options (``from_settings`` builds them from the config).
        call_timeout_s: deadline of a call whose context has none.
    """

    def __init__(
        self,
        options: MemoryOptions,
        *,
        call_timeout_s: float = 30.0,
        claims: ClaimCheck | None = None,
    ) -> None:
        super().__init__(
            options.node,
            options.max_payload_bytes,
            EventWire(options.security, options.codec, log, claims),
        )
        self.options = options
        self.call_timeout_s = call_timeout_s
        self._codec = codec_for(options.codec)
        self._broker: Broker | None = None
        self._started = time.time()
        self._pending: set[asyncio.Future[Reply]] = set()
        self._published = 0

    @classmethod
    def from_settings(
        cls, settings: KernelSettings, claims: ClaimCheck | None = None
    ) -> MemoryTransport:
        """Build from ``[kernel] transport``, ``transport_options`` and ``node``.

        ``claims``: where payloads over ``[kernel] claim_check_above`` go.

        Raises:
            ConfigError: a bad URL or option.
        """
        return cls(
            MemoryOptions.from_settings(settings),
            call_timeout_s=settings.call_timeout_s,
            claims=claims,
        )

    @property
    def solo(self) -> bool:
        """Whether no other node can be reached (the bare ``memory://``).

        The kernel then delivers its own events on its local bus — no encoding,
        no copy, the compiled emit path — and never sends a call out.
        """
        return self.options.solo

    @property
    def connected(self) -> bool:
        """Whether this node is in its broker (read by the health check)."""
        return self._broker is not None

    # -- lifecycle -----------------------------------------------------------------------
    async def connect(self, inbound: Inbound) -> None:
        """Join the broker named in the URL (made on first use).

        Raises:
            ConfigError: another node of the broker has this node's name.
            TransportError: the broker is in use on another event loop.
        """
        if self._broker is not None:
            return
        broker = broker_named(self.options.broker)
        self._inbound = inbound
        try:
            broker.join(self)
        except OrganelleError:
            self._inbound = None
            raise
        self._broker = broker
        self._started = time.time()

    async def close(self) -> None:
        """Withdraw everything, leave the broker, finish replies in progress. Never raises."""
        broker, self._broker = self._broker, None
        if broker is None:
            return
        try:
            self._exposed.clear()
            broker.leave(self)
            await self.finish(_CLOSE_WAIT_S)
        except Exception:
            log.exception("closing the memory transport")
        finally:
            pending, self._pending = self._pending, set()
            for fut in pending:
                if not fut.done():
                    fut.set_exception(UnavailableError("the memory transport was closed"))
            self._inbound = None

    async def expose(self, spec: ModuleSpec) -> None:
        """Serve a now-active local module's RPC methods and subscriptions."""
        if spec.name in self._exposed:
            return
        self._exposed[spec.name] = spec
        if self._broker is not None:
            self._broker.changed()

    async def withdraw(self, name: str) -> None:
        """Stop serving a local module (before it stops); idempotent."""
        if self._exposed.pop(name, None) is not None and self._broker is not None:
            self._broker.changed()

    async def wait_for(
        self, name: str, timeout_s: float, accept: Callable[[str], bool] | None = None
    ) -> None:
        """Return once some node exposes module ``name`` (in a version ``accept`` takes).

        Raises:
            CallTimeoutError: none did within ``timeout_s``; ``details["versions"]``
                lists the versions served instead (node -> version).
        """
        if name in self._exposed:
            return
        deadline = _monotonic() + timeout_s
        while True:
            broker = self._broker
            if broker is None:
                raise CallTimeoutError(f"module {name!r}: the memory transport is not connected")
            found = dict(broker.versions(name))
            if any(accept is None or accept(v) for v in found.values()):
                return
            left = deadline - _monotonic()
            if left <= 0:
                raise CallTimeoutError(
                    f"module {name!r} did not become available in {timeout_s:g}s",
                    details={"module": name, "versions": found},
                )
            await broker.wait_changed(left)

    async def nodes(self) -> list[NodeInfo]:
        """Every node of the cluster, as the NATS registry would list them."""
        broker = self._broker
        if broker is None:
            return []
        members = [m for m in broker.nodes.values() if isinstance(m, MemoryTransport)]
        now = time.time()
        return sorted((m.info(now) for m in members), key=lambda n: n.node)

    def info(self, now: float) -> NodeInfo:
        """This node's entry in ``nodes()`` (always fresh: it is read, not heartbeaten)."""
        return NodeInfo(
            node=self.node,
            host=socket.gethostname(),
            pid=os.getpid(),
            started=self._started,
            ts=now,
            modules={
                name: ModuleEntry(
                    version=str(spec.version),
                    methods=sorted(spec.rpcs),
                    events=[s.spec.pattern for s in spec.subscriptions],
                    options=rpc_options(spec),
                )
                for name, spec in self._exposed.items()
            },
        )

    def _joined(self, what: str) -> Broker:
        broker = self._broker
        if broker is None:
            raise UnavailableError(f"{what}: the memory transport is not connected")
        return broker

    def versions(self, module: str) -> Mapping[str, str]:
        """The version of ``module`` each node serves, by node (read from the broker, no I/O)."""
        broker = self._broker
        return {} if broker is None else broker.versions(module)

    def rpc_options(self, module: str) -> Mapping[str, Mapping[str, Any]] | None:
        """What a node serving ``module`` declares of its methods (``None``: no node serves it)."""
        broker = self._broker
        if broker is None:
            return None
        for member in broker.nodes.values():
            spec = member.exposed.get(module)
            if spec is not None:
                return rpc_options(spec)
        return None

    # -- RPC: calling --------------------------------------------------------------------
    async def request(  # noqa: C901
        self, target: str, params: dict[str, Any], ctx: Context, node: str | None = None
    ) -> Any:
        """Call a module on some node (maybe this one; ``node``: that one); errors as a local call.

        Raises:
            NotServedError: no node exposes the module (a ``NotFoundError``).
            ValidationError: bad params (checked by the serving node) or too large.
            CallTimeoutError: the deadline passed.
            UnavailableError: the module is exposed but takes no calls, or not connected
                (at once when ``node`` does not serve it; ``details["delivered"]`` is false).
        """
        broker = self._joined(f"call to {target!r}")
        if not _TARGET.match(target):
            raise ValidationError(
                f"call target {target!r} must look like 'module.method'",
                errors=[{"field": "target", "message": "expected 'module.method'"}],
            )
        if ctx.deadline is None:
            ctx.deadline = _monotonic() + self.call_timeout_s
        deadline = ctx.deadline
        codec = self._codec
        body = codec.encode(params)
        if len(body) > self._max:
            message = f"parameters of {len(body)} bytes exceed the server's {self._max}"
            raise ValidationError(message, errors=[{"field": "$", "message": message}])
        module = target.partition(".")[0]
        while True:
            if deadline - _monotonic() <= 0:
                raise CallTimeoutError(f"call to {target!r} timed out", details={"target": target})
            member = broker.rpc_node(module) if node is None else broker.rpc_member(node, module)
            if member is None and node is not None:
                gone = UnavailableError(
                    f"node {node!r} does not answer calls to {target!r}",
                    details={"target": target, "delivered": False},
                )
                gone.node = node
                raise gone
            if member is None:
                if broker.versions(module):  # exposed, but without RPC methods
                    raise UnavailableError(
                        f"no node answers calls to {target!r}", details={"target": target}
                    )
                raise NotServedError(
                    f"no node serves module {module!r}", details={"target": target}
                )
            headers = parse_headers(headers_for(ctx, codec.name, timeout=True))[1]
            loop = asyncio.get_running_loop()
            reply: asyncio.Future[Reply] = loop.create_future()
            self._pending.add(reply)
            member.take_call(target, body, headers, reply)
            timer = loop.call_later(deadline - _monotonic(), _expire, reply, target)
            try:
                code, retry, data, type_name = await reply
            finally:
                timer.cancel()
                self._pending.discard(reply)
            if code is None:
                value = codec.decode(data) if data else None
                return rebuild(type_name, value)
            if not retry:
                err = decode_error(codec, data, code)
                err.node = member.node
                raise err
            # Refused unrun by a node that withdrew meanwhile: another instance takes it.

    # -- events --------------------------------------------------------------------------
    async def publish(self, topic: str, envelope: Envelope[Any], ctx: Context) -> None:
        """Publish an event to every subscriber on every node (local ones included).

        Each subscription's queue gets it before this returns; a node whose
        queue is full keeps the rest in order in a backlog (what the NATS
        server would hold) and this yields once so it can catch up.

        A payload over the claim-check threshold goes to the blob store first
        (``EventWire.seal``): the size limit applies to what is left.

        Raises:
            ValidationError: the payload cannot be encoded or is too large.
            UnavailableError: not connected.
            StorageUnavailableError: a claimed payload's blob store is unreachable.
        """
        broker = self._joined(f"cannot publish {topic!r}")
        hdr, body = await self._events.seal(ctx, envelope, self._max)
        headers = parse_headers(hdr)[1]
        behind = False
        for member, module, handler in broker.deliveries(topic):
            member.take_event(module, handler, topic, body, headers)
            behind = behind or member.delivering is not None
        self._published += 1
        if behind:
            await asyncio.sleep(0)

    @property
    def published(self) -> int:
        """How many events this node has published so far."""
        return self._published

    @property
    def rejected(self) -> Mapping[str, int]:
        """Incoming events dropped so far, by reason (``unsigned``, ``bad_signature``…)."""
        return self._events.rejected

    async def settle(self) -> None:
        """Return once every node's backlog is on its kernel's queue.

        Events are handed over inside ``publish``; only a full queue delays
        them, so waiting for the backlogs covers this node's events wherever
        they went (more than NATS can promise: there only this node's own).
        """
        broker = self._broker
        while broker is not None:
            tasks = {t for m in broker.nodes.values() if (t := m.delivering) is not None}
            if not tasks:
                return
            await asyncio.wait(tasks)


def _expire(fut: asyncio.Future[Reply], target: str) -> None:
    if not fut.done():
        fut.set_exception(
            CallTimeoutError(f"call to {target!r} timed out", details={"target": target})
        )
