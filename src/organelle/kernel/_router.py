"""The router: where a call goes — a local route, or another node through the transport.

It owns the route tables (what this node serves, and where its own calls go)
and the transport; it checks at start that the modules this node requires
from others are served in an accepted version. Weighted routing
(``_routing.py``) picks the node of a call when a ``[routing]`` table asks;
per-call policies plug in here.

Two binders live here: ``routes`` puts a slot's RPC methods in the tables
before its ``on_start`` (so it can be called while starting others) and
takes them out after its ``on_stop``; ``exposure`` announces the module on
the wire once it is active and withdraws it before it stops.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from packaging.version import InvalidVersion, Version

from organelle.errors import CallTimeoutError, DependencyError, LifecycleError
from organelle.kernel._routes import CallStats, RpcEntry
from organelle.kernel._routing import Routing
from organelle.transport import in_process, open_transport

if TYPE_CHECKING:
    from organelle.auth.base import Authorizer
    from organelle.config.settings import KernelSettings
    from organelle.context import Context
    from organelle.kernel._policy import Policies
    from organelle.kernel._slots import Slot, Slots
    from organelle.module._graph import Dependency
    from organelle.transport import Transport

__all__ = ["Router"]

_monotonic = time.monotonic


class Router:
    """Route tables, the transport and remote dependencies of one kernel.

    Attributes:
        local: ``"module.method"`` → route, where this node's calls go without the
            transport (the compiled call path reads this very dict).
        serving: every route this node serves (to itself and to the wire).
        transport: the connection to other nodes; a solo one (the bare
            ``memory://``) when there are none. Made anew at each start.
        stats: per-method counters while a listener asks for them (``enable_stats``).
    """

    def __init__(
        self,
        slots: Slots,
        settings: Callable[[], KernelSettings],
        authorizer: Callable[[], Authorizer],
    ) -> None:
        self._slots = slots
        self._settings = settings
        self._authorizer = authorizer
        self.local: dict[str, RpcEntry] = {}
        self.serving: dict[str, RpcEntry] = {}
        self._targets: dict[str, list[str]] = {}  # module -> its targets: unbinding is O(own)
        self.transport: Transport = open_transport(settings())
        self.stats: dict[str, CallStats] | None = None
        self._bounds: tuple[float, ...] = ()
        self.policies: Policies | None = None  # set by the kernel: marks routes with a policy
        self.routing = Routing(
            lambda: self.transport, self.accepts, lambda: self._settings().call_timeout_s
        )
        self.routes = _Routes(self)
        self.exposure = _Exposure(self)

    # route tables -------------------------------------------------------------
    def enable_stats(self, bounds: tuple[float, ...]) -> dict[str, CallStats]:
        """Count every RPC this node serves; return the live table (see ``Kernel``)."""
        if self.stats is None:
            self.stats = {}
            self._bounds = tuple(sorted(bounds))
            for entry in self.serving.values():
                entry.stats = self.stats.setdefault(entry.target, CallStats(self._bounds))
        return self.stats

    def disable_stats(self) -> None:
        """Stop counting (nobody asks any more): every route drops its counters."""
        if self.stats is not None:
            self.stats = None
            for entry in self.serving.values():
                entry.stats = None

    def bind(self, slot: Slot) -> None:
        """Put the slot's RPC methods in the tables (replacing a previous instance's)."""
        self.unbind(slot.name)
        settings = self._settings()
        authorizer = self._authorizer()
        prefer_local = settings.prefer_local or self.transport.solo
        policies = self.policies
        if policies is not None:
            policies.forget(slot.name)  # the new instance may declare other policies
        for method in slot.spec.rpcs:
            entry = RpcEntry(slot, method, settings.validate, authorizer)
            if policies is not None:
                entry.mark_policy(
                    policies.applies(entry.target), policies.guard(None, entry.target)
                )
            if self.stats is not None:
                entry.stats = self.stats.setdefault(entry.target, CallStats(self._bounds))
            self.serving[entry.target] = entry
            self._targets.setdefault(slot.name, []).append(entry.target)
            if prefer_local:
                self.local[entry.target] = entry

    def mark_policies(self) -> None:
        """Re-mark every route after the policies changed (a reload)."""
        policies = self.policies
        if policies is not None:
            for entry in self.serving.values():
                entry.mark_policy(
                    policies.applies(entry.target), policies.guard(None, entry.target)
                )

    def unbind(self, name: str) -> None:
        """Take module ``name``'s methods out of the tables."""
        self.routing.forget()  # local modules change: so may the requires routing honours
        for target in self._targets.pop(name, ()):
            self.local.pop(target, None)
            self.serving.pop(target, None)

    def blocked(self, target: str) -> bool:
        """A local module that is not serving must not be shadowed by a remote one silently."""
        module, _, method = target.partition(".")
        slot = self._slots.get(module)
        return slot is not None and self._settings().prefer_local and method not in slot.spec.rpcs

    async def send(
        self,
        target: str,
        params: dict[str, Any],
        ctx: Context,
        *,
        avoid: Collection[str] = (),
        node: str | None = None,
    ) -> Any:
        """Send a call to another node: routed by a ``[routing]`` table, else the queue group.

        ``avoid``: nodes not to send it to (``Routing.pick``); ``node``: the one
        to send it to (a policy with per-node breakers picked it).
        """
        if avoid or node is not None or self.routing.active:
            return await self.routing.send(target, params, ctx, avoid, node)
        return await self.transport.request(target, params, ctx)

    def accepts(self, module: str, version: str) -> bool:
        """Whether ``version`` of ``module`` is in the ``requires`` range of every local module."""
        for slot in self._slots.values():
            for dep in slot.spec.deps:
                if dep.name == module and not _satisfies(dep, version):
                    return False
        return True

    # remote dependencies -----------------------------------------------------
    def local_deps(self, slot: Slot) -> tuple[Dependency, ...]:
        """With a transport, a dependency this node does not run is served by another node."""
        if in_process(self._settings().transport):
            return slot.spec.deps
        return tuple(d for d in slot.spec.deps if d.name in self._slots)

    async def await_remote_deps(self) -> None:
        """Wait (``hook_timeout_s`` in all) for each required module another node serves.

        Some node must serve it in a version every local module requiring it accepts.

        Raises:
            DependencyError: only versions outside a required range are served.
            LifecycleError: nobody serves a required module.
        """
        transport = self.transport
        wanted: dict[str, list[tuple[str, Dependency]]] = {}
        for slot in self._slots.values():
            for dep in slot.spec.deps:
                if not dep.optional and dep.name not in self._slots:
                    wanted.setdefault(dep.name, []).append((slot.name, dep))
        deadline = _monotonic() + self._settings().hook_timeout_s
        for name in sorted(wanted):
            users = wanted[name]

            def accept(version: str, users: list[tuple[str, Dependency]] = users) -> bool:
                return all(_satisfies(dep, version) for _, dep in users)

            try:
                await transport.wait_for(name, max(0.0, deadline - _monotonic()), accept)
            except CallTimeoutError as exc:
                raise _unserved(name, users, exc) from None


