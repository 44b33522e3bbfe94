"""What every endpoint shares: authentication, the call path, encoding, the HTTP facts.

HTTP middleware is kernel ``Middleware``: a request runs through the kernel's
one invocation pipeline as an ``Invocation`` of kind ``"http"`` whose
``request`` is an ``HttpCall`` (method, path, headers, client, principal,
route, ``state``), whose ``params`` are the bound params (mutable) and whose
``target`` is the RPC it routes to. It returns the result object, which the
endpoint then encodes::

    async def tenant(inv: Invocation, call_next: CallNext) -> Any:
        if inv.kind == "http":
            inv.params["tenant"] = inv.request.headers.get("x-tenant", "public")
        return await call_next(inv)

The onion of a route is the kernel's middleware (``Kernel(middleware=…)``,
``kernel.use``: it sees every kind), then the gateway's (``Gateway(middleware=
[...])`` or config), then the route's own (``@route.get(..., middleware=[...])``).
For raw ASGI concerns (compression, headers on every response) pass Starlette
``Middleware`` objects as ``asgi_middleware`` instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from organelle.auth.base import Principal
from organelle.auth.factory import Credentials, JwtPrincipals, PrincipalFactory
from organelle.codec import _enc_hook
from organelle.config.policy import BreakerPolicy, CallRetryPolicy, Policy
from organelle.errors import (
    ForbiddenError,
    InternalError,
    NotFoundError,
    NotServedError,
    UnauthenticatedError,
    UnavailableError,
)

if TYPE_CHECKING:
    from organelle.gateway._cache import ResponseCache
    from organelle.gateway._ratelimit import Limiter
    from organelle.gateway._route import RouteOptions
    from organelle.gateway.config import GatewayConfig
    from organelle.kernel import Kernel, Middleware

__all__ = ["CALLER", "HttpCall", "Runtime", "require_roles"]

CALLER = "gateway"  # who the gateway's calls come from, for "[policies]" keys


def require_roles(principal: Principal | None, roles: frozenset[str], rbac: Any, what: str) -> None:
    """Check a gateway-level role list (aggregates, the event stream); RBAC inheritance counts."""
    if not roles:
        return
    if principal is None:
        raise UnauthenticatedError(f"{what} needs an authenticated caller")
    have = principal.roles if rbac is None else rbac.expand(principal.roles)
    if not have & roles:
        raise ForbiddenError(f"{what} needs one of the roles {', '.join(sorted(roles))}")


class HttpCall:
    """The facts of one HTTP request, as middleware sees them in ``inv.request``.

    The invocation carries the rest: ``inv.target`` (the RPC it calls),
    ``inv.params`` (the bound params, mutable: middleware may add or change
    some) and ``inv.context`` (deadline, principal, the request's trace).

    Attributes:
        method: the HTTP method.
        path: the request path.
        principal: who is calling (``None``: anonymous); middleware may replace it,
            the RPC is made as whoever it names when the chain reaches the end.
        headers: request headers, lowercase names.
        client: the client address.
        route: the route's spec (``None`` for exposed RPC methods).
        state: free space for middleware to pass things along.
    """

    __slots__ = ("client", "headers", "method", "path", "principal", "route", "state")

    def __init__(  # noqa: PLR0917 - built once per request, positional on purpose
        self,
        method: str,
        path: str,
        principal: Principal | None,
        headers: Mapping[str, str],
        client: str,
        route: RouteOptions | None,
    ) -> None:
        self.method = method
        self.path = path
        self.principal = principal
        self.headers = headers
        self.client = client
        self.route = route
        self.state: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"HttpCall({self.method} {self.path})"


class Runtime:
    """The gateway's shared services, built once at start."""

    def __init__(
        self,
        kernel: Kernel,
        config: GatewayConfig,
        *,
        factory: PrincipalFactory | None,
        middleware: Sequence[Middleware] = (),
        limiter: Limiter | None = None,
        cache: ResponseCache | None = None,
    ) -> None:
        self.kernel = kernel
        self.config = config
        self.factory = factory
        # JWT alone (the common case) is checked without a Credentials object or an await.
        self.bearer = factory if isinstance(factory, JwtPrincipals) else None
        self.middleware = tuple(middleware)
        self.limiter = limiter
        self.cache = cache
        self.on_close: list[Callable[[], Awaitable[None]]] = []
        """Awaited when the gateway stops (e.g. the dashboard's sampler)."""
        self.api_key_header = config.auth.api_key_header.lower()
        self.trust_forwarded = config.trust_forwarded
        self._encode = msgspec.json.Encoder(enc_hook=_enc_hook).encode
        r = config.resilience
        # The gateway's calls to other nodes run under a kernel call policy of
        # its own ("gateway -> *"), which [policies] in config may override.
        kernel.set_policy(
            f"{CALLER} -> *",
            Policy(
                retry=CallRetryPolicy(
                    attempts=r.retries + 1, backoff_s=r.backoff_s, max_backoff_s=r.max_backoff_s
                ),
                breaker=BreakerPolicy(
                    scope="module",
                    failures=r.breaker_failures,
                    reset_s=r.breaker_reset_s,
                    failure_ratio=1.0,
                    per_node=False,  # one breaker per module, as documented in gateway.md
                ),
            ),
        )

    def client_of(self, scope: Mapping[str, Any], headers: Mapping[str, str]) -> str:
        """The client address (from ``X-Forwarded-For`` only when trusted)."""
        if self.trust_forwarded:
            forwarded = headers.get("x-forwarded-for")
            if forwarded:
                return forwarded.split(",", 1)[0].strip()
        client = scope.get("client")
        return str(client[0]) if client else "unknown"

    async def authenticate(
        self, scope: Mapping[str, Any], headers: Mapping[str, str]
    ) -> Principal | None:
        """The caller's principal; ``UnauthenticatedError`` for bad credentials."""
        factory = self.factory
        if factory is None:
            return None
        return await factory(
            Credentials(
                authorization=headers.get("authorization"),
                api_key=headers.get(self.api_key_header),
                headers=headers,
                client=self.client_of(scope, headers),
            )
        )

    def is_local(self, module: str) -> bool:
        """Whether ``module`` is registered in this process (else the call is remote)."""
        try:
            self.kernel.state(module)
        except NotFoundError:
            return False
        return True

    def invoke(
        self,
        target: str,
        params: dict[str, Any],
        principal: Principal | None,
        timeout_s: float,
        meta: dict[str, Any] | None = None,
    ) -> Awaitable[Any]:
        """Call through the kernel with the principal; remote calls get retries and a breaker.

        ``meta`` carries what the request says about the trace (``traceparent``).
        A local call is the kernel's own awaitable (no coroutine of ours around it).
        """
        if self.is_local(target.partition(".")[0]):
            return self.kernel.call_with(
                target, params, timeout_s=timeout_s, principal=principal, meta=meta
            )
        return self._remote(target, params, principal, timeout_s, meta)

    async def _remote(
        self,
        target: str,
        params: dict[str, Any],
        principal: Principal | None,
        timeout_s: float,
        meta: dict[str, Any] | None,
    ) -> Any:
        try:
            return await self.kernel.call_with(
                target, params, timeout_s=timeout_s, principal=principal, meta=meta, caller=CALLER
            )
        except NotServedError as exc:
            # The route table names this module, so it exists: nobody runs it right
            # now. That is 503 (retried, counted by the breaker), not 404.
            raise UnavailableError(exc.message, details=exc.details) from None

    def encode(self, result: Any) -> bytes:
        """JSON bytes of a result; a result that cannot be encoded is our bug (500)."""
        try:
            return self._encode(result)
        except (TypeError, ValueError, NotImplementedError, OverflowError) as exc:
            raise InternalError.wrap(exc) from exc


def trace_meta(headers: Mapping[str, str]) -> dict[str, Any] | None:
    """The W3C ``traceparent`` of a request as call meta, so the call joins the caller's trace.

    Only a well-formed value (55 characters, four dash-separated fields) is
    passed on; tracing itself parses and validates it again.
    """
    value = headers.get("traceparent")
    if value is None or len(value) != _TRACEPARENT_LEN or value.count("-") != _TRACEPARENT_DASHES:
        return None
    return {"traceparent": value}


_TRACEPARENT_LEN = 55
_TRACEPARENT_DASHES = 3
