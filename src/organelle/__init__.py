"""organelle: an asyncio runtime for modular services.

Write modules; the kernel loads them, orders them by dependency, runs their
lifecycle and connects them through RPC and events.
"""

from typing import TYPE_CHECKING, Any

from organelle._version import __version__
from organelle.auth import Principal
from organelle.codec import Codec, JsonCodec, MsgpackCodec
from organelle.context import Context, context
from organelle.envelope import Envelope, event
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

if TYPE_CHECKING:
    from organelle.blobs import open_blobs

__all__ = [
    "CallNext",
    "CallTimeoutError",
    "Codec",
    "ConfigError",
    "Context",
    "DefinitionError",
    "DependencyError",
    "Envelope",
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
    "event",
    "job",
    "on",
    "open_blobs",
    "route",
    "rpc",
]


# The blob port (``organelle.blobs``: BlobStore, BlobInfo) loads on first use: most
# services never touch it, and ``import organelle`` stays within its time budget
# (tests/test_public_api.py).
_LAZY = {
    "open_blobs": "organelle.blobs",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'organelle' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
