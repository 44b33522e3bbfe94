"""The dashboard's two kinds of endpoint: guarded JSON views and the static page's files.

JSON views go through the gateway's own authentication and role check (the
same ``require_roles`` as the event stream and aggregates) and its error
table, so a missing token is the usual 401, a wrong role the usual 403 and a
bad query parameter the usual 422. The page, its script and its style sheet
hold no data and are served to anyone: a browser cannot put a bearer token
on a page load, so the page asks for one and sends it with each API call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from organelle.codec import codec_for
from organelle.errors import InternalError, ValidationError
from organelle.gateway._endpoint import Receive, Scope, Send, send_json
from organelle.gateway._errors import error_response
from organelle.gateway._runtime import require_roles

if TYPE_CHECKING:
    from organelle.auth.rbac import Rbac
    from organelle.gateway._runtime import Runtime

__all__ = ["ApiEndpoint", "Query", "StaticFile", "View", "int_param"]

Query = Mapping[str, str]
View = Callable[[Query], Awaitable[Any]]

_JSON = codec_for("json")
_API_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
]


def int_param(query: Query, name: str, *, default: int, low: int, high: int) -> int:
    """An integer query parameter within ``[low, high]``; ``ValidationError`` (422) otherwise."""
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        message = f"an integer from {low} to {high}"
        raise ValidationError(
            f"query parameter {name!r} must be {message}",
            errors=[{"field": name, "message": message}],
        )
    return int(raw)


class ApiEndpoint:
    """``GET <path>/api/<view>``: authenticate, check roles, build the view, answer JSON."""

    def __init__(self, rt: Runtime, roles: frozenset[str], rbac: Rbac | None, view: View) -> None:
        self.rt = rt
        self.roles = roles
        self.rbac = rbac
        self.view = view

    async def __call__(self, scope: Scope, _receive: Receive, send: Send) -> None:
        try:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            principal = await self.rt.authenticate(scope, headers)
            require_roles(principal, self.roles, self.rbac, "the dashboard")
            query = dict(parse_qsl(scope["query_string"].decode("latin-1")))
            result = await self.view(query)
            try:
                body = _JSON.encode(result)
            except ValidationError as exc:  # a view we built that does not encode: our bug
                raise InternalError.wrap(exc) from exc
        except Exception as exc:
            status, extra, body = error_response(exc)
            await send_json(send, status, body, [*extra, *_API_HEADERS])
            return
        await send_json(send, 200, body, _API_HEADERS)


class StaticFile:
    """One file shipped in the package, read once, served as is."""

    def __init__(
        self, body: bytes, content_type: str, headers: Mapping[str, str] | None = None
    ) -> None:
        self.body = body
        self.headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-cache"),
            (b"x-content-type-options", b"nosniff"),
            *((k.encode(), v.encode()) for k, v in (headers or {}).items()),
        ]

    async def __call__(self, scope: Scope, _receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        body = b"" if scope.get("method") == "HEAD" else self.body
        await send({"type": "http.response.body", "body": body})
