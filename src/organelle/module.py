"""The ``Module`` base class and the ``@rpc`` / ``@on`` decorators.

A module is a class: its attributes declare identity and dependencies, its
decorated async methods are its RPC methods and event handlers. Everything is
checked when the class is described for registration, so mistakes surface
before anything starts, with a message naming the module and the method.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar, overload

from organelle._graph import Dependency, parse_dependency, parse_version, valid_name
from organelle._signature import ParamsContract, PayloadContract
from organelle._topics import pattern_error
from organelle.context import _current, root_context
from organelle.errors import DefinitionError

if TYPE_CHECKING:
    from packaging.version import Version

    from organelle.kernel import Kernel
    from organelle.storage import NamespacedStore

__all__ = ["Module", "ModuleSpec", "RpcSpec", "SubscriptionSpec", "describe", "on", "rpc"]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
Delivery = Literal["balanced", "broadcast"]

_HOOKS = ("on_load", "on_start", "on_stop", "on_abort", "on_config_changed", "health")


@dataclass(frozen=True, slots=True, kw_only=True)
class RpcSpec:
    """Options of an ``@rpc`` method."""

    name: str | None = None
    validate: bool = True
    timeout_s: float | None = None
    roles: tuple[str, ...] = ()
    permissions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionSpec:
    """Options of one ``@on`` subscription."""

    pattern: str
    delivery: Delivery = "balanced"
    filter: Callable[[Any], bool] | None = None
    priority: int = 0
    validate: bool = True


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

    Example::

        @rpc
        async def add(self, a: int, b: int) -> int:
            return a + b
    """

    def mark(f: F) -> F:
        _require_async(f, "rpc")
        if name is not None and not (isinstance(name, str) and name.isidentifier()):
            raise DefinitionError(f"@rpc name {name!r} on {f.__qualname__} must be an identifier")
        f.__organelle_rpc__ = RpcSpec(  # type: ignore[attr-defined]
            name=name,
            validate=validate,
            timeout_s=timeout_s,
            roles=_names(roles, "roles", f),
            permissions=_names(permissions, "permissions", f),
        )
        return f

    return mark if fn is None else mark(fn)


def on(
    pattern: str,
    *,
    delivery: Delivery = "balanced",
    filter: Callable[[Any], bool] | None = None,  # noqa: A002 - the natural name here
    priority: int = 0,
    validate: bool = True,
) -> Callable[[F], F]:
    """Handle events whose topic matches ``pattern`` (NATS wildcards ``*`` and ``>``).

    Args:
        pattern: the topic pattern, e.g. ``"order.created"`` or ``"order.>"``.
        delivery: ``"balanced"`` (one instance of the module gets each event; the
            default) or ``"broadcast"`` (every instance on every node gets it).
        filter: a predicate on the converted payload; ``False`` skips the event.
        priority: handlers of higher priority are started first.
        validate: convert the payload to the parameter's type hint.
    """
    reason = pattern_error(pattern)
    if reason is not None:
        raise DefinitionError(f"@on: {reason}")
    if delivery not in ("balanced", "broadcast"):
        raise DefinitionError(f"@on({pattern!r}): delivery must be 'balanced' or 'broadcast'")
    if filter is not None and not callable(filter):
        raise DefinitionError(f"@on({pattern!r}): filter must be callable")

    def mark(f: F) -> F:
        _require_async(f, "on")
        specs: list[SubscriptionSpec] = list(getattr(f, "__organelle_on__", ()))
        specs.append(
            SubscriptionSpec(
                pattern=pattern,
                delivery=delivery,
                filter=filter,
                priority=priority,
                validate=validate,
            )
        )
        f.__organelle_on__ = tuple(specs)  # type: ignore[attr-defined]
        return f

    return mark


def _is_handler(value: object) -> bool:
    return any(
        hasattr(value, attr)
        for attr in ("__organelle_rpc__", "__organelle_on__", "__organelle_job__")
    )


