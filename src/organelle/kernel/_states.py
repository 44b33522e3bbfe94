"""Module states and hook running: the mechanics under ``Lifecycle``.

Rules (nameko's, tightened): every module is loaded before any starts; modules
start level by level in dependency order (a level's modules together) and stop
in reverse; a hook that fails or times out names the module and the hook; a
failed start stops what already started, so nothing is left half-running.
"""

from __future__ import annotations

import asyncio
import difflib
import enum
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from organelle.context import _current, root_context
from organelle.errors import ConfigError, LifecycleError, OrganelleError
from organelle.module import Module, ModuleSpec


class Hooked(Protocol):
    """What running a hook needs of a slot: its name and instance."""

    @property
    def name(self) -> str: ...

    @property
    def instance(self) -> Module: ...


__all__ = [
    "KERNEL_KEYS",
    "STATE_TOPICS",
    "ModuleInfo",
    "ModuleState",
    "quietly",
    "run_hook",
    "validate_config",
]

log = logging.getLogger("organelle.kernel")


class ModuleState(enum.StrEnum):
    """Where a module is in its lifecycle."""

    LOADED = "loaded"
    STARTING = "starting"
    ACTIVE = "active"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


# The kernel event announced on entering each state.
STATE_TOPICS = {
    ModuleState.LOADED: "kernel.module.loaded",
    ModuleState.STARTING: "kernel.module.starting",
    ModuleState.ACTIVE: "kernel.module.started",
    ModuleState.STOPPING: "kernel.module.stopping",
    ModuleState.STOPPED: "kernel.module.stopped",
    ModuleState.FAILED: "kernel.module.failed",
}


@dataclass(frozen=True, slots=True)
class ModuleInfo:
    """A read-only view of a module, from ``Kernel.modules()``."""

    name: str
    version: str
    state: ModuleState
    requires: tuple[str, ...]
    optional: tuple[str, ...]
    rpc_methods: tuple[str, ...]
    subscriptions: tuple[str, ...]
    error: str | None
    instance: Module


KERNEL_KEYS = frozenset({"isolate"})
"""Keys of a ``[modules.<name>]`` section the kernel reads itself (``isolate``,
``docs/isolation.md``); the module's ``Config`` never sees them."""


def unknown_keys(model: Any, raw: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Keys of ``raw`` the pydantic ``model`` has no field for, each with a did-you-mean hint.

    Pydantic ignores them by default, so a typo (``retires = 3``) would silently
    leave the default in force. A model that wants free-form keys says
    ``model_config = ConfigDict(extra="allow")``.
    """
    if getattr(model, "model_config", {}).get("extra") == "allow":
        return []
    known: set[str] = set()
    for name, field in model.model_fields.items():
        known.add(name)
        for alias in (field.alias, field.validation_alias):
            if isinstance(alias, str):
                known.add(alias)
    found = []
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.6)
            found.append((str(key), f"; did you mean {close[0]!r}?" if close else ""))
    return found


def validate_config(spec: ModuleSpec, raw: Any) -> Any:
    """Validate a module's config section with its ``Config`` model.

    Raises:
        ConfigError: naming ``modules.<name>.<field>`` and the reason.
    """
    model = spec.config_model
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"modules.{spec.name}: the section must be a table")
    raw = {k: v for k, v in raw.items() if k not in KERNEL_KEYS}
    if model is None:
        if raw:
            keys = ", ".join(sorted(raw))
            raise ConfigError(
                f"modules.{spec.name}: module takes no config, got {keys}",
                details={"key": f"modules.{spec.name}"},
            )
        return None
    unknown = unknown_keys(model, raw)
    if unknown:
        key, hint = unknown[0]
        listed = ", ".join(k for k, _ in unknown)
        raise ConfigError(
            f"modules.{spec.name}.{key}: unknown key{hint}"
            + (f" (unknown: {listed})" if len(unknown) > 1 else ""),
            details={"key": f"modules.{spec.name}.{key}", "unknown": [k for k, _ in unknown]},
        )
    try:
        return model.model_validate(raw)
    except ValueError as exc:
        errors = getattr(exc, "errors", None)
        if callable(errors):
            first = errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            key = f"modules.{spec.name}" + (f".{where}" if where else "")
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e.get('loc', ())) or '(section)'}: {e.get('msg')}"
                for e in errors()
            )
            raise ConfigError(
                f"{key}: {first.get('msg')}" + (f" ({problems})" if len(errors()) > 1 else ""),
                details={"key": key, "errors": problems},
            ) from None
        raise ConfigError(f"modules.{spec.name}: {exc}") from None


async def run_hook(
    rec: Hooked,
    hook: str,
    timeout_s: float,
    *args: Any,
) -> None:
    """Run one lifecycle hook under its timeout, in a lifecycle context.

    Raises:
        LifecycleError: naming the module and the hook; the cause is chained.
    """
    fn: Callable[..., Awaitable[Any]] | None = getattr(rec.instance, hook, None)
    if fn is None:
        return
    token = _current.set(root_context())
    try:
        async with asyncio.timeout(timeout_s):
            await fn(*args)
    except TimeoutError as exc:
        raise LifecycleError(
            f"module {rec.name!r}: {hook} timed out after {timeout_s:g}s",
            details={"module": rec.name, "hook": hook, "reason": "timeout"},
        ) from exc
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        reason = str(exc) if isinstance(exc, OrganelleError) else f"{type(exc).__name__}: {exc}"
        raise LifecycleError(
            f"module {rec.name!r}: {hook} failed: {reason}",
            details={"module": rec.name, "hook": hook, "reason": reason},
        ) from exc
    finally:
        _current.reset(token)


async def quietly(rec: Hooked, hook: str, timeout_s: float, *args: Any) -> str | None:
    """Run a hook whose failure must not propagate (stop, abort); return the error."""
    try:
        await run_hook(rec, hook, timeout_s, *args)
    except LifecycleError as exc:
        log.exception("lifecycle hook failed")
        return str(exc)
    return None
