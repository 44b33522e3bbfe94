"""The management API on the ops server: authenticate, check the role, run the operation.

Requests under ``/manage`` (except the OpenAPI document, which holds no data)
need credentials from ``[ops.auth]`` — a JWT bearer token or an API key,
configured like the gateway's — whose principal has one of ``[ops] roles``
(default ``ops``): none gives 401, a wrong role 403. ``?node=NAME`` runs the
operation on another node of the cluster through its ``ops`` module. Errors
answer with the error's stable code (``{"code", "type", "message", "details"}``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

from pydantic import BaseModel, ConfigDict, Field

from organelle.auth.factory import AuthConfig, Credentials, PrincipalFactory, principal_factory
from organelle.errors import (
    CallTimeoutError,
    ConfigError,
    ConflictError,
    ForbiddenError,
    InternalError,
    LifecycleError,
    NotFoundError,
    OrganelleError,
    UnauthenticatedError,
    UnavailableError,
    ValidationError,
)
from organelle.ops._manage_routes import PREFIX, ROUTES, Route, openapi
from organelle.ops.server import Request, Response

if TYPE_CHECKING:
    from organelle.auth.base import Principal
    from organelle.ops.cluster import Cluster
    from organelle.ops.manage import Manage

__all__ = ["ManageApi", "OpsSection"]

log = logging.getLogger("organelle.ops")

_STATUS: tuple[tuple[type[OrganelleError], int], ...] = (
    (ValidationError, 422),
    (UnauthenticatedError, 401),
    (ForbiddenError, 403),
    (NotFoundError, 404),
    (ConflictError, 409),
    (LifecycleError, 409),
    (ConfigError, 400),
    (CallTimeoutError, 504),
    (UnavailableError, 503),
)


class OpsSection(BaseModel):
    """``[ops]``: who may use the management API, and whether the cluster can reach this node."""

    model_config = ConfigDict(extra="forbid")

    manage: bool = True
    """Serve the ``ops`` module on the transport (management from other nodes and the CLI)."""
    roles: list[str] = Field(default_factory=lambda: ["ops"], min_length=1)
    """A caller needs one of these roles."""
    auth: AuthConfig = Field(default_factory=AuthConfig)
    """Credentials the HTTP API takes: ``jwt``, ``api_keys``, ``factory`` (as the gateway's)."""

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> OpsSection:
        """Parse the ``[ops]`` section of an app config.

        Raises:
            ConfigError: an unknown key or a bad value, named.
        """
        from pydantic import ValidationError as PydanticError

        try:
            return cls.model_validate(config.get("ops") or {})
        except PydanticError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"ops.{where}: {first['msg']}") from None


def _status(exc: OrganelleError) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def _answer(status: int, body: Any) -> Response:
    return Response(status, json.dumps(body, default=str).encode())


def error_answer(exc: BaseException) -> Response:
    """The response for an error: its status, code and message (no internals for a bug)."""
    if not isinstance(exc, OrganelleError):
        log.error("management operation failed", exc_info=exc)
        exc = InternalError("internal error")
    body = exc.to_wire()
    if exc.node is not None:
        body["node"] = exc.node
    return _answer(_status(exc), body)