class _ClassNamespace(dict[str, Any]):
    """Class body namespace that refuses a second handler under one attribute name."""

    def __setitem__(self, key: str, value: Any) -> None:
        if key in self and _is_handler(value) and _is_handler(self[key]):
            raise DefinitionError(
                f"two handlers are named {key!r} in one module class; the first would be "
                "silently replaced"
            )
        super().__setitem__(key, value)


class ModuleMeta(type):
    """Metaclass of ``Module``: only adds duplicate-handler detection."""

    @classmethod
    def __prepare__(cls, name: str, bases: tuple[type, ...], /, **kwds: Any) -> dict[str, Any]:
        return _ClassNamespace()

    def __new__(cls, name: str, bases: tuple[type, ...], ns: dict[str, Any], **kw: Any) -> Any:
        return super().__new__(cls, name, bases, dict(ns), **kw)


@dataclass(frozen=True, slots=True)
class RpcMethod:
    """A described RPC method: attribute, options and parameter contract."""

    attr: str
    spec: RpcSpec
    contract: ParamsContract


@dataclass(frozen=True, slots=True)
class Subscription:
    """A described event subscription."""

    attr: str
    spec: SubscriptionSpec
    contract: PayloadContract


@dataclass(frozen=True, slots=True)
class ModuleSpec:
    """Everything the kernel needs to know about a module class, checked."""

    cls: type[Module]
    name: str
    version: Version
    deps: tuple[Dependency, ...]
    rpcs: dict[str, RpcMethod]
    subscriptions: tuple[Subscription, ...]
    config_model: Any


def describe(cls: type[Module]) -> ModuleSpec:  # noqa: C901 - a flat list of checks
    """Check a module class and return its spec (cached on the class).

    Raises:
        DefinitionError: anything wrong with the declaration, named precisely.
    """
    cached = cls.__dict__.get("__organelle_spec__")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    if not (isinstance(cls, type) and issubclass(cls, Module)):
        raise DefinitionError(f"{cls!r} is not a Module subclass")
    name = cls.name
    if not valid_name(name):
        raise DefinitionError(
            f"{cls.__qualname__}: module name {name!r} must be a lowercase identifier "
            "(letters, digits, '_' or '-'), no dots"
        )
    version = parse_version(name, cls.version)
    deps = tuple(parse_dependency(name, d) for d in _as_tuple(name, "requires", cls.requires))
    deps += tuple(
        parse_dependency(name, d, optional=True) for d in _as_tuple(name, "optional", cls.optional)
    )
    seen: set[str] = set()
    for dep in deps:
        if dep.name in seen:
            raise DefinitionError(f"module {name!r} lists dependency {dep.name!r} twice")
        seen.add(dep.name)
    for hook in _HOOKS:
        fn = getattr(cls, hook, None)
        if fn is not None and not inspect.iscoroutinefunction(fn):
            raise DefinitionError(f"module {name!r}: {hook} must be an 'async def' method")
    rpcs: dict[str, RpcMethod] = {}
    subs: list[Subscription] = []
    for attr in dir(cls):
        value = inspect.getattr_static(cls, attr, None)
        rspec = getattr(value, "__organelle_rpc__", None)
        if isinstance(rspec, RpcSpec):
            method = rspec.name or attr
            if method in rpcs:
                raise DefinitionError(
                    f"module {name!r}: two RPC handlers are named {method!r} "
                    f"({rpcs[method].attr} and {attr})"
                )
            owner = f"{name}.{method}"
            rpcs[method] = RpcMethod(attr, rspec, ParamsContract(owner, value))
        subs.extend(
            Subscription(attr, sspec, PayloadContract(f"{name}.{attr}", value))
            for sspec in getattr(value, "__organelle_on__", ())
        )
    config_model = cls.__dict__.get("Config", getattr(cls, "Config", None))
    if config_model is not None and not hasattr(config_model, "model_validate"):
        raise DefinitionError(f"module {name!r}: Config must be a pydantic BaseModel subclass")
    spec = ModuleSpec(cls, name, version, deps, rpcs, tuple(subs), config_model)
    type.__setattr__(cls, "__organelle_spec__", spec)
    return spec


