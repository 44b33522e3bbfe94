"""The decorators that declare a module's handlers: ``@rpc``, ``@on``, ``@job``, ``@consume``.

``@cron`` schedules a job.

They only record options on the function (checked at once, so a mistake is
reported at the line that makes it); the kernel reads them when the module is
registered.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, overload

from organelle.config.policy import Policy, parse_policy
from organelle.envelope import event_type
from organelle.errors import ConfigError, DefinitionError
from organelle.module._topics import pattern_error

__all__ = [
    "ConsumeOptions",
    "CronOptions",
    "Delivery",
    "JobOptions",
    "RpcOptions",
    "SubscriptionOptions",
    "consume",
    "cron",
    "is_handler",
    "job",
    "on",
    "rpc",
]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
Delivery = Literal["balanced", "broadcast"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RpcOptions:
    """Options of an ``@rpc`` method."""

    name: str | None = None
    validate: bool = True
    timeout_s: float | None = None
    roles: tuple[str, ...] = ()
    permissions: tuple[str, ...] = ()
    idempotent: bool = False
    policy: Policy | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionOptions:
    """Options of one ``@on`` subscription."""

    pattern: str
    delivery: Delivery = "balanced"
    filter: Callable[[Any], bool] | None = None
    priority: int = 0
    validate: bool = True
    idempotent: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class JobOptions:
    """Options of a ``@job`` method (and of the job a ``@cron`` schedule enqueues)."""

    name: str | None = None
    max_attempts: int = 3
    backoff_s: float = 1.0
    backoff_max_s: float = 300.0
    timeout_s: float | None = None
    concurrency: int | None = None
    rate: float | None = None
    lease_s: float = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class CronOptions:
    """Options of a ``@cron`` schedule: it fires once per tick per cluster, as a durable job."""

    expr: str
    tz: str = "UTC"
    misfire: Literal["skip", "catch_up"] = "skip"
    misfire_window_s: float = 60.0


@overload
def job(fn: F, /) -> F: ...
@overload
def job(
    *,
    name: str | None = None,
    max_attempts: int = 3,
    backoff_s: float = 1.0,
    backoff_max_s: float = 300.0,
    timeout_s: float | None = None,
    concurrency: int | None = None,
    rate: float | None = None,
    lease_s: float = 30.0,
) -> Callable[[F], F]: ...
def job(
    fn: F | None = None,
    /,
    *,
    name: str | None = None,
    max_attempts: int = 3,
    backoff_s: float = 1.0,
    backoff_max_s: float = 300.0,
    timeout_s: float | None = None,
    concurrency: int | None = None,
    rate: float | None = None,
    lease_s: float = 30.0,
) -> F | Callable[[F], F]:
    """Make a module method a durable job, enqueued with ``self.enqueue("<module>.<name>", …)``.

    Params are validated from the type hints when the job is *enqueued*, so a
    bad call is refused then, not discovered by a worker later.

    Args:
        fn: the method, when used as a bare ``@job``.
        name: the job name (defaults to the function name).
        max_attempts: runs before the job goes to the dead letters.
        backoff_s: first retry delay; doubles each attempt, with jitter.
        backoff_max_s: the longest retry delay.
        timeout_s: one attempt's time limit.
        concurrency: at most this many run at once per worker (per job type).
        rate: at most this many start per second per worker.
        lease_s: how long a worker holds a running job between heartbeats.
    """
    options = JobOptions(
        name=name,
        max_attempts=max_attempts,
        backoff_s=backoff_s,
        backoff_max_s=backoff_max_s,
        timeout_s=timeout_s,
        concurrency=concurrency,
        rate=rate,
        lease_s=lease_s,
    )
    if max_attempts < 1:
        raise DefinitionError("@job max_attempts must be >= 1")
    if name is not None and not (isinstance(name, str) and name.isidentifier()):
        raise DefinitionError(f"@job name {name!r} must be an identifier")

    def mark(f: F) -> F:
        _require_async(f, "job")
        f.__organelle_job__ = options  # type: ignore[attr-defined]
        return f

    return mark if fn is None else mark(fn)


def cron(
    expr: str,
    *,
    tz: str = "UTC",
    misfire: Literal["skip", "catch_up"] = "skip",
    misfire_window_s: float = 60.0,
    max_attempts: int = 3,
    timeout_s: float | None = None,
) -> Callable[[F], F]:
    """Run a parameterless module method on a cron schedule, once per tick per cluster.

    Each tick enqueues a durable job whose id is derived from the schedule and
    the tick time, so several nodes running the scheduler fire it once.

    Args:
        expr: a cron expression (``"*/5 * * * *"``; croniter syntax).
        tz: the time zone the expression is read in.
        misfire: after downtime, ``"skip"`` missed ticks or ``"catch_up"`` on
            those within ``misfire_window_s``.
        misfire_window_s: how far back ``catch_up`` reaches.
        max_attempts: as for ``@job``.
        timeout_s: as for ``@job``.
    """
    if not isinstance(expr, str) or len(expr.split()) not in (5, 6):
        raise DefinitionError(f"@cron: {expr!r} is not a cron expression")
    if misfire not in ("skip", "catch_up"):
        raise DefinitionError("@cron misfire must be 'skip' or 'catch_up'")
    schedule = CronOptions(expr=expr, tz=tz, misfire=misfire, misfire_window_s=misfire_window_s)

    def mark(f: F) -> F:
        _require_async(f, "cron")
        if len(inspect.signature(f).parameters) > 1:
            raise DefinitionError(f"@cron method {f.__qualname__} must take no parameters")
        f.__organelle_job__ = JobOptions(max_attempts=max_attempts, timeout_s=timeout_s)  # type: ignore[attr-defined]
        f.__organelle_cron__ = schedule  # type: ignore[attr-defined]
        return f

    return mark


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumeOptions:
    """Options of a ``@consume`` handler: one consumer group of one durable stream."""

    stream: str
    group: str | None = None
    start: Literal["earliest", "latest"] = "earliest"
    max_attempts: int = 5
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    lease_s: float = 30.0
    validate: bool = True
    idempotent: bool = True


def consume(
    stream: str,
    *,
    group: str | None = None,
    start: Literal["earliest", "latest"] = "earliest",
    max_attempts: int = 5,
    backoff_s: float = 0.5,
    backoff_max_s: float = 30.0,
    lease_s: float = 30.0,
    validate: bool = True,
    idempotent: bool = True,
) -> Callable[[F], F]:
    """Consume a durable stream as a member of a consumer group.

    Every group sees every record; within a group each record goes to one
    member, in order per partition, at least once: the group moves past a
    record only after the handler returns. A failing record is retried with
    backoff, then kept as a dead letter after ``max_attempts`` and skipped.

    Args:
        stream: the stream's name (created on first use; see docs/streams.md).
        group: the consumer group (default: the module's name), so every
            instance of a module shares the work and other modules get their own copy.
        start: where a new group begins: the first retained record or new ones only.
        max_attempts: deliveries of one record before it becomes a dead letter.
        backoff_s: first retry delay; doubles each attempt up to ``backoff_max_s``.
        backoff_max_s: the longest retry delay.
        lease_s: how long a member holds a partition per record (the handler's time limit).
        validate: convert the payload to the handler's declared type.
        idempotent: skip a record whose event id this group's handler already
            handled (the dedup inbox): a producer that appended twice, or a
            redelivery after the handler's effect but before the commit.
    """
    from organelle.streams.base import check_name

    try:
        check_name("stream", stream)
        if group is not None:
            check_name("group", group)
    except Exception as exc:
        raise DefinitionError(f"@consume: {exc}") from None
    if start not in ("earliest", "latest"):
        raise DefinitionError("@consume start must be 'earliest' or 'latest'")
    if max_attempts < 1 or lease_s <= 0 or backoff_s < 0:
        raise DefinitionError("@consume needs max_attempts >= 1, lease_s > 0, backoff_s >= 0")
    options = ConsumeOptions(
        stream=stream,
        group=group,
        start=start,
        max_attempts=max_attempts,
        backoff_s=backoff_s,
        backoff_max_s=backoff_max_s,
        lease_s=lease_s,
        validate=validate,
        idempotent=idempotent,
    )

    def mark(f: F) -> F:
        _require_async(f, "consume")
        f.__organelle_consume__ = options  # type: ignore[attr-defined]
        return f

    return mark


def _names(value: object, what: str, fn: Callable[..., Any]) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, str) and v for v in value):
        raise DefinitionError(f"@rpc {what} on {fn.__qualname__} must be a list of names")
    return tuple(value)


def _require_async(fn: object, decorator: str) -> None:
    if not inspect.iscoroutinefunction(fn):
        name = getattr(fn, "__qualname__", repr(fn))
        raise DefinitionError(f"@{decorator} handler {name} must be an 'async def' function")


@overload
def rpc(fn: F, /) -> F: ...
@overload
def rpc(
    *,
    name: str | None = None,
    validate: bool = True,
    timeout_s: float | None = None,
    roles: tuple[str, ...] | list[str] = (),
    permissions: tuple[str, ...] | list[str] = (),
    idempotent: bool = False,
    policy: Policy | Mapping[str, Any] | None = None,
) -> Callable[[F], F]: ...
def rpc(
    fn: F | None = None,
    /,
    *,
    name: str | None = None,
    validate: bool = True,
    timeout_s: float | None = None,
    roles: tuple[str, ...] | list[str] = (),
    permissions: tuple[str, ...] | list[str] = (),
    idempotent: bool = False,
    policy: Policy | Mapping[str, Any] | None = None,
) -> F | Callable[[F], F]:
    """Expose a module method as ``"<module>.<name>"``.

    Args:
        fn: the method, when used as a bare ``@rpc``.
        name: the method name callers use (defaults to the function name).
        validate: convert and validate params from the type hints (off skips
            the cost for trusted, hot internal calls).
        timeout_s: the longest this method may run; callers' deadlines still apply.
        roles: the caller's principal needs one of these roles, on every call
            path (HTTP, remote, a direct kernel call).
        permissions: the caller's roles must grant each permission (RBAC).
        idempotent: running it twice does what running it once does, so a
            call policy may retry it after a timeout or a lost reply.
        policy: how calls to it behave (timeout, retry, breaker, bulkhead,
            rate limit, fallback): a ``Policy`` or the same keys as a
            ``[policies]`` table; config overrides it (docs/resilience.md).

    Example::

        @rpc
        async def add(self, a: int, b: int) -> int:
            return a + b
    """
    try:
        parsed = None if policy is None else parse_policy(policy, "@rpc policy")
    except ConfigError as exc:
        raise DefinitionError(str(exc)) from None

    def mark(f: F) -> F:
        _require_async(f, "rpc")
        if name is not None and not (isinstance(name, str) and name.isidentifier()):
            raise DefinitionError(f"@rpc name {name!r} on {f.__qualname__} must be an identifier")
        f.__organelle_rpc__ = RpcOptions(  # type: ignore[attr-defined]
            name=name,
            validate=validate,
            timeout_s=timeout_s,
            roles=_names(roles, "roles", f),
            permissions=_names(permissions, "permissions", f),
            idempotent=bool(idempotent),
            policy=None if parsed is None or parsed.empty else parsed,
        )
        return f

    return mark if fn is None else mark(fn)


def on(
    pattern: str | type,
    *,
    delivery: Delivery = "balanced",
    filter: Callable[[Any], bool] | None = None,  # noqa: A002 - the natural name here
    priority: int = 0,
    validate: bool = True,
    idempotent: bool = False,
) -> Callable[[F], F]:
    """Handle events whose topic matches ``pattern`` (NATS wildcards ``*`` and ``>``).

    Args:
        pattern: the topic pattern, e.g. ``"order.created"`` or ``"order.>"``, or
            an ``@event`` class (its name is the topic).
        delivery: ``"balanced"`` (one instance of the module gets each event; the
            default) or ``"broadcast"`` (every instance on every node gets it).
        filter: a predicate on the converted payload; ``False`` skips the event.
        priority: handlers of higher priority are started first.
        validate: convert the payload to the parameter's type hint.
        idempotent: remember the ids of handled events (the dedup inbox, in the
            Store) and skip an event this handler already handled.
    """
    if isinstance(pattern, type):
        meta = event_type(pattern)
        if meta is None:
            raise DefinitionError(f"@on({pattern.__name__}): the class is not an @event type")
        pattern = meta.name
    reason = pattern_error(pattern)
    if reason is not None:
        raise DefinitionError(f"@on: {reason}")
    if delivery not in ("balanced", "broadcast"):
        raise DefinitionError(f"@on({pattern!r}): delivery must be 'balanced' or 'broadcast'")
    if filter is not None and not callable(filter):
        raise DefinitionError(f"@on({pattern!r}): filter must be callable")
    topic = pattern

    def mark(f: F) -> F:
        _require_async(f, "on")
        specs: list[SubscriptionOptions] = list(getattr(f, "__organelle_on__", ()))
        specs.append(
            SubscriptionOptions(
                pattern=topic,
                delivery=delivery,
                filter=filter,
                priority=priority,
                validate=validate,
                idempotent=idempotent,
            )
        )
        f.__organelle_on__ = tuple(specs)  # type: ignore[attr-defined]
        return f

    return mark


def is_handler(value: object) -> bool:
    """Whether a class attribute was made a handler by one of these decorators."""
    return any(
        hasattr(value, attr)
        for attr in ("__organelle_rpc__", "__organelle_on__", "__organelle_job__")
    )
