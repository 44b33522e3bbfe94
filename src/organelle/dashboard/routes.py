"""The dashboard's routes, mounted by the gateway under ``[modules.gateway.dashboard] path``.

``dashboard_routes`` is the whole seam: the gateway calls it once when it
builds its app, and everything the dashboard reads comes from the kernel the
gateway runs in. Views are built on request, never cached: the page polls
every ``refresh_s`` and each answer is the state of that moment.
"""

from __future__ import annotations

import html
import logging
import weakref
from importlib import resources
from typing import TYPE_CHECKING, Any

from starlette.routing import BaseRoute, Route

from organelle.dashboard._actions import ACTIONS, ActionEndpoint
from organelle.dashboard._flags import flags_summary
from organelle.dashboard._history import History
from organelle.dashboard._http import ApiEndpoint, Query, StaticFile, View, int_param
from organelle.dashboard._jobs import MAX_PAGE, dead_letters, jobs_summary
from organelle.dashboard._kernel import KernelViews
from organelle.dashboard._nodes import list_nodes
from organelle.dashboard._sagas import sagas_summary
from organelle.dashboard._scaling import scaling_summary
from organelle.dashboard._streams import streams_summary
from organelle.dashboard._topology import topology
from organelle.health import Health

if TYPE_CHECKING:
    from organelle.auth.rbac import Rbac
    from organelle.gateway._runtime import Runtime
    from organelle.gateway.config import DashboardConfig
    from organelle.kernel import Kernel

__all__ = ["ACTIONS", "API_VIEWS", "dashboard_routes"]

log = logging.getLogger("organelle.dashboard")

API_VIEWS = (
    "overview",
    "health",
    "modules",
    "rpc",
    "events",
    "jobs",
    "jobs/dead",
    "streams",
    "nodes",
    "config",
    "sagas",
    "flags",
    "history",
    "topology",
    "scaling",
)
"""Every JSON view, served as ``GET <path>/api/<view>``."""

# The page loads its script and style from its own origin and runs nothing inline.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_PAGE_HEADERS = {"content-security-policy": CSP, "referrer-policy": "no-referrer"}


def _asset(name: str) -> str:
    return resources.files("organelle.dashboard").joinpath(f"static/{name}").read_text("utf-8")


def _page(config: DashboardConfig, events_ws: str) -> bytes:
    """The page with its base path, refresh period and event socket filled in (escaped)."""
    text = _asset("index.html")
    text = text.replace("__BASE__", html.escape(config.path, quote=True))
    text = text.replace("__REFRESH_MS__", str(round(config.refresh_s * 1000)))
    return text.replace("__EVENTS_WS__", html.escape(events_ws, quote=True)).encode()


def _events_ws(rt: Runtime) -> str:
    """The gateway's event WebSocket path when it streams some topic, else empty (no tail)."""
    stream = rt.config.stream
    return stream.websocket_path or "" if stream.enabled and stream.topics else ""