def _as_tuple(owner: str, attr: str, value: object) -> tuple[object, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (tuple, list, set, frozenset)):
        return tuple(value)
    raise DefinitionError(f"module {owner!r}: {attr} must be a tuple of strings")


class Module(metaclass=ModuleMeta):
    """Base class of every organelle module.

    Class attributes declare the module; the kernel sets ``kernel``, ``config``
    and ``log`` on the instance before ``on_load``. All hooks are optional:

    * ``on_load()`` — every module, before any starts: wiring, no resources.
    * ``on_start()`` — in dependency order; acquire resources here.
    * ``on_stop()`` — reverse order, only for modules that became active.
    * ``on_abort(error)`` — this module's own ``on_load``/``on_start`` failed or
      timed out: release whatever it had acquired before failing.
    * ``on_config_changed(old, new)`` — a hot reload changed this module's section.
    * ``health()`` — return a status for health checks.

    Example::

        class Pricing(Module):
            name = "pricing"
            version = "1.0.0"

            @rpc
            async def quote(self, sku: str) -> float:
                return 9.99
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "0.0.0"
    requires: ClassVar[tuple[str, ...]] = ()
    optional: ClassVar[tuple[str, ...]] = ()
    hook_timeout_s: ClassVar[float | None] = None
    """Per-module timeout of each lifecycle hook; ``None`` takes the kernel default."""

    kernel: Kernel
    config: Any
    log: logging.Logger

    @property
    def store(self) -> NamespacedStore:
        """This module's namespace of the kernel's Store; ``store.namespace(x)`` reaches another."""
        return self.kernel.store_for(self.name)

    def spawn(
        self, coro: Coroutine[Any, Any, Any], *, name: str | None = None
    ) -> asyncio.Task[Any]:
        """Run background work owned by this module; cancelled after ``on_stop``.

        The task gets a fresh root context, so its calls and events are not
        tied to the hook that started it; it counts as internal work (not
        refused while the kernel drains). Failures are logged.
        """
        ctx = contextvars.copy_context()
        ctx.run(_current.set, root_context(None))
        task = asyncio.get_running_loop().create_task(
            coro, name=name or f"{self.name}-background", context=ctx
        )
        tasks: set[asyncio.Task[Any]] = self.__dict__.setdefault("_organelle_tasks", set())
        tasks.add(task)
        task.add_done_callback(self._background_done)
        return task

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self.__dict__.get("_organelle_tasks", set()).discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def _cancel_background(self) -> None:
        tasks: set[asyncio.Task[Any]] = self.__dict__.get("_organelle_tasks", set())
        for task in list(tasks):
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _attach(self, kernel: Kernel, config: Any) -> None:
        self.kernel = kernel
        self.config = config
        self.log = logging.getLogger(f"organelle.module.{self.name}")
        # Bind the kernel's entry points straight onto the instance: a call from
        # a module costs no extra frame.
        self.call = kernel.call  # type: ignore[method-assign]
        self.call_with = kernel.call_with  # type: ignore[method-assign]
        self.emit = kernel.emit  # type: ignore[method-assign]

    async def call(self, target: str, /, **params: Any) -> Any:
        """Call ``"<module>.<method>"`` with ``params``; see ``Kernel.call``."""
        return await self.kernel.call(target, **params)

    async def call_with(
        self,
        target: str,
        params: dict[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Any:
        """Call with explicit options; see ``Kernel.call_with``."""
        return await self.kernel.call_with(target, params, timeout_s=timeout_s, meta=meta)

    async def emit(
        self, topic: str, payload: Any = None, *, meta: dict[str, Any] | None = None
    ) -> None:
        """Emit an event; see ``Kernel.emit``."""
        await self.kernel.emit(topic, payload, meta=meta)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} module {self.name!r} v{self.version}>"
