"""``@route.get(...)``: HTTP routes declared on module methods, without importing a web stack.

A route is also an RPC method (the decorator sets ``__organelle_rpc__``), so
serving it over HTTP is a call through the kernel: the same validation, the
same ``roles`` / ``permissions`` guard, local or on another node. Only the
gateway reads the HTTP half; a module never needs Starlette to declare one.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from organelle.errors import DefinitionError
from organelle.module import RpcOptions, rpc

__all__ = ["Header", "Query", "RateKey", "RouteOptions", "route"]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
RateKey = Literal["principal", "client", "global"]
_PARAM = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?}")


@dataclass(frozen=True, slots=True)
class Query:
    """``Annotated[int, Query()]``: take a parameter from the query string (body methods)."""

    name: str | None = None


@dataclass(frozen=True, slots=True)
class Header:
    """``Annotated[str, Header("x-tenant")]``: take a parameter from a request header."""

    name: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteOptions:
    """Options of one HTTP route of a module method (what ``@route.get(...)`` says).

    Attributes:
        method: ``GET``, ``POST``, ``PUT``, ``PATCH`` or ``DELETE``.
        path: a path template; ``{name}`` segments bind parameters.
        roles: any one of these roles is needed (also on the RPC, on every path).
        permissions: RBAC permissions needed (also on the RPC).
        status_code: the success status.
        timeout_s: the longest the call may take over HTTP (504 after).
        cache_ttl_s: cache GET responses this long (per principal and query).
        rate_limit: e.g. ``"10/second"`` (``limits`` syntax); 429 beyond.
        rate_key: count per ``principal``, per ``client`` address, or ``global``.
        middleware: HTTP middleware (kernel ``Middleware``) for this route only, inside the
            gateway's and the kernel's.
        summary: one line for the OpenAPI docs (default: the docstring's first line).
        tags: OpenAPI tags (default: the module name).
    """

    method: str
    path: str
    roles: tuple[str, ...] = ()
    permissions: tuple[str, ...] = ()
    status_code: int = 200
    timeout_s: float | None = None
    cache_ttl_s: float | None = None
    rate_limit: str | None = None
    rate_key: RateKey = "principal"
    middleware: tuple[Any, ...] = ()
    summary: str | None = None
    tags: tuple[str, ...] = ()

    @property
    def path_params(self) -> tuple[str, ...]:
        """Names bound from the path template."""
        return tuple(_PARAM.findall(self.path))


class _RouteDecorators:
    """The ``route`` object: ``route.get``, ``.post``, ``.put``, ``.patch`` and ``.delete``."""

    def get(self, path: str, **options: Any) -> Callable[[F], F]:
        """Declare a ``GET`` route; parameters not in the path come from the query."""
        return self._make("GET", path, options)

    def delete(self, path: str, **options: Any) -> Callable[[F], F]:
        """Declare a ``DELETE`` route; parameters not in the path come from the query."""
        return self._make("DELETE", path, options)

    def post(self, path: str, **options: Any) -> Callable[[F], F]:
        """Declare a ``POST`` route; parameters not in the path form the JSON body object."""
        return self._make("POST", path, options)

    def put(self, path: str, **options: Any) -> Callable[[F], F]:
        """Declare a ``PUT`` route; parameters not in the path form the JSON body object."""
        return self._make("PUT", path, options)

    def patch(self, path: str, **options: Any) -> Callable[[F], F]:
        """Declare a ``PATCH`` route; parameters not in the path form the JSON body object."""
        return self._make("PATCH", path, options)

    @staticmethod
    def _make(method: str, path: str, options: dict[str, Any]) -> Callable[[F], F]:
        if not isinstance(path, str) or not path.startswith("/"):
            raise DefinitionError(f"@route.{method.lower()}: path {path!r} must start with '/'")
        for key in ("roles", "permissions", "tags", "middleware"):
            value = options.get(key)
            if isinstance(value, str):
                options[key] = (value,)
            elif value is not None:
                options[key] = tuple(value)
        try:
            spec = RouteOptions(method=method, path=path, **options)
        except TypeError as exc:
            raise DefinitionError(f"@route.{method.lower()}({path!r}): {exc}") from None

        def mark(fn: F) -> F:
            existing = getattr(fn, "__organelle_rpc__", None)
            if isinstance(existing, RpcOptions):
                merged = _merge(existing, spec, fn)
                fn.__organelle_rpc__ = merged  # type: ignore[attr-defined]
            else:
                rpc(roles=spec.roles, permissions=spec.permissions)(fn)
            routes: tuple[RouteOptions, ...] = getattr(fn, "__organelle_routes__", ())
            fn.__organelle_routes__ = (*routes, spec)  # type: ignore[attr-defined]
            return fn

        return mark


def _merge(existing: RpcOptions, spec: RouteOptions, fn: Callable[..., Any]) -> RpcOptions:
    """Route and ``@rpc`` guard one method; they must not disagree on who may call."""
    for what in ("roles", "permissions"):
        mine, theirs = getattr(spec, what), getattr(existing, what)
        if mine and theirs and set(mine) != set(theirs):
            raise DefinitionError(
                f"{fn.__qualname__}: @route {what} {list(mine)} differ from @rpc {what} "
                f"{list(theirs)}; declare them once"
            )
    return dataclasses.replace(
        existing,
        roles=existing.roles or spec.roles,
        permissions=existing.permissions or spec.permissions,
    )


route = _RouteDecorators()
"""Declare HTTP routes on module methods: ``@route.get("/items/{sku}", roles=["reader"])``."""


def routes_of(fn: object) -> tuple[RouteOptions, ...]:
    """The routes declared on a handler (empty when none)."""
    found = getattr(fn, "__organelle_routes__", ())
    return found if isinstance(found, tuple) else ()
