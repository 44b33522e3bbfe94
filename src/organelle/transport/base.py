"""The transport port: how a kernel reaches modules on other nodes.

A lone kernel (a bare ``memory://``) has no transport at all: local calls are
direct awaits. A transport is attached when ``[kernel] transport`` names a
broker — NATS, or ``memory://<name>`` for the kernels of one process; the
kernel then *exposes* every active module on it and routes calls to modules
it does not run locally, and events, through it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from organelle.context import Context
    from organelle.envelope import Envelope
    from organelle.module import ModuleSpec

__all__ = ["Inbound", "Transport"]


class Inbound(Protocol):
    """What a transport may ask of its kernel (implemented by ``Kernel``)."""

    async def dispatch(self, target: str, params: dict[str, Any], ctx: Context) -> Any:
        """Serve an RPC that arrived from the wire, with the wire's context."""
        ...

    async def deliver(self, module: str, handler: str, payload: Any, ctx: Context) -> None:
        """Queue an event that arrived from the wire for one local handler.

        ``payload`` is an ``Envelope`` when the event carried one (``ce-*``
        headers), else the bare payload.
        """
        ...

    def connection_event(self, event: Literal["disconnected", "reconnected"]) -> None:
        """Report the connection going down or coming back (to the kernel's listeners)."""
        ...


class Transport(Protocol):
    """A connection of this node to the others.

    Implementations live beside this file (``nats.py``, ``memory.py``); one is
    chosen by URL (``open_transport``). ``tests/contract/test_transport.py``
    holds them to the same behaviour.
    """

    @property
    def solo(self) -> bool:
        """Whether this node is alone: no other node can be reached (the bare ``memory://``).

        A solo node's own events reach its own handlers on its local event bus
        (the kernel never publishes them); a node that shares its transport
        publishes every event and gets its own back through the transport, so a
        balanced group gets each event once cluster-wide.
        """
        ...

    @property
    def node(self) -> str:
        """This node's name in the cluster (``[kernel] node``, else host, pid and a suffix)."""
        ...

    @property
    def connected(self) -> bool:
        """Whether the connection is up now (read by the health check)."""
        ...

    async def connect(self, inbound: Inbound) -> None:
        """Connect and start serving ``inbound``; raises ``TransportError`` if unreachable."""
        ...

    async def close(self) -> None:
        """Stop serving, flush, disconnect. Never raises."""
        ...

    async def expose(self, spec: ModuleSpec) -> None:
        """Serve a now-active local module's RPC methods and subscriptions."""
        ...

    async def withdraw(self, name: str) -> None:
        """Stop serving a local module (before it stops)."""
        ...

    async def request(
        self, target: str, params: dict[str, Any], ctx: Context, node: str | None = None
    ) -> Any:
        """Call a module on another node; same errors as a local call.

        ``node=None`` lets the broker pick one of the nodes serving the module
        (the queue group); a node name sends the call to that node only, and
        when it does not serve the module the call fails at once, undelivered,
        with ``UnavailableError`` (``details["delivered"]`` is false). Every
        error from another node, or about one, names it in ``OrganelleError.node``.
        """
        ...

    def versions(self, module: str) -> Mapping[str, str]:
        """The version of ``module`` each node serving it announces, by node name.

        Read from what the transport already knows (the registry view it keeps
        fresh, the broker's table): no I/O, cheap enough to read per call.
        """
        ...

    def rpc_options(self, module: str) -> Mapping[str, Mapping[str, Any]] | None:
        """What the nodes serving ``module`` declare of its RPC methods, by method.

        ``{"quote": {"idempotent": True, "policy": {...}}}`` for methods that
        declare either; ``None`` while no node is known to serve it. Read from
        what the transport already knows (no I/O): callers' policies use it.
        """
        ...

    async def publish(self, topic: str, envelope: Envelope[Any], ctx: Context) -> None:
        """Publish an event to every subscriber on every node (local ones included).

        The envelope's attributes travel as CloudEvents binary-mode headers,
        its ``data`` as the body.
        """
        ...

    @property
    def published(self) -> int:
        """How many events this node has published so far (``drain`` compares it)."""
        ...

    @property
    def rejected(self) -> Mapping[str, int]:
        """Incoming events dropped so far, by reason (docs/event-security.md).

        ``unsigned``, ``unknown_kid``, ``bad_signature``, ``too_large`` (a body
        that decompresses past its bound), ``encoding``, ``field`` (a protected
        field that does not open), ``claim_missing``, ``claim_integrity`` and
        ``claim_unavailable`` (a claim-checked payload that cannot be had as
        sent) and ``malformed``; a solo node has none.
        """
        ...

    async def settle(self) -> None:
        """Return once this node's published events are back on its local queue.

        ``Kernel.drain`` runs it before draining the local queue, so a test can
        emit over the transport and drain without sleeping. Events published by
        other nodes are not covered: nothing here can know about them.
        """
        ...

    async def wait_for(
        self, name: str, timeout_s: float, accept: Callable[[str], bool] | None = None
    ) -> None:
        """Return once some node serves module ``name`` in a version ``accept`` takes.

        Raises:
            CallTimeoutError: none did in time; ``details["versions"]`` maps the
                nodes that serve it in another version to that version.
        """
        ...
