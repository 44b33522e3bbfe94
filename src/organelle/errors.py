"""The organelle error hierarchy.

Every error has a stable string ``code`` and survives the wire: ``to_wire()``
gives a plain dict, ``from_wire()`` rebuilds the same class (or the nearest
known ancestor for a code this process does not know)::

    OrganelleError                      organelle.error
    ├── ConfigError (ValueError)        organelle.config
    │   ├── DefinitionError             organelle.definition     module/handler misuse
    │   │   ├── DependencyError         organelle.dependency     graph: unknown, version, cycle
    │   │   └── PluginError             organelle.plugin         a plugin's manifest or entry point
    │   │       ├── PluginIncompatibleError organelle.plugin.incompatible  outside its kernel range
    │   │       └── PluginPinError      organelle.plugin.pin     files differ from the pinned hash
    │   └── ConfigChangeError           organelle.config.change  a cluster config change not applied
    ├── NotFoundError (LookupError)     organelle.not_found
    │   ├── NotServedError              organelle.not_found      no node serves the module now
    │   ├── JobNotFoundError            organelle.jobs.not_found
    │   ├── StreamNotFoundError         organelle.stream.not_found
    │   ├── SagaNotFoundError           organelle.saga.not_found   no saga with that id
    │   ├── BlobNotFoundError           organelle.blobs.not_found   absent or expired blob
    │   └── FlagNotFoundError           organelle.flags.not_found   no such module flag
    ├── ValidationError (ValueError)    organelle.validation     carries a field list
    │   └── FlagRuleError               organelle.flags.invalid  a bad flag value or rule
    ├── ConflictError                   organelle.storage.conflict  compare-and-set lost
    │   ├── FencedError                 organelle.lock.fenced    an older fencing token
    │   └── JobStateError               organelle.jobs.state     not in a state that allows it
    ├── TransactionError                organelle.storage.transaction  Store transaction misuse
    │   ├── TransactionClosedError      organelle.storage.tx_closed  used after its block
    │   └── TransactionUnsupportedError organelle.storage.tx_unsupported  none on NATS KV
    ├── LeaseLostError                  organelle.lease_lost     a job, partition or lock lease
    ├── LockTimeoutError (TimeoutError) organelle.lock.timeout   still held after timeout_s
    ├── BlobIntegrityError              organelle.blobs.integrity   size or SHA-256 mismatch on read
    ├── ClaimCheckError                 organelle.claim_check    claimed payload missing, damaged
    ├── TransportError                  organelle.transport
    │   ├── CallTimeoutError            organelle.timeout        (also TimeoutError)
    │   └── UnavailableError            organelle.unavailable    draining, disconnected
    │       ├── StorageUnavailableError organelle.storage.unavailable
    │       ├── CircuitOpenError        organelle.circuit_open   a policy's breaker refused the call
    │       └── BulkheadFullError       organelle.bulkhead_full  a policy's bulkhead refused it
    ├── LifecycleError                  organelle.lifecycle      a hook failed or timed out
    ├── RemoteError                     organelle.remote         an unknown remote code
    ├── AuthError                       organelle.auth
    │   ├── UnauthenticatedError        organelle.unauthenticated
    │   │   └── SignatureError          organelle.signature      an unsigned or tampered event
    │   └── ForbiddenError              organelle.forbidden
    │       └── PermissionDeniedError   organelle.plugin.denied  outside a plugin's manifest
    ├── RateLimitedError                organelle.rate_limited   HTTP 429, ``retry_after_s``
    ├── PayloadTooLargeError            organelle.payload_too_large  HTTP 413
    ├── BodyTimeoutError                organelle.body_timeout   HTTP 408
    └── InternalError                   organelle.internal       any non-organelle exception

Every subclass of ``OrganelleError`` in the project lives here (the blocks
re-export the ones they raise), so this tree is the whole of it.

Handlers raise these (or subclasses with their own ``code``) and callers catch
them by class, locally or across processes alike.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

__all__ = [
    "AuthError",
    "BlobIntegrityError",
    "BlobNotFoundError",
    "BodyTimeoutError",
    "BulkheadFullError",
    "CallTimeoutError",
    "CircuitOpenError",
    "ClaimCheckError",
    "ConfigChangeError",
    "ConfigError",
    "ConflictError",
    "DefinitionError",
    "DependencyError",
    "FencedError",
    "FlagNotFoundError",
    "FlagRuleError",
    "ForbiddenError",
    "InternalError",
    "JobNotFoundError",
    "JobStateError",
    "LeaseLostError",
    "LifecycleError",
    "LockTimeoutError",
    "NotFoundError",
    "NotServedError",
    "OrganelleError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PluginError",
    "PluginIncompatibleError",
    "PluginPinError",
    "RateLimitedError",
    "RemoteError",
    "SagaNotFoundError",
    "SignatureError",
    "StorageUnavailableError",
    "StreamNotFoundError",
    "TransactionClosedError",
    "TransactionError",
    "TransactionUnsupportedError",
    "TransportError",
    "UnauthenticatedError",
    "UnavailableError",
    "ValidationError",
    "error_class",
]

_REGISTRY: dict[str, type[OrganelleError]] = {}


class OrganelleError(Exception):
    """Root of every error organelle raises or carries over the wire.

    Subclasses set a class-level ``code``; it is the stable identity of the
    error across versions and processes, so never reuse or rename one.

    Args:
        message: what went wrong, for a human.
        details: JSON-able extra facts (field errors, names, limits).
    """

    code: ClassVar[str] = "organelle.error"
    node: str | None = None
    """The node that answered with this error when a call went to another node
    (its ``Organelle-Node`` reply header), else ``None``; kept out of ``details``
    and of the wire, so a caller further up sees the node it called itself."""

    def __init__(self, message: str = "", *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # First class to claim a code keeps it: user subclasses that forget to
        # set their own code must not shadow the built-in one on decode.
        if "code" in cls.__dict__:
            _REGISTRY.setdefault(cls.code, cls)

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.to_wire(),))

    def to_wire(self) -> dict[str, Any]:
        """Return the error as a JSON-able dict: code, type, message, details."""
        return {
            "code": self.code,
            "type": type(self).__name__,
            "message": self.message,
            "details": self.details,
        }

    @staticmethod
    def from_wire(data: dict[str, Any]) -> OrganelleError:
        """Rebuild an error from ``to_wire()`` output.

        A known code gives its class; an unknown one gives ``RemoteError`` that
        keeps the remote code, type and message.
        """
        code = str(data.get("code", "organelle.error"))
        message = str(data.get("message", ""))
        details = data.get("details") or {}
        if not isinstance(details, dict):
            details = {"value": details}
        cls = _REGISTRY.get(code)
        if cls is None:
            return RemoteError(
                message,
                remote_code=code,
                remote_type=str(data.get("type", "")),
                details=details,
            )
        err = cls.__new__(cls)
        OrganelleError.__init__(err, message, details=details)
        err._restore(data)
        return err

    def _restore(self, data: dict[str, Any]) -> None:
        """Set subclass attributes that ``from_wire`` bypassed ``__init__`` for."""


_REGISTRY[OrganelleError.code] = OrganelleError


def _rebuild(data: dict[str, Any]) -> OrganelleError:
    return OrganelleError.from_wire(data)


def error_class(code: str) -> type[OrganelleError] | None:
    """Return the class registered for an error code, if any."""
    return _REGISTRY.get(code)


class ConfigError(OrganelleError, ValueError):
    """Configuration is invalid: names the key and the reason."""

    code = "organelle.config"


class ConfigChangeError(ConfigError):
    """A cluster config change was aborted or rolled back on every node.

    ``details["change"]`` holds the change's report: its id, outcome and
    each node's state, error code and message (secrets masked).
    """

    code = "organelle.config.change"


class DefinitionError(ConfigError):
    """A module or handler is declared wrongly; raised at registration."""

    code = "organelle.definition"


class DependencyError(DefinitionError):
    """The module graph cannot start: unknown dependency, version mismatch or cycle."""

    code = "organelle.dependency"


class NotFoundError(OrganelleError, LookupError):
    """No module, method or record by that name."""

    code = "organelle.not_found"


class ValidationError(OrganelleError, ValueError):
    """Input does not match the contract; ``errors`` lists each bad field.

    Each entry of ``errors`` is ``{"field": str, "message": str}``.
    """

    code = "organelle.validation"

    def __init__(
        self,
        message: str = "",
        *,
        errors: list[dict[str, str]] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        merged = dict(details or {})
        if errors is not None:
            merged["errors"] = errors
        super().__init__(message, details=merged)

    @property
    def errors(self) -> list[dict[str, str]]:
        """The per-field problems, in input order."""
        value = self.details.get("errors", [])
        return list(value) if isinstance(value, list) else []


class TransportError(OrganelleError):
    """The call did not get a reply: network, broker or deadline trouble."""

    code = "organelle.transport"


class CallTimeoutError(TransportError, TimeoutError):
    """The call's deadline passed before a reply."""

    code = "organelle.timeout"


