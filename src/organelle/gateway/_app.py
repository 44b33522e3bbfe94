"""The Starlette app: routes, aggregates, event streams, OpenAPI, AsyncAPI, Swagger UI, dashboard.

Starlette provides routing (path templates, 405 with ``Allow``), CORS and
the middleware stack; each route's endpoint is our plain ASGI callable.
Unknown paths and methods answer with the same JSON error shape as the rest.

Without ASGI middleware, a request whose first full match is a route of
ours goes straight to its endpoint (``RouteFirst``): the endpoint answers
every error itself, so Starlette's error and exception layers (two
coroutines and two ``send`` wrappers a request) have nothing to do there.
Everything else — 404, 405, the dashboard, docs, WebSocket — takes the full
Starlette app, which matches the same routes in the same order.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route, WebSocketRoute

from organelle.gateway._aggregate import AggregateEndpoint
from organelle.gateway._endpoint import Endpoint
from organelle.gateway._openapi import build_openapi
from organelle.gateway._stream import EventHub, StreamEndpoint
from organelle.gateway._swagger import swagger_routes
from organelle.gateway._websocket import WebSocketEndpoint

if TYPE_CHECKING:
    from collections.abc import Sequence

    from organelle.auth.rbac import Rbac
    from organelle.gateway._runtime import Runtime
    from organelle.gateway._table import RouteEntry
    from organelle.module import Module

__all__ = ["RouteFirst", "build_app"]

_CODES = {404: "organelle.not_found", 405: "organelle.method_not_allowed"}


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for HTTPException only
    code = _CODES.get(exc.status_code, "organelle.http")
    body = msgspec.json.encode({"error": {"code": code, "message": exc.detail}})
    return Response(body, exc.status_code, headers=exc.headers, media_type="application/json")


def _endpoint(rt: Runtime, entry: RouteEntry) -> Endpoint:
    spec = entry.spec
    limit = (
        spec.rate_limit if spec is not None and spec.rate_limit else rt.config.rate_limit.default
    )
    rate = rt.limiter.item(limit) if limit and rt.limiter is not None else None
    rate_key = spec.rate_key if spec is not None and spec.rate_limit else rt.config.rate_limit.key
    cache_ttl = spec.cache_ttl_s if spec is not None and entry.method == "GET" else None
    timeout = spec.timeout_s if spec is not None and spec.timeout_s else rt.config.timeout_s
    return Endpoint(
        rt,
        target=entry.target,
        binder=entry.binder,
        spec=spec,
        status=spec.status_code if spec is not None else 200,
        timeout_s=timeout,
        rate=rate,
        rate_key=rate_key,
        cache_ttl_s=cache_ttl,
        middleware=tuple(spec.middleware) if spec is not None else (),
    )


def build_app(
    rt: Runtime,
    entries: list[RouteEntry],
    *,
    hub: EventHub | None,
    rbac: Rbac | None,
    asgi_middleware: Sequence[Middleware] = (),
    modules: Sequence[type[Module]] = (),
) -> RouteFirst:
    """The ASGI app serving ``entries`` plus the gateway's own endpoints.

    ``modules`` are the classes ``/asyncapi.json`` describes: those running
    here and those of ``route_modules``.
    """
    cfg = rt.config
    routes: list[BaseRoute] = [
        Route(e.path, _endpoint(rt, e), methods=[e.method], name=f"{e.target}.{e.method.lower()}")
        for e in entries
    ]
    routes += [
        Route(agg.path, AggregateEndpoint(rt, agg, rbac), methods=["GET"]) for agg in cfg.aggregates
    ]
    if cfg.dashboard.enabled:  # first, so no catch-all route shadows it
        from organelle.dashboard import dashboard_routes

        routes[:0] = dashboard_routes(rt, cfg.dashboard, rbac)
    stream_path = None
    if hub is not None and cfg.stream.enabled:
        stream_path = cfg.stream.path
        routes.append(
            Route(stream_path, StreamEndpoint(rt, hub, cfg.stream, rbac), methods=["GET"])
        )
        if cfg.stream.websocket_path:
            routes.append(
                WebSocketRoute(
                    cfg.stream.websocket_path, WebSocketEndpoint(rt, hub, cfg.stream, rbac)
                )
            )
    if cfg.docs:
        spec = msgspec.json.encode(build_openapi(entries, cfg, stream_path=stream_path))

        async def openapi(_: Request) -> Response:
            return Response(spec, media_type="application/json")

        routes += [
            Route("/openapi.json", openapi, methods=["GET"], include_in_schema=False),
            Route(
                "/asyncapi.json",
                _AsyncApi(rt, modules).respond,
                methods=["GET"],
                include_in_schema=False,
            ),
            *swagger_routes(cfg.title),
        ]
    middleware = list(asgi_middleware)
    if cfg.cors.allow_origins:
        c = cfg.cors
        middleware.insert(
            0,
            Middleware(
                CORSMiddleware,
                allow_origins=c.allow_origins,
                allow_methods=c.allow_methods,
                allow_headers=c.allow_headers,
                allow_credentials=c.allow_credentials,
                max_age=c.max_age_s,
            ),
        )
    handlers: dict[Any, Any] = {HTTPException: _http_error}
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=handlers)
    return RouteFirst(app, direct=not middleware)


class RouteFirst:
    """The Starlette app, with a shortcut from a matching route of ours to its endpoint.

    ``direct=False`` (ASGI middleware must see every request) turns the shortcut off.
    """

    __slots__ = ("app", "direct", "routes")

    def __init__(self, app: Starlette, *, direct: bool) -> None:
        self.app = app
        self.direct = direct
        self.routes = app.router.routes

    def __call__(self, scope: Any, receive: Any, send: Any) -> Awaitable[None]:
        if self.direct and scope["type"] == "http":
            for route in self.routes:  # as Starlette's router: the first full match wins
                match, child = route.matches(scope)
                if match is not Match.FULL:
                    continue  # no match, or another method on this path (405 if nothing else)
                if isinstance(route, Route):
                    endpoint = route.endpoint
                    if type(endpoint) is Endpoint and route.app is endpoint:
                        scope["app"] = self.app
                        scope["route"] = route
                        scope.update(child)
                        return endpoint(scope, receive, send)
                break  # another kind of route: Starlette serves it
        return self.app(scope, receive, send)


class _AsyncApi:
    """``GET /asyncapi.json``: built on its first request (most apps never ask), then kept."""

    def __init__(self, rt: Runtime, modules: Sequence[type[Module]]) -> None:
        self._rt = rt
        self._modules = list(modules)
        self._body: bytes | None = None

    async def respond(self, _: Request) -> Response:
        """The document, encoded once."""
        if self._body is None:
            from organelle.contracts import asyncapi

            cfg = self._rt.config
            doc = asyncapi(
                self._modules,
                title=cfg.title,
                version=cfg.version,
                settings=self._rt.kernel.settings,
            )
            self._body = msgspec.json.encode(doc)
        return Response(self._body, media_type="application/json")
