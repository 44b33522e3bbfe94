"""``[modules.gateway]``: every knob of the HTTP edge, validated before anything starts."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from organelle.auth.factory import AuthConfig, RbacConfig

__all__ = [
    "AggregateConfig",
    "CacheConfig",
    "CorsConfig",
    "DashboardConfig",
    "GatewayConfig",
    "PartConfig",
    "RateLimitConfig",
    "ResilienceConfig",
    "StreamConfig",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CorsConfig(_Strict):
    """Cross-origin access; off unless origins are listed."""

    allow_origins: list[str] = Field(default_factory=list)
    allow_methods: list[str] = Field(
        default_factory=lambda: ["GET", "POST", "PUT", "PATCH", "DELETE"]
    )
    allow_headers: list[str] = Field(default_factory=lambda: ["authorization", "content-type"])
    allow_credentials: bool = False
    max_age_s: int = 600


class RateLimitConfig(_Strict):
    """A default limit for every route (routes may set their own) and where counters live."""

    default: str | None = None
    key: Literal["principal", "client", "global"] = "client"
    storage: Literal["memory", "store"] = "memory"
    """``memory``: per gateway node; ``store``: the kernel's Store, shared by every node."""


class CacheConfig(_Strict):
    """GET response cache; entries live in the kernel's Store under the gateway namespace."""

    enabled: bool = True
    max_body_bytes: int = Field(default=256 * 1024, gt=0)


class ResilienceConfig(_Strict):
    """Retries and a circuit breaker for calls to modules on other nodes."""

    retries: int = Field(default=2, ge=0, le=10)
    backoff_s: float = Field(default=0.05, ge=0)
    max_backoff_s: float = Field(default=1.0, ge=0)
    breaker_failures: int = Field(default=5, ge=1)
    breaker_reset_s: float = Field(default=10.0, gt=0)


class StreamConfig(_Strict):
    """Events to clients: SSE at ``GET <path>?topics=a.*,b.>``, WebSocket at ``websocket_path``."""

    enabled: bool = True
    path: str = "/events"
    websocket_path: str | None = "/events/ws"
    """The WebSocket endpoint (subscribe / unsubscribe while connected); empty: off."""
    roles: list[str] = Field(default_factory=list)
    topics: list[str] = Field(default_factory=list)
    """Allow-list of topic patterns a client may receive (empty: nothing is streamed)."""
    queue_size: int = Field(default=1000, gt=0)
    heartbeat_s: float = Field(default=15.0, gt=0)


class DashboardConfig(_Strict):
    """The operator dashboard: a page at ``<path>``, its JSON under ``<path>/api``.

    Off unless enabled: it shows module errors, job params and the (masked)
    config, so give it ``roles`` wherever the gateway is reachable by others.
    """

    enabled: bool = False
    path: str = Field(default="/_dashboard", pattern=r"^(/[A-Za-z0-9._~-]+)+$")
    roles: list[str] = Field(default_factory=list)
    refresh_s: float = Field(default=2.0, ge=0.25)
    """How often the page polls the API (and how often the charts take a sample)."""
    action_roles: list[str] = Field(default_factory=lambda: ["ops"])
    """Who may act (retry, purge, reload, change flags); empty: whoever may read it."""
    history: int = Field(default=300, ge=10, le=10_000)
    """Samples the charts keep (300 at the default 2 s: ten minutes)."""


class PartConfig(_Strict):
    """One RPC call of an aggregation route; ``"{name}"`` values come from the path or query."""

    call: str
    params: dict[str, Any] = Field(default_factory=dict)


class AggregateConfig(_Strict):
    """``GET path`` fans out to several RPC calls at once and merges their results."""

    path: str
    parts: dict[str, PartConfig] = Field(min_length=1)
    roles: list[str] = Field(default_factory=list)
    summary: str | None = None
    timeout_s: float | None = Field(default=None, gt=0)


class GatewayConfig(_Strict):
    """The gateway's whole config section."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    expose: list[str] = Field(default_factory=list)
    """RPC patterns served as ``POST <rpc_prefix>/<module>/<method>`` (``inventory.*``, ``*.*``)."""
    rpc_prefix: str = "/api"
    route_modules: list[str] = Field(default_factory=list)
    """Module classes (``"pkg.mod:Class"``) whose routes are served though they run elsewhere."""
    auth: AuthConfig = Field(default_factory=AuthConfig)
    rbac: RbacConfig | None = None
    cors: CorsConfig = Field(default_factory=CorsConfig)
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    resilience: ResilienceConfig = Field(default_factory=ResilienceConfig)
    stream: StreamConfig = Field(default_factory=StreamConfig)
    aggregates: list[AggregateConfig] = Field(default_factory=list)
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    timeout_s: float = Field(default=30.0, gt=0)
    """Default per-request deadline (a route's ``timeout_s`` overrides it)."""
    body_timeout_s: float = Field(default=10.0, gt=0)
    trust_forwarded: bool = False
    """Take the client address from ``X-Forwarded-For`` (only behind a trusted proxy)."""
    docs: bool = True
    title: str = "organelle API"
    version: str = "0.1.0"
    middleware: list[str] = Field(default_factory=list)
    """HTTP middleware (kernel ``Middleware``) as ``"pkg.mod:callable"``, outermost first."""
    log_level: str = "warning"
