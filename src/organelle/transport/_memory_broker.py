"""The broker of ``memory://<name>``: which node serves what, and who gets each message.

It plays the part the NATS server and the registry bucket play for
``NatsTransport``: one queue group per module for RPC, one per balanced
``(module, handler)`` for events, plain subscriptions for broadcast handlers,
and the list of nodes with what they serve. It only routes: encoding,
contexts and replies are the transport's (``memory.py``).

Brokers are process-wide, one per name, held weakly and dropped when their
last node leaves, so a test that uses a fresh name never sees another test's
nodes and nothing outlives the kernels that used it.
"""

from __future__ import annotations

import asyncio
import itertools
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from organelle.errors import ConfigError, TransportError
from organelle.module._topics import matches

if TYPE_CHECKING:
    from organelle.module import ModuleSpec

__all__ = ["Broker", "Member", "Reply", "Route", "broker_named", "open_brokers"]

# (error code or None, refused unrun, body, the result's wire type name or None)
Reply = tuple[str | None, bool, bytes, str | None]
"""An RPC reply as NATS would carry it: ``(error code or None, retry, body)``."""


class Member(Protocol):
    """A node as the broker and the other nodes see it (a ``MemoryTransport``)."""

    @property
    def node(self) -> str:
        """The node's name, unique in its broker."""
        ...

    @property
    def exposed(self) -> Mapping[str, ModuleSpec]:
        """The modules it serves now."""
        ...

    @property
    def delivering(self) -> asyncio.Task[None] | None:
        """The task handing a backlog of events to its kernel, while there is one."""
        ...

    def take_call(
        self, target: str, body: bytes, headers: dict[str, str], reply: asyncio.Future[Reply]
    ) -> None:
        """Serve one request; ``reply`` gets the answer."""
        ...

    def take_event(
        self, module: str, handler: str, topic: str, body: bytes, headers: dict[str, str]
    ) -> None:
        """Hand one event to a local handler's queue."""
        ...


_MAX_CACHED_TOPICS = 4096

Route = tuple[Member, str, str]
"""``(node, module, handler)``: one delivery of an event."""


class Broker:
    """Nodes of one ``memory://`` name and the routes between them.

    Args:
        name: the name after ``memory://`` (a private one for a bare ``memory://``).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.nodes: dict[str, Member] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        # Round-robin positions, one per queue group (like NATS, a group is a
        # module for RPC and a module's handler for balanced events).
        self._turns: dict[str, itertools.count[int]] = {}
        self._routes: dict[str, tuple[list[Route], list[tuple[str, list[Route]]]]] = {}
        self._waiters: set[asyncio.Future[None]] = set()
        self._versions: dict[str, dict[str, str]] = {}

    # -- membership ----------------------------------------------------------------------
    def join(self, member: Member) -> None:
        """Add a node; its modules are routed once it exposes them.

        Raises:
            ConfigError: another node of this broker has the same name.
            TransportError: the broker's nodes run on another event loop.
        """
        loop = asyncio.get_running_loop()
        if self.loop is not None and self.loop is not loop and self.nodes:
            raise TransportError(f"memory://{self.name} is in use by kernels on another event loop")
        if member.node in self.nodes:
            raise ConfigError(
                f"kernel.node: memory://{self.name} already has a node named {member.node!r}",
                details={"key": "kernel.node"},
            )
        self.loop = loop
        self.nodes[member.node] = member
        self.changed()

    def leave(self, member: Member) -> None:
        """Remove a node; the last one to leave drops the broker from the process."""
        if self.nodes.get(member.node) is member:
            del self.nodes[member.node]
        self.changed()
        if not self.nodes and _brokers.get(self.name) is self:
            del _brokers[self.name]
            self.loop = None

    def changed(self) -> None:
        """A node joined, left, exposed or withdrew: re-route, wake ``wait_changed``."""
        self._routes.clear()
        self._versions.clear()
        waiters, self._waiters = self._waiters, set()
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def wait_changed(self, timeout_s: float) -> None:
        """Return at the next change, or after ``timeout_s``."""
        fut = asyncio.get_running_loop().create_future()
        self._waiters.add(fut)
        try:
            await asyncio.wait({fut}, timeout=timeout_s)
        finally:
            self._waiters.discard(fut)
            fut.cancel()

    # -- RPC -----------------------------------------------------------------------------
    def rpc_node(self, module: str) -> Member | None:
        """The next node (round robin) whose ``module`` takes calls, or ``None``."""
        members = [m for m in self.nodes.values() if (spec := m.exposed.get(module)) and spec.rpcs]
        if not members:
            return None
        return members[next(self._turn("rpc " + module)) % len(members)]

    def rpc_member(self, node: str, module: str) -> Member | None:
        """Node ``node`` if its ``module`` takes calls (a call addressed to one node)."""
        member = self.nodes.get(node)
        spec = None if member is None else member.exposed.get(module)
        return member if spec is not None and spec.rpcs else None

    def versions(self, module: str) -> Mapping[str, str]:
        """The version of ``module`` each node exposing it announces, by node name.

        The same mapping until the next ``changed()`` (routing rebuilds its plan when not).
        """
        found = self._versions.get(module)
        if found is None:
            found = self._versions[module] = {
                m.node: str(spec.version)
                for m in self.nodes.values()
                if (spec := m.exposed.get(module)) is not None
            }
        return found

    # -- events --------------------------------------------------------------------------
    def deliveries(self, topic: str) -> list[Route]:
        """Who gets an event on ``topic``: every broadcast subscription, one per balanced group."""
        routes = self._routes.get(topic)
        if routes is None:
            if len(self._routes) > _MAX_CACHED_TOPICS:  # topics carrying ids: stay bounded
                self._routes.clear()
            routes = self._routes[topic] = self._route(topic)
        broadcast, groups = routes
        if not groups:
            return broadcast
        out = list(broadcast)
        for key, members in groups:
            out.append(members[next(self._turn(key)) % len(members)])
        return out

    def _route(self, topic: str) -> tuple[list[Route], list[tuple[str, list[Route]]]]:
        broadcast: list[Route] = []
        groups: dict[str, list[Route]] = {}
        for member in self.nodes.values():
            for name, spec in member.exposed.items():
                for sub in spec.subscriptions:
                    if not matches(sub.spec.pattern, topic):
                        continue
                    route = (member, name, sub.attr)
                    if sub.spec.delivery == "broadcast":
                        broadcast.append(route)
                    else:
                        groups.setdefault(f"evt {name} {sub.attr}", []).append(route)
        return broadcast, list(groups.items())

    def _turn(self, group: str) -> itertools.count[int]:
        turn = self._turns.get(group)
        if turn is None:
            turn = self._turns[group] = itertools.count()
        return turn


_brokers: weakref.WeakValueDictionary[str, Broker] = weakref.WeakValueDictionary()


def broker_named(name: str) -> Broker:
    """The process's broker called ``name``, made on first use."""
    found = _brokers.get(name)
    if found is None:
        found = _brokers[name] = Broker(name)
    return found


def open_brokers() -> list[str]:
    """Names of the brokers some node is connected to now (tests check nothing leaks)."""
    return sorted(name for name, b in _brokers.items() if b.nodes)
