"""The HTTP gateway: routes on module methods, exposed RPC, auth, limits, cache, OpenAPI.

``route`` (and ``Query`` / ``Header``) need no web stack, so modules can
declare routes without the ``gateway`` extra installed; ``Gateway`` and the
rest import Starlette and uvicorn on first use. See docs/gateway.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from organelle.gateway._route import Header, Query, RouteOptions, route

if TYPE_CHECKING:
    from organelle.errors import PayloadTooLargeError, RateLimitedError
    from organelle.gateway._ratelimit import StoreStorage
    from organelle.gateway._runtime import HttpCall
    from organelle.gateway.config import GatewayConfig
    from organelle.gateway.module import Gateway

__all__ = [
    "Gateway",
    "GatewayConfig",
    "Header",
    "HttpCall",
    "PayloadTooLargeError",
    "Query",
    "RateLimitedError",
    "RouteOptions",
    "StoreStorage",
    "route",
]

_LAZY = {
    "Gateway": "organelle.gateway.module",
    "GatewayConfig": "organelle.gateway.config",
    "HttpCall": "organelle.gateway._runtime",
    "PayloadTooLargeError": "organelle.gateway._errors",
    "RateLimitedError": "organelle.gateway._errors",
    "StoreStorage": "organelle.gateway._ratelimit",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'organelle.gateway' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