class ManageApi:
    """The ``api`` handler of the ops server for ``/manage/...``.

    Args:
        manage: this node's operations.
        section: the parsed ``[ops]`` section.
        cluster: reaches other nodes (``?node=``); ``None`` on a node alone.
        factory: who is calling (default: built from ``[ops.auth]``).
    """

    def __init__(
        self,
        manage: Manage,
        section: OpsSection,
        *,
        cluster: Cluster | None = None,
        factory: PrincipalFactory | None = None,
    ) -> None:
        self.manage = manage
        self.section = section
        self.cluster = cluster
        self.roles = frozenset(section.roles)
        self.factory = factory if factory is not None else principal_factory(section.auth)
        self._document = json.dumps(openapi(api_key_header=section.auth.api_key_header)).encode()

    async def __call__(self, request: Request) -> Response | None:
        """Answer a request under ``/manage``; ``None`` for any other path."""
        if request.path != PREFIX and not request.path.startswith(PREFIX + "/"):
            return None
        if request.path == f"{PREFIX}/openapi.json" and request.method in ("GET", "HEAD"):
            return Response(200, self._document)
        found = self._match(request.method, request.path[len(PREFIX) :])
        if isinstance(found, Response):
            return found
        route, path_params = found
        try:
            principal = await self._authenticate(request)
            self._authorize(principal)
            params, node = self._params(route, request, path_params)
            result = await self._run(route.op, params, node, principal)
        except Exception as exc:
            return error_answer(exc)
        return _answer(200, result)

    def _match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | Response:
        parts = tuple(path.strip("/").split("/")) if path.strip("/") else ()
        allowed = False
        for route in ROUTES:
            if len(route.parts) != len(parts):
                continue
            values: dict[str, str] = {}
            for want, got in zip(route.parts, parts, strict=True):
                if want.startswith("{"):
                    values[want[1:-1]] = unquote(got)
                elif want != got:
                    break
            else:
                if route.method == method:
                    return route, values
                allowed = True
        if allowed:
            return _answer(
                405, {"code": "organelle.validation", "message": f"{method} not allowed"}
            )
        return _answer(404, {"code": "organelle.not_found", "message": f"no route {path!r}"})

    async def _authenticate(self, request: Request) -> Principal:
        if self.factory is None:
            raise UnauthenticatedError(
                "the management API takes no credentials yet: configure [ops.auth] "
                "(api_keys or jwt)"
            )
        headers = request.headers
        credentials = Credentials(
            authorization=headers.get("authorization"),
            api_key=headers.get(self.section.auth.api_key_header.lower()),
            headers=headers,
        )
        principal = await self.factory(credentials)
        if principal is None:
            raise UnauthenticatedError("the management API needs a bearer token or an API key")
        return principal

    def _authorize(self, principal: Principal) -> None:
        if not principal.roles & self.roles:
            raise ForbiddenError(
                f"the management API needs one of the roles {', '.join(sorted(self.roles))}",
                details={"roles": sorted(self.roles)},
            )

    def _params(
        self, route: Route, request: Request, path_params: dict[str, str]
    ) -> tuple[dict[str, Any], str | None]:
        query = dict(parse_qsl(request.query, keep_blank_values=True))
        node = query.pop("node", None) or None
        body = _body(request.body)
        params: dict[str, Any] = {}
        known = {p.name for p in route.params}
        for name in [*query, *body]:
            if name not in known:
                raise ValidationError(
                    f"unknown parameter {name!r}",
                    errors=[{"field": name, "message": "not a parameter of this operation"}],
                )
        for param in route.params:
            if param.where == "path":
                params[param.name] = path_params[param.name]
            elif param.where == "query" and param.name in query:
                params[param.name] = _from_query(param.name, param.schema, query[param.name])
            elif param.where == "body" and param.name in body:
                params[param.name] = body[param.name]
            elif param.required:
                raise ValidationError(
                    f"missing parameter {param.name!r}",
                    errors=[{"field": param.name, "message": "required"}],
                )
        return params, node

    async def _run(
        self, op: str, params: dict[str, Any], node: str | None, principal: Principal
    ) -> Any:
        if op == "nodes":
            return self.cluster.nodes() if self.cluster is not None else [self.manage.node]
        if node is not None and node != self.manage.node:
            if self.cluster is None:
                raise NotFoundError(f"no node named {node!r}: this node is alone")
            return await self.cluster.call(node, op, principal=principal, **params)
        return await self.manage.run(op, params)


def _body(raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise ValidationError("the body is not JSON") from None
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object")
    return body


def _from_query(name: str, schema: Mapping[str, Any], raw: str) -> Any:
    kind = schema.get("type")
    if kind == "integer":
        if not raw.lstrip("-").isdigit():
            raise ValidationError(
                f"query parameter {name!r} must be an integer",
                errors=[{"field": name, "message": "an integer"}],
            )
        return int(raw)
    if kind == "boolean":
        if raw.lower() not in ("true", "false", "1", "0"):
            raise ValidationError(
                f"query parameter {name!r} must be true or false",
                errors=[{"field": name, "message": "true or false"}],
            )
        return raw.lower() in ("true", "1")
    return raw