class _Api:
    """The JSON views of one kernel, each ``async (query) -> payload``."""

    def __init__(self, kernel: Kernel, config: DashboardConfig) -> None:
        self.kernel = kernel
        self.base = config.path
        self.views = KernelViews(kernel, refresh_s=config.refresh_s)
        self.health = Health(kernel)
        self.history = History(kernel, period_s=config.refresh_s, size=config.history)

    def table(self) -> dict[str, View]:
        """``<path>/api/<name>`` → view; the empty name is the index."""
        return {
            "overview": self.overview,
            "health": self.health_report,
            "modules": self.modules,
            "rpc": self.rpc,
            "events": self.events,
            "jobs": self.jobs,
            "jobs/dead": self.dead,
            "streams": self.streams,
            "nodes": self.nodes,
            "config": self.config,
            "sagas": self.sagas,
            "flags": self.flags,
            "history": self.history_view,
            "topology": self.topology,
            "scaling": self.scaling,
            "": self.index,
        }

    async def close(self) -> None:
        """The gateway stops: stop sampling and stop counting calls for these views."""
        await self.history.close()
        self.kernel.unlisten(self.views)

    async def index(self, _: Query) -> Any:
        return {
            "views": {name: f"{self.base}/api/{name}" for name in API_VIEWS},
            "actions": {name: f"{self.base}/api/actions/{name}" for name in ACTIONS},
        }

    async def overview(self, _: Query) -> Any:
        return self.views.overview()

    async def health_report(self, _: Query) -> Any:
        return (await self.health.report()).to_json()

    async def modules(self, _: Query) -> Any:
        return self.views.modules()

    async def rpc(self, _: Query) -> Any:
        return self.views.rpc()

    async def events(self, _: Query) -> Any:
        return self.views.events()

    async def jobs(self, _: Query) -> Any:
        return await jobs_summary(self.kernel)

    async def dead(self, query: Query) -> Any:
        limit = int_param(query, "limit", default=50, low=1, high=MAX_PAGE)
        offset = int_param(query, "offset", default=0, low=0, high=10**9)
        return await dead_letters(self.kernel, limit=limit, offset=offset)

    async def streams(self, _: Query) -> Any:
        return await streams_summary(self.kernel)

    async def nodes(self, _: Query) -> Any:
        return await list_nodes(self.kernel)

    async def config(self, _: Query) -> Any:
        return self.views.config()

    async def sagas(self, _: Query) -> Any:
        return await sagas_summary(self.kernel)

    async def flags(self, _: Query) -> Any:
        return await flags_summary(self.kernel)

    async def history_view(self, _: Query) -> Any:
        return self.history.view()

    async def topology(self, _: Query) -> Any:
        return await topology(self.kernel)

    async def scaling(self, _: Query) -> Any:
        return await scaling_summary(self.kernel)


# One set of views per gateway runtime: the app is rebuilt when routes change,
# and the counters, the sampler and its ring must outlive those rebuilds.
_APIS: weakref.WeakKeyDictionary[Runtime, _Api] = weakref.WeakKeyDictionary()


def _api(rt: Runtime, config: DashboardConfig) -> _Api:
    api = _APIS.get(rt)
    if api is None:
        api = _APIS[rt] = _Api(rt.kernel, config)
        api.history.start()
        rt.on_close.append(api.close)
    return api


def dashboard_routes(rt: Runtime, config: DashboardConfig, rbac: Rbac | None) -> list[BaseRoute]:
    """The page, its assets, the JSON API and the actions, for the gateway's app.

    Also switches the kernel's RPC call stats on (one increment per call) and
    starts the charts' sampler (stopped with the gateway).
    """
    base = config.path
    roles = frozenset(config.roles)
    acting = frozenset(config.action_roles)
    if not roles:
        log.warning(
            "the dashboard at %s is open to every caller: set modules.gateway.dashboard.roles",
            base,
        )
    if not acting:
        log.warning(
            "dashboard actions at %s need no role beyond reading it: "
            "set modules.gateway.dashboard.action_roles",
            base,
        )
    api = _api(rt, config)
    routes: list[BaseRoute] = [
        Route(
            f"{base}/api/{name}".rstrip("/"),
            ApiEndpoint(rt, roles, rbac, view),
            methods=["GET"],
            include_in_schema=False,
        )
        for name, view in api.table().items()
    ]
    routes += [
        Route(
            f"{base}/api/actions/{name}",
            ActionEndpoint(rt, acting or roles, rbac, name, action),
            methods=["POST"],
            include_in_schema=False,
        )
        for name, action in ACTIONS.items()
    ]
    page = StaticFile(_page(config, _events_ws(rt)), "text/html; charset=utf-8", _PAGE_HEADERS)
    script = StaticFile(_asset("dashboard.js").encode(), "text/javascript; charset=utf-8")
    charts = StaticFile(_asset("charts.js").encode(), "text/javascript; charset=utf-8")
    style = StaticFile(_asset("dashboard.css").encode(), "text/css; charset=utf-8")
    for path, app in (
        (base, page),
        (f"{base}/", page),
        (f"{base}/dashboard.js", script),
        (f"{base}/charts.js", charts),
        (f"{base}/dashboard.css", style),
    ):
        routes.append(Route(path, app, methods=["GET"], include_in_schema=False))
    return routes
