"""The ``Gateway`` module: the app's HTTP edge, configured in ``[modules.gateway]``.

Order: the gateway sets ``starts_last``, so the kernel starts it after every
other module and stops it first (no request arrives at a module that is
stopping). Its HTTP routes are a kernel binding kind (``gateway/_live.py``):
modules added, removed or reloaded at run time gain, lose or change their
routes like every other binding. Its ``on_load`` installs the RBAC
authorizer from config on the kernel: ``on_load`` runs for every module
before any starts, so every RPC guard is built with it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar

from organelle.auth.base import RoleAuthorizer
from organelle.auth.factory import PrincipalFactory, principal_factory
from organelle.config import import_object
from organelle.context import context
from organelle.errors import ConfigError
from organelle.gateway.config import GatewayConfig
from organelle.kernel import kernel_of
from organelle.module import Module, on

__all__ = ["Gateway"]

log = logging.getLogger("organelle.gateway")


class Gateway(Module):
    """Serves routes, exposed RPC methods, aggregates, events, OpenAPI, AsyncAPI and docs over HTTP.

    Args:
        factory: a principal factory used instead of ``[auth]`` config.
        middleware: HTTP middleware — kernel ``Middleware`` (``async def mw(inv, call_next)``)
            seeing each request as an ``"http"`` invocation — outermost first, inside
            the kernel's own middleware.
        asgi_middleware: Starlette ``Middleware`` entries around the whole app.
        serve: bind a socket; ``False`` builds ``self.app`` only (for in-process clients).

    Example::

        kernel = Kernel([Inventory, Gateway(middleware=[audit])],
                        {"modules": {"gateway": {"port": 8080, "expose": ["inventory.*"]}}})
    """

    name = "gateway"
    version = "0.1.0"
    starts_last: ClassVar[bool] = True
    Config = GatewayConfig
    config: GatewayConfig

    def __init__(
        self,
        *,
        factory: PrincipalFactory | None = None,
        middleware: Sequence[Any] = (),
        asgi_middleware: Sequence[Any] = (),
        serve: bool = True,
    ) -> None:
        self._factory = factory
        self._middleware = list(middleware)
        self._asgi = list(asgi_middleware)
        self._serve = serve
        self._server: Any = None
        self._hub: Any = None
        self._routes: Any = None
        self.app: Any = None
        self.runtime: Any = None

    @property
    def port(self) -> int:
        """The port the gateway listens on (0 when not serving)."""
        return 0 if self._server is None else int(self._server.port)

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        return f"http://{self.config.host}:{self.port}"

    async def on_load(self) -> None:
        """Install the RBAC authorizer before any module is routed."""
        rbac = self.config.rbac
        if rbac is None:
            self._rbac = None
            return
        self._rbac = rbac.build()
        kernel = kernel_of(self)
        current = kernel.authorizer
        if type(current) is not RoleAuthorizer or current._grants is not None:
            raise ConfigError(
                "modules.gateway.rbac: the kernel already has a custom authorizer; "
                "configure RBAC in one place"
            )
        kernel.authorizer = self._rbac.authorizer()

    async def on_start(self) -> None:
        """Route every active module (and those that come later), then listen."""
        from organelle.gateway._app import build_app
        from organelle.gateway._cache import ResponseCache
        from organelle.gateway._live import HttpRoutes, LiveApp
        from organelle.gateway._ratelimit import Limiter
        from organelle.gateway._runtime import Runtime
        from organelle.gateway._server import HttpServer
        from organelle.gateway._stream import EventHub

        cfg = self.config
        factory = self._factory or principal_factory(cfg.auth)
        middleware = self._middleware + [
            import_object(ref, where="modules.gateway.middleware") for ref in cfg.middleware
        ]
        shared = cfg.rate_limit.storage == "store"
        store = self.kernel.store_for(self.name)
        kernel = kernel_of(self)
        runtime = self.runtime = Runtime(
            kernel,
            cfg,
            factory=factory,
            middleware=middleware,
            limiter=Limiter(store if shared else None),
            cache=ResponseCache(store, max_body_bytes=cfg.cache.max_body_bytes)
            if cfg.cache.enabled
            else None,
        )
        hub = self._hub = EventHub(cfg.stream.topics, cfg.stream.queue_size)

        def build() -> Any:
            return build_app(
                runtime,
                routes.entries(),
                hub=hub,
                rbac=self._rbac,
                asgi_middleware=self._asgi,
                modules=routes.modules(),
            )

        app = self.app = LiveApp(build)
        routes = self._routes = HttpRoutes(cfg, self.name, app.changed)
        await kernel.add_binder(routes)  # every active module now; later ones as they come
        app.current  # noqa: B018 - build now: a bad table fails the start, not a request
        if self._serve:
            self._server = HttpServer(app, cfg.host, cfg.port, log_level=cfg.log_level)
            await self._server.start()
            log.info("gateway serving %d routes on %s", len(routes.entries()), self.url)

    async def on_stop(self) -> None:
        """End event streams, stop the server (in-flight requests finish first), unroute."""
        if self._hub is not None:
            self._hub.close()
        server, self._server = self._server, None
        if server is not None:
            await server.stop()
        routes, self._routes = self._routes, None
        if routes is not None:
            await kernel_of(self).remove_binder(routes)
        if self.runtime is not None:
            for close in self.runtime.on_close:
                await close()
            self.runtime.on_close.clear()

    async def on_abort(self, error: BaseException) -> None:  # noqa: ARG002 - the hook's signature
        """Release the socket if starting failed after binding it."""
        await self.on_stop()

    async def invalidate(self, route: str = "") -> int:
        """Drop cached responses of ``route`` (``"module.method"``), or all; return how many."""
        cache = None if self.runtime is None else self.runtime.cache
        return 0 if cache is None else int(await cache.invalidate(route))

    @on(">", delivery="broadcast")
    async def relay(self, payload: Any) -> None:
        """Hand every event to the stream hub; it keeps what some client asked for."""
        hub = self._hub
        if hub is not None and hub.clients:
            hub.publish(context().topic or "", payload)
