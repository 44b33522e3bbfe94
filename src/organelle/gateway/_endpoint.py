"""The ASGI app of one route: authenticate, limit, bind, call through the kernel, encode.

Plain ASGI rather than Starlette's ``Request``/``Response``: one request is a
handful of dict reads and two ``send`` calls, which keeps the gateway close to
a bare Starlette endpoint although it authenticates, validates and makes an
RPC call. Every failure becomes a JSON error (``_errors``); nothing escapes
as a bare 500.

With middleware (the kernel's, the gateway's or the route's), the request
runs through the kernel's one pipeline as an ``"http"`` invocation in a
context of its own (deadline, principal, the request's ``traceparent``), and
the RPC it makes is that context's child; without any, it goes straight to
the call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import msgspec

from organelle.context import root_context
from organelle.errors import BodyTimeoutError, PayloadTooLargeError, ValidationError
from organelle.gateway._errors import error_response
from organelle.gateway._runtime import HttpCall, trace_meta
from organelle.kernel import Invocation, build_chain, run_invocation

if TYPE_CHECKING:
    from limits import RateLimitItem

    from organelle.auth.base import Principal
    from organelle.gateway._binding import ParamBinder
    from organelle.gateway._route import RateKey, RouteOptions
    from organelle.gateway._runtime import Runtime
    from organelle.kernel import CallNext, Middleware

__all__ = ["ClientGoneError", "Endpoint", "read_body", "send_json"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
_JSON = (b"content-type", b"application/json")
_decode = msgspec.json.decode


class ClientGoneError(Exception):
    """The client disconnected before the request was read: nobody to answer."""


async def send_json(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Send a complete JSON response."""
    raw = [_JSON, (b"content-length", str(len(body)).encode())]
    if headers:
        raw += headers
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def read_body(
    receive: Receive, headers: dict[str, str], limit: int, timeout_s: float
) -> bytes:
    """Read the body, refusing more than ``limit`` bytes before it is all in memory.

    Raises:
        PayloadTooLargeError: declared or streamed size above ``limit``.
        BodyTimeoutError: the body did not arrive within ``timeout_s``.
        ClientGoneError: the client went away.
    """
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ValidationError(
                "bad Content-Length",
                errors=[{"field": "content-length", "message": "not a number"}],
            )
        if int(declared) > limit:
            raise PayloadTooLargeError(
                f"body larger than {limit} bytes", details={"max_bytes": limit}
            )
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGoneError
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLargeError(
                        f"body larger than {limit} bytes", details={"max_bytes": limit}
                    )
                if chunk:
                    chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        raise BodyTimeoutError(f"body not received within {timeout_s:g}s") from None
    return b"".join(chunks)


def decode_json(body: bytes) -> Any:
    """Parse a JSON body (empty means no params)."""
    if not body:
        return None
    try:
        return _decode(body)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise ValidationError(
            "malformed JSON body", errors=[{"field": "body", "message": str(exc)}]
        ) from None


class Endpoint:
    """One route (or exposed RPC method) as an ASGI app."""

    def __init__(
        self,
        rt: Runtime,
        *,
        target: str,
        binder: ParamBinder,
        spec: RouteOptions | None,
        status: int,
        timeout_s: float,
        rate: RateLimitItem | None,
        rate_key: RateKey,
        cache_ttl_s: float | None,
        middleware: tuple[Middleware, ...] = (),
    ) -> None:
        self.rt = rt
        self.target = target
        self.binder = binder
        self.spec = spec
        self.status = status
        self.timeout_s = timeout_s
        self.rate = rate
        self.rate_key = rate_key
        self.cache_ttl_s = cache_ttl_s if rt.cache is not None else None
        self.layers = (*rt.middleware, *middleware)
        self.module = target.partition(".")[0]
        self.limited = rate is not None and rt.limiter is not None
        self._outer: tuple[Middleware, ...] | None = None  # the kernel's, when last composed
        self._chain: CallNext | None = None

    @property
    def chain(self) -> CallNext | None:
        """The route's onion: the kernel's middleware, then the gateway's, then the route's.

        Composed again only when the kernel's middleware changed (``kernel.use``
        makes a new tuple); ``None`` when there is none at all (the fast path).
        """
        outer = self.rt.kernel.middleware
        if outer is not self._outer:
            self._outer = outer
            self._chain = build_chain((*outer, *self.layers))
        return self._chain

    def _call(self, inv: Invocation) -> Awaitable[Any]:
        """The innermost step of the onion: the RPC, as the request's principal."""
        request: HttpCall = inv.request
        return self.rt.invoke(inv.target, inv.params or {}, request.principal, self.timeout_s)

    def _rate_id(self, principal: Principal | None, scope: Scope, headers: dict[str, str]) -> str:
        if self.rate_key == "global":
            return "*"
        if self.rate_key == "principal" and principal is not None:
            return "p:" + principal.id
        return "c:" + self.rt.client_of(scope, headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rt = self.rt
        try:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            bearer = rt.bearer
            if bearer is not None:  # JWT alone: no Credentials object, no await
                auth = headers.get("authorization")
                principal = None if auth is None else bearer.principal(auth)
            else:
                principal = None if rt.factory is None else await rt.authenticate(scope, headers)
            if self.limited:
                await rt.limiter.hit(  # type: ignore[union-attr] # limited: both are set
                    self.rate,  # type: ignore[arg-type]
                    self.target,
                    self._rate_id(principal, scope, headers),
                )
            key = None
            if self.cache_ttl_s is not None and rt.cache is not None:
                pid = None if principal is None else principal.id
                key = rt.cache.key(self.target, pid, scope["path"], scope["query_string"])
                hit = await rt.cache.get(key)
                if hit is not None:
                    await send_json(send, self.status, hit, [(b"x-cache", b"hit")])
                    return
            body = None
            if self.binder.has_body:
                cfg = rt.config
                raw = await read_body(receive, headers, cfg.max_body_bytes, cfg.body_timeout_s)
                body = decode_json(raw)
            params = self.binder.bind(
                scope.get("path_params", {}), scope["query_string"], headers, body
            )
            chain = self.chain
            if chain is None:
                result = await rt.invoke(
                    self.target, params, principal, self.timeout_s, trace_meta(headers)
                )
            else:
                result = await self._through(chain, scope, headers, principal, params)
            payload = rt.encode(result)
            if key is not None and self.cache_ttl_s is not None and rt.cache is not None:
                await rt.cache.put(key, payload, self.cache_ttl_s)
                await send_json(send, self.status, payload, [(b"x-cache", b"miss")])
                return
        except ClientGoneError:
            return
        except Exception as exc:
            status, extra, body_bytes = error_response(exc)
            await send_json(send, status, body_bytes, extra)
            return
        await send_json(send, self.status, payload)

    def _through(
        self,
        chain: CallNext,
        scope: Scope,
        headers: dict[str, str],
        principal: Principal | None,
        params: dict[str, Any],
    ) -> Awaitable[Any]:
        """Run the request through the middleware onion as an ``"http"`` invocation."""
        request = HttpCall(
            scope["method"],
            scope["path"],
            principal,
            headers,
            self.rt.client_of(scope, headers),
            self.spec,
        )
        ctx = root_context(
            time.monotonic() + self.timeout_s, meta=trace_meta(headers), principal=principal
        )
        inv = Invocation(
            "http", self.target, self.module, params, None, ctx, self._call, request=request
        )
        return run_invocation(chain, inv)