class UnavailableError(TransportError):
    """Nobody can take the call now (draining, stopped, disconnected)."""

    code = "organelle.unavailable"


class LifecycleError(OrganelleError):
    """A lifecycle hook failed or timed out; names the module and the hook."""

    code = "organelle.lifecycle"


class RemoteError(OrganelleError):
    """An error from another process whose code this process does not know."""

    code = "organelle.remote"

    def __init__(
        self,
        message: str = "",
        *,
        remote_code: str = "organelle.remote",
        remote_type: str = "",
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.remote_code = remote_code
        self.remote_type = remote_type

    def _restore(self, data: dict[str, Any]) -> None:
        self.remote_code = str(data.get("code", self.code))
        self.remote_type = str(data.get("type", ""))

    def to_wire(self) -> dict[str, Any]:
        """Keep the remote identity, so relaying it does not rename it."""
        return {
            "code": self.remote_code,
            "type": self.remote_type,
            "message": self.message,
            "details": self.details,
        }


class AuthError(OrganelleError):
    """Identity or permission problem."""

    code = "organelle.auth"


class UnauthenticatedError(AuthError):
    """No valid identity was presented."""

    code = "organelle.unauthenticated"


class SignatureError(UnauthenticatedError):
    """An event's signature is missing, made with a key this node lacks, or does not match.

    ``details["reason"]`` is ``unsigned``, ``unknown_kid`` or ``bad_signature``.
    """

    code = "organelle.signature"


class ForbiddenError(AuthError):
    """The identity is known but lacks the permission."""

    code = "organelle.forbidden"


class InternalError(OrganelleError):
    """A handler raised something that is not an ``OrganelleError``.

    Keeps the original type name and message so the caller can see what
    happened without the server's traceback crossing the boundary.
    """

    code = "organelle.internal"

    def __init__(
        self,
        message: str = "",
        *,
        error_type: str = "",
        details: dict[str, Any] | None = None,
    ) -> None:
        merged = dict(details or {})
        if error_type:
            merged["error_type"] = error_type
        super().__init__(message, details=merged)

    @property
    def error_type(self) -> str:
        """The class name of the original exception."""
        return str(self.details.get("error_type", ""))

    @classmethod
    def wrap(cls, exc: BaseException) -> InternalError:
        """Wrap a foreign exception, keeping its type name and message."""
        err = cls(f"{type(exc).__name__}: {exc}", error_type=type(exc).__name__)
        err.__cause__ = exc
        return err


# Raised by the blocks (storage, jobs, streams, transports, the gateway) ---------


class NotServedError(NotFoundError):
    """No node of the cluster serves the module right now (the registry lists none).

    A ``NotFoundError`` with the same code (another node decodes it as a plain
    one), raised by a transport itself, never rebuilt from a reply: so a
    caller that knows the module exists — the gateway routing a class from
    ``route_modules`` — can tell "nobody runs it" (unavailable, worth a retry)
    from a handler's own ``NotFoundError``.
    """


class JobNotFoundError(NotFoundError):
    """No job with that id (never enqueued, or purged)."""

    code = "organelle.jobs.not_found"


class SagaNotFoundError(NotFoundError):
    """No saga with that id (never started, or its record was removed)."""

    code = "organelle.saga.not_found"


class StreamNotFoundError(NotFoundError):
    """The stream was never created on this log."""

    code = "organelle.stream.not_found"


class BlobNotFoundError(NotFoundError):
    """No live blob under that key: never written, deleted, or past its ``expires_at``."""

    code = "organelle.blobs.not_found"


class FlagNotFoundError(NotFoundError):
    """No module with a ``Flags`` model by that name, or no such flag in it."""

    code = "organelle.flags.not_found"


class FlagRuleError(ValidationError):
    """A flag value or rule does not fit the rule format or the flag's type."""

    code = "organelle.flags.invalid"


class BlobIntegrityError(OrganelleError):
    """A blob read back differs from what was written: its size or SHA-256 does not match.

    Raised by ``BlobStore.get`` and at the end of ``open_read``; ``details``
    holds ``key``, ``expected`` and ``actual``. The stored copy is damaged
    (disk, a foreign writer): do not trust what was read.
    """

    code = "organelle.blobs.integrity"


class ClaimCheckError(OrganelleError):
    """The payload a claim-check reference names cannot be had as it was sent.

    ``details["reason"]`` is ``claim_missing`` (no live blob: expired, deleted,
    or another store), ``claim_integrity`` (its size or SHA-256 differs from the
    reference) or ``claim_unavailable`` (the blob store is unreachable);
    ``details["key"]`` names the blob. An event is dropped (counted under that
    reason); a stream record fails and is retried.
    """

    code = "organelle.claim_check"


class ConflictError(OrganelleError):
    """A compare-and-set found another revision than the one expected.

    ``details`` holds ``key`` and ``expected``; re-read and try again.
    """

    code = "organelle.storage.conflict"


class TransactionError(OrganelleError):
    """A Store transaction was misused (see ``Store.transaction``)."""

    code = "organelle.storage.transaction"


class TransactionClosedError(TransactionError):
    """A transaction object was used after its ``async with`` block had ended."""

    code = "organelle.storage.tx_closed"


class TransactionUnsupportedError(TransactionError):
    """The Store's backend cannot run multi-key transactions (NATS KV has none).

    ``details["backend"]`` names the backend.
    """

    code = "organelle.storage.tx_unsupported"


class LeaseLostError(OrganelleError):
    """A lease expired and someone else holds the work now: this ack, fail or commit is refused.

    One class for a job's lease (the worker), a stream partition's (a
    consumer group member) and a lock's (``organelle.locks``); ``details`` may
    say which job, partition or lock.
    """

    code = "organelle.lease_lost"


class FencedError(ConflictError):
    """A fenced write carried an older fencing token than the one the key was last written with.

    A newer holder of the lock has written since: this holder's lease is gone.
    ``details`` holds ``key``, ``token`` (this write's) and ``current``.
    """

    code = "organelle.lock.fenced"


class JobStateError(ConflictError):
    """The job is not in a state that allows the operation (cancelling a running job).

    ``details`` holds ``job_id`` and ``state``.
    """

    code = "organelle.jobs.state"


class LockTimeoutError(OrganelleError, TimeoutError):
    """A lock stayed held by someone else for the whole ``timeout_s`` of the wait.

    ``details`` holds ``lock`` and ``timeout_s``.
    """

    code = "organelle.lock.timeout"


# The codes each block used before the two lease errors became one still decode.
_REGISTRY.setdefault("organelle.jobs.lease_lost", LeaseLostError)
_REGISTRY.setdefault("organelle.stream.lease_lost", LeaseLostError)


class StorageUnavailableError(UnavailableError):
    """The backend stayed unreachable (or locked) for the whole retry budget."""

    code = "organelle.storage.unavailable"


class CircuitOpenError(UnavailableError):
    """A circuit breaker is open: the call was refused at once and never ran.

    ``details`` names the ``target`` (and the ``node`` when one node's breaker
    refused) and ``retry_after_s``, when the breaker half-opens.
    """

    code = "organelle.circuit_open"


class BulkheadFullError(UnavailableError):
    """A bulkhead's slots and queue are full: the call was refused and never ran."""

    code = "organelle.bulkhead_full"


class RateLimitedError(OrganelleError):
    """Too many requests for this key; ``retry_after_s`` says when to come back."""

    code = "organelle.rate_limited"
    http_status: ClassVar[int] = 429

    @property
    def retry_after_s(self) -> int:
        """Whole seconds to wait (at least 1)."""
        value = self.details.get("retry_after_s", 1)
        return max(1, math.ceil(float(value))) if isinstance(value, (int, float)) else 1


class PayloadTooLargeError(OrganelleError):
    """The request body is larger than ``max_body_bytes``."""

    code = "organelle.payload_too_large"
    http_status: ClassVar[int] = 413


class BodyTimeoutError(OrganelleError):
    """The client did not send its body in time."""

    code = "organelle.body_timeout"
    http_status: ClassVar[int] = 408


# Raised for plugin packages (organelle.plugins) ------------------------------


class PluginError(DefinitionError):
    """A plugin cannot be loaded: no such entry point, a bad manifest, a broken package."""

    code = "organelle.plugin"


class PluginIncompatibleError(PluginError):
    """The plugin's manifest does not admit this kernel's version."""

    code = "organelle.plugin.incompatible"


class PluginPinError(PluginError):
    """The installed plugin's files differ from the hash pinned in ``[plugins.pins]``."""

    code = "organelle.plugin.pin"


class PermissionDeniedError(ForbiddenError):
    """A plugin module used a call target, topic, job, stream or namespace it did not declare.

    Raised where the module asks (its ``call``, ``emit``, ``store`` …), so the
    handler sees it like any refused call; a subscription outside the manifest
    is refused when the module is loaded.
    """

    code = "organelle.plugin.denied"
