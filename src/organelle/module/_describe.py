"""Describing a module class: every declaration checked, once, before anything runs."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from organelle.errors import DefinitionError
from organelle.module._decorators import (
    ConsumeOptions,
    CronOptions,
    JobOptions,
    RpcOptions,
    SubscriptionOptions,
)
from organelle.module._graph import Dependency, parse_dependency, parse_version, valid_name
from organelle.module._signature import ParamsContract, PayloadContract

if TYPE_CHECKING:
    from packaging.version import Version

    from organelle.module._base import Module

__all__ = ["Consumer", "JobMethod", "ModuleSpec", "RpcMethod", "Subscription", "describe"]

_ENQUEUE_OPTIONS = frozenset({"delay_s", "at", "priority", "idempotency_key"})
_HOOKS = (
    "on_load", "on_start", "on_stop", "on_abort", "on_config_changed", "on_config_check", "health"
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class RpcMethod:
    """A described RPC method: attribute, options and parameter contract."""

    attr: str
    spec: RpcOptions
    contract: ParamsContract


@dataclass(frozen=True, slots=True)
class Subscription:
    """A described event subscription."""

    attr: str
    spec: SubscriptionOptions
    contract: PayloadContract


@dataclass(frozen=True, slots=True)
class JobMethod:
    """A described job: attribute, options, parameter contract, and its cron schedule."""

    attr: str
    options: JobOptions
    contract: ParamsContract
    cron: CronOptions | None


@dataclass(frozen=True, slots=True)
class Consumer:
    """A described ``@consume`` handler: attribute, options and payload contract."""

    attr: str
    options: ConsumeOptions
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
    jobs: dict[str, JobMethod]
    consumers: tuple[Consumer, ...] = ()


def describe(cls: type[Module]) -> ModuleSpec:  # noqa: C901, PLR0912, PLR0915 - a flat list of checks
    """Check a module class and return its spec (cached on the class).

    Raises:
        DefinitionError: anything wrong with the declaration, named precisely.
    """
    cached = cls.__dict__.get("__organelle_spec__")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    from organelle.module._base import Module

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
    jobs: dict[str, JobMethod] = {}
    consumers: list[Consumer] = []
    for attr in dir(cls):
        value = inspect.getattr_static(cls, attr, None)
        rspec = getattr(value, "__organelle_rpc__", None)
        if isinstance(rspec, RpcOptions):
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
        joptions = getattr(value, "__organelle_job__", None)
        if isinstance(joptions, JobOptions):
            jname = joptions.name or attr
            if jname in jobs:
                raise DefinitionError(f"module {name!r}: two jobs are named {jname!r}")
            contract = ParamsContract(f"{name}.{jname}", value)
            clash = _ENQUEUE_OPTIONS.intersection(contract.names)
            if clash:
                raise DefinitionError(
                    f"module {name!r}: job {jname!r} has parameters named like enqueue "
                    f"options ({', '.join(sorted(clash))}); rename them"
                )
            jobs[jname] = JobMethod(
                attr, joptions, contract, getattr(value, "__organelle_cron__", None)
            )
        coptions = getattr(value, "__organelle_consume__", None)
        if isinstance(coptions, ConsumeOptions):
            key = (coptions.stream, coptions.group or name)
            if any((c.options.stream, c.options.group or name) == key for c in consumers):
                raise DefinitionError(
                    f"module {name!r}: two @consume handlers read stream {key[0]!r} "
                    f"as group {key[1]!r}"
                )
            consumers.append(Consumer(attr, coptions, PayloadContract(f"{name}.{attr}", value)))
    config_model = cls.__dict__.get("Config", getattr(cls, "Config", None))
    if config_model is not None and not hasattr(config_model, "model_validate"):
        raise DefinitionError(f"module {name!r}: Config must be a pydantic BaseModel subclass")
    spec = ModuleSpec(
        cls, name, version, deps, rpcs, tuple(subs), config_model, jobs, tuple(consumers)
    )
    type.__setattr__(cls, "__organelle_spec__", spec)
    return spec


def _as_tuple(owner: str, attr: str, value: object) -> tuple[object, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (tuple, list, set, frozenset)):
        return tuple(value)
    raise DefinitionError(f"module {owner!r}: {attr} must be a tuple of strings")