class _Routes:
    """Binder: a slot's RPC methods in the route tables."""

    kind = "rpc"
    stage = "route"

    def __init__(self, router: Router) -> None:
        self._router = router

    async def attach(self, slot: Slot) -> None:
        self._router.bind(slot)

    async def detach(self, slot: Slot) -> None:
        self._router.unbind(slot.name)


class _Exposure:
    """Binder: a slot's methods and subscriptions announced on the wire."""

    kind = "wire"
    stage = "serve"

    def __init__(self, router: Router) -> None:
        self._router = router

    async def attach(self, slot: Slot) -> None:
        await self._router.transport.expose(slot.spec)

    async def detach(self, slot: Slot) -> None:
        await self._router.transport.withdraw(slot.name)

    async def switch(self, old: Slot, new: Slot) -> None:
        """A reload re-announces the module: its version, methods or subscriptions may differ.

        A transport ignores a second ``expose`` of one name, so the old one is
        withdrawn first; callers on other nodes retry through the short gap.
        """
        await self.detach(old)
        await self.attach(new)


def _unserved(
    name: str, users: list[tuple[str, Dependency]], exc: CallTimeoutError
) -> DependencyError | LifecycleError:
    served: dict[str, str] = (exc.details or {}).get("versions") or {}
    if not served:
        return LifecycleError(
            f"required module {name!r} is not served by any node: {exc}",
            details={"requires": name},
        )
    blocking = [(u, d) for u, d in users if not any(_satisfies(d, v) for v in served.values())]
    user, dep = (blocking or users)[0]
    listed = ", ".join(f"{v} on {n}" for n, v in sorted(served.items()))
    return DependencyError(
        f"module {user!r} requires {dep}, but the cluster serves {name!r} only as {listed}",
        details={"module": user, "requires": str(dep), "found": served},
    )


def _satisfies(dep: Dependency, version: str) -> bool:
    """Whether a version announced by another node is in ``dep``'s range."""
    if not dep.specifier:
        return True
    try:
        return dep.specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False
