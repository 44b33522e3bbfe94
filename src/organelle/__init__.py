"""organelle: an asyncio runtime for modular services.

Write modules; the kernel loads them, orders them by dependency, runs their
lifecycle and connects them through RPC and events.
"""

from organelle._version import __version__
from organelle.auth import Principal
from organelle.blobs import BlobInfo, BlobStore, open_blobs
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
from organelle.kernel._bus import SubscriptionStats
from organelle.kernel._dispatch import CallNext, Invocation, Middleware
from organelle.kernel._states import ModuleInfo, ModuleState
from organelle.module import Module, consume, cron, job, on, rpc

__all__ = [
    "BlobInfo",
    "BlobStore",
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
    "open_blobs",
    "route",
    "rpc",
]
