"""HTTP routes as a kernel binding kind: they follow modules as they come and go.

The gateway adds an ``HttpRoutes`` binder when it starts
(``Kernel.add_binder``): every active module is attached then, a module added
later when it becomes active; a removed or stopping module is detached, and a
reload swaps the old class's routes for the new one's. A clash (two modules on
one method and path) fails the attach, so the change that brought it fails
and the table stays as it was.

The server keeps one ASGI app for its whole life, a ``LiveApp``; it rebuilds
its Starlette app (routes, OpenAPI, AsyncAPI, docs) on the first request after the table
changed — a change costs a counter, a burst of changes one rebuild, and a
request costs one comparison.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from organelle.errors import DefinitionError
from organelle.gateway._table import RouteEntry, entries_of, remote_classes, table
from organelle.module import Module, describe

if TYPE_CHECKING:
    from organelle.gateway.config import GatewayConfig
    from organelle.kernel import Slot

__all__ = ["HttpRoutes", "LiveApp"]

log = logging.getLogger("organelle.gateway")

ASGIApp = Callable[[Any, Any, Any], Any]


class LiveApp:
    """One ASGI app over an inner app that is rebuilt after each route change."""

    def __init__(self, build: Callable[[], ASGIApp]) -> None:
        self._build = build
        self._app: ASGIApp | None = None
        self._version = 0
        self._built = -1

    def changed(self) -> None:
        """The table changed: the next request rebuilds the inner app."""
        self._version += 1

    @property
    def current(self) -> ASGIApp:
        """The inner app for the table as it is now (built here when stale)."""
        app = self._app
        if app is None or self._built != self._version:
            version = self._version
            app = self._app = self._build()
            self._built = version
        return app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.current(scope, receive, send)


class HttpRoutes:
    """The binder of HTTP routes: one group of entries per module served here.

    Modules named in ``route_modules`` (served by other nodes) have a group
    from the start; a module of the same name running here shadows it while it
    is bound.
    """

    kind = "http"
    stage = "serve"

    def __init__(self, config: GatewayConfig, own: str, changed: Callable[[], None]) -> None:
        self._config = config
        self._own = own
        self._changed = changed
        self._remote_classes = remote_classes(config, own)
        self._remote = {describe(c).name: entries_of(c, config) for c in self._remote_classes}
        table(self._remote.values())  # the remote groups must agree among themselves
        self._local: dict[str, list[RouteEntry]] = {}
        self._classes: dict[str, type[Module]] = {}  # every module bound here, routes or not
        # The groups in effect, and (method, path shape) -> module over them: a
        # clash is found in the size of one module, however many are bound.
        self._effective: dict[str, list[RouteEntry]] = {}
        self._owners: dict[tuple[str, str], str] = {}
        for name, group in self._remote.items():
            self._put(name, group)

    def entries(self) -> list[RouteEntry]:
        """Every operation served now, static paths before templated ones."""
        return table(self._effective.values())

    def modules(self) -> list[type[Module]]:
        """The classes of the modules bound here, then those of ``route_modules`` not bound here."""
        remote = [c for c in self._remote_classes if describe(c).name not in self._classes]
        return [*self._classes.values(), *remote]

    async def attach(self, slot: Slot) -> None:
        """Route the module's operations; raises ``DefinitionError`` on a clash."""
        name = slot.name
        if name == self._own:
            self._classes[name] = type(slot.instance)
            self._changed()
            return
        mine = entries_of(type(slot.instance), self._config)
        table([mine])  # clashes within the module itself
        before = self._take(name)
        clash = next((e for e in mine if e.key in self._owners), None)
        if clash is not None:
            self._put(name, before)
            raise DefinitionError(
                f"gateway: {clash.method} {clash.path} of {clash.target} is already served "
                f"by module {self._owners[clash.key]!r}"
            )
        self._local[name] = mine
        self._classes[name] = type(slot.instance)
        self._put(name, mine)
        self._changed()

    async def detach(self, slot: Slot) -> None:
        """Unroute the module's operations (its ``route_modules`` group, if any, comes back)."""
        name = slot.name
        self._classes.pop(name, None)
        if self._local.pop(name, None) is None:
            return
        self._take(name)
        remote = self._remote.get(name, [])
        clash = next((e for e in remote if e.key in self._owners), None)
        if clash is not None:
            log.warning(
                "gateway: %s %s of remote module %s is served by module %r here; not routed",
                clash.method,
                clash.path,
                name,
                self._owners[clash.key],
            )
        else:
            self._put(name, remote)
        self._changed()

    def _put(self, name: str, group: list[RouteEntry]) -> None:
        if group:
            self._effective[name] = group
            for e in group:
                self._owners[e.key] = name

    def _take(self, name: str) -> list[RouteEntry]:
        group = self._effective.pop(name, [])
        for e in group:
            self._owners.pop(e.key, None)
        return group
