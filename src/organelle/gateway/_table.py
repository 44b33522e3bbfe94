"""The route table: routes declared on modules plus RPC methods exposed by pattern.

Modules running here come and go with the kernel (``gateway/_live.py`` binds
them); modules that run on other nodes are read from their classes
(``route_modules``), since describing a class needs no instance. Either way a
route names an RPC target, and the call goes through the kernel, which routes
it locally or over the transport.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from organelle.config import import_object
from organelle.errors import DefinitionError
from organelle.gateway._binding import ParamBinder
from organelle.gateway._route import RouteOptions, routes_of
from organelle.module import Module, RpcOptions, describe
from organelle.module._signature import ParamsContract

if TYPE_CHECKING:
    from organelle.gateway.config import GatewayConfig

__all__ = ["RouteEntry", "entries_of", "remote_classes", "table"]


@dataclass(frozen=True, slots=True)
class RouteEntry:
    """One HTTP operation and the RPC it calls."""

    method: str
    path: str
    target: str
    module: str
    spec: RouteOptions | None
    rpc: RpcOptions
    binder: ParamBinder
    fn: Callable[..., Any]

    @property
    def key(self) -> tuple[str, str]:
        """Method and path shape: ``/a/{x}`` and ``/a/{y}`` are one route."""
        return (self.method, _normal(self.path))

    @property
    def returns(self) -> Any:
        """The handler's declared return type (``Any`` when undeclared)."""
        try:
            return typing.get_type_hints(self.fn, include_extras=True).get("return", Any)
        except Exception:  # unresolvable hints: document as anything
            return Any


def remote_classes(config: GatewayConfig, own: str) -> list[type[Module]]:
    """The classes ``route_modules`` names: modules served by other nodes."""
    found: list[type[Module]] = []
    for ref in config.route_modules:
        cls = import_object(ref, where=f"modules.{own}.route_modules")
        if not (isinstance(cls, type) and issubclass(cls, Module)):
            raise DefinitionError(f"modules.{own}.route_modules: {ref!r} is not a Module class")
        found.append(cls)
    return found


def entries_of(cls: type[Module], config: GatewayConfig) -> list[RouteEntry]:
    """The operations one module class offers: its ``@route``s and its exposed methods.

    Raises:
        DefinitionError: a route whose roles its ``@rpc`` does not enforce.
    """
    entries: list[RouteEntry] = []
    prefix = "/" + config.rpc_prefix.strip("/") if config.rpc_prefix.strip("/") else ""
    spec = describe(cls)
    for method_name, meta in spec.rpcs.items():
        target = f"{spec.name}.{method_name}"
        fn = getattr(cls, meta.attr)
        for route in routes_of(fn):
            _check_guard(target, route, meta.spec)
            entries.append(
                _entry(route.method, route.path, target, route, meta.spec, meta.contract, fn)
            )
        if _exposed(target, config.expose):
            path = f"{prefix}/{spec.name}/{method_name}"
            entries.append(_entry("POST", path, target, None, meta.spec, meta.contract, fn))
    return entries


def table(groups: Iterable[list[RouteEntry]]) -> list[RouteEntry]:
    """One table from per-module entries, static paths before templated ones.

    Raises:
        DefinitionError: two operations on one method and path.
    """
    entries = [e for group in groups for e in group]
    seen: dict[tuple[str, str], str] = {}
    for e in entries:
        key = e.key
        if key in seen:
            raise DefinitionError(
                f"gateway: {e.method} {e.path} is served by both {seen[key]} and {e.target}"
            )
        seen[key] = e.target
    return sorted(entries, key=lambda e: e.path.count("{"))


def _entry(  # noqa: PLR0917 - a private constructor helper
    method: str,
    path: str,
    target: str,
    route: RouteOptions | None,
    rpc: RpcOptions,
    contract: ParamsContract,
    fn: Callable[..., Any],
) -> RouteEntry:
    params = route.path_params if route is not None else ()
    binder = ParamBinder(target, contract, method=method, path_params=params)
    return RouteEntry(method, path, target, target.partition(".")[0], route, rpc, binder, fn)


def _exposed(target: str, patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(target, p) for p in patterns)


def _normal(path: str) -> str:
    """``/a/{x}`` and ``/a/{y}`` are the same route."""
    return "/".join("{}" if seg.startswith("{") else seg for seg in path.split("/"))


def _check_guard(target: str, route: RouteOptions, rpc: RpcOptions) -> None:
    """A route's roles live on its RPC; ``@rpc`` applied over ``@route`` must not drop them."""
    for what in ("roles", "permissions"):
        mine = set(getattr(route, what))
        if mine and mine != set(getattr(rpc, what)):
            raise DefinitionError(
                f"{target}: the route's {what} {sorted(mine)} are not enforced by its @rpc; "
                "put @route above @rpc or declare them once"
            )
