"""organelle: an asyncio runtime for modular services.

Write modules; the kernel loads them, orders them by dependency, runs their
lifecycle and connects them through RPC and events.
"""

from organelle._bus import SubscriptionStats
from organelle._dispatch import CallNext, Invocation, Middleware
from organelle._lifecycle import ModuleInfo, ModuleState
from organelle.auth import Principal
from organelle.codec import Codec, JsonCodec, MsgpackCodec
from organelle.context import Context, context
from organelle.errors import (
    CallTimeoutError,
    ConfigError,
    DefinitionError,
    DependencyError,
    ForbiddenError,
    InternalError,
    LifecycleError,
    NotFoundError,
    OrganelleError,
    RemoteError,
    TransportError,
    UnauthenticatedError,
    UnavailableError,
    ValidationError,
)
from organelle.gateway._route import Header, Query, route
from organelle.kernel import Kernel
from organelle.module import Module, consume, cron, job, on, rpc

__version__ = "0.1.0"

__all__ = [
    "CallNext",
    "CallTimeoutError",
    "Codec",
    "ConfigError",
    "Context",
    "DefinitionError",
    "DependencyError",
    "ForbiddenError",
    "Header",
    "InternalError",
    "Invocation",
    "JsonCodec",
    "Kernel",
    "LifecycleError",
    "Middleware",
    "Module",
    "ModuleInfo",
    "ModuleState",
    "MsgpackCodec",
    "NotFoundError",
    "OrganelleError",
    "Principal",
    "Query",
    "RemoteError",
    "SubscriptionStats",
    "TransportError",
    "UnauthenticatedError",
    "UnavailableError",
    "ValidationError",
    "__version__",
    "consume",
    "context",
    "cron",
    "job",
    "on",
    "route",
    "rpc",
]
