"""Hot config reload: validate everything, apply in dependency order, or roll back.

nginx's rule on SIGHUP, kept here: check the whole new config first; apply it;
if applying fails, roll back and keep working with the old one. So a reload
either changes every module whose section changed or none of them:

1. the ``[kernel]`` section, ``[routing]`` and every module's section are
   validated by their models; one invalid value rejects the reload before
   anything is touched (routing tables apply to the next call once it succeeds);
2. each module whose parsed section differs gets ``self.config = new`` and
   ``on_config_changed(old, new)``, in start (dependency) order;
3. if one of those hooks fails, the modules already changed get
   ``on_config_changed(new, old)`` in reverse order and their old config back.

``[kernel]`` keys that only take effect at start are reported as
``restart_required``, never silently ignored. The outcome is logged and emitted
as ``kernel.config.reloaded`` or ``kernel.config.rejected`` with the diff,
secrets masked.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from organelle.config.loader import merge
from organelle.config.policy import PolicyTable, parse_policies
from organelle.config.routing import RouteTable, parse_routing
from organelle.config.secrets import dump_model, mask, redact, settings_dump
from organelle.config.settings import KernelSettings, parse_settings
from organelle.errors import ConfigError
from organelle.kernel import _states as lc
from organelle.kernel._states import ModuleState

if TYPE_CHECKING:
    from collections.abc import Callable

    from organelle.kernel._calls import Dispatcher
    from organelle.kernel._lifecycle import Lifecycle
    from organelle.kernel._policy import Policies
    from organelle.kernel._router import Router
    from organelle.kernel._secrets import Secrets
    from organelle.kernel._slots import Slot

__all__ = ["HOT_KERNEL_KEYS", "REJECTED", "RELOADED", "ReloadResult", "Reloadable", "reload_config"]

log = logging.getLogger("organelle.config")

RELOADED = "kernel.config.reloaded"
REJECTED = "kernel.config.rejected"
# [kernel] keys read on every use; every other key is fixed at start.
HOT_KERNEL_KEYS = frozenset(
    {"log_level", "log_levels", "call_timeout_s", "hook_timeout_s", "drain_timeout_s",
     "health_timeout_s"}
)  # fmt: skip


class Reloadable(Protocol):
    """What a reload reads and swaps on the kernel (the façade hands itself over)."""

    settings: KernelSettings
    config: dict[str, Any]
    config_defaults: dict[str, Any]
    config_loader: Callable[[], dict[str, Any]] | None
    _life: Lifecycle
    _dispatcher: Dispatcher
    _policies: Policies
    _secrets: Secrets

    def _policies_changed(self) -> None: ...

    _router: Router


@dataclass(frozen=True, slots=True, kw_only=True)
class ReloadResult:
    """What a successful reload changed.

    Attributes:
        changed: modules whose section changed, in the order they were applied.
        diff: ``{"key", "old", "new"}`` per changed key, secrets masked.
        restart_required: ``[kernel]`` keys that changed but apply only at start.
    """

    changed: tuple[str, ...] = ()
    diff: tuple[dict[str, Any], ...] = ()
    restart_required: tuple[str, ...] = ()


@dataclass(slots=True)
class _Step:
    rec: Slot
    raw: dict[str, Any]
    old: Any
    new: Any
    notified: bool = False


@dataclass(slots=True)
class _Plan:
    config: dict[str, Any]
    settings: KernelSettings
    policies: PolicyTable | None = None  # set when [policies] changed
    routing: dict[str, RouteTable] = field(default_factory=dict)
    steps: list[_Step] = field(default_factory=list)
    raws: dict[str, dict[str, Any]] = field(default_factory=dict)
    diff: list[dict[str, Any]] = field(default_factory=list)
    restart_required: list[str] = field(default_factory=list)


async def reload_config(
    kernel: Reloadable, config: Mapping[str, Any] | None = None
) -> ReloadResult:
    """Apply ``config`` (default: re-read the kernel's config source) to a kernel.

    Raises:
        ConfigError: invalid config or a failing ``on_config_changed``; nothing
            stays applied and the kernel keeps running on the old config.
    """
    async with kernel._life.lock:
        try:
            source = _source(kernel, config)
            plan = _plan(kernel, await kernel._secrets.resolve_async(source))
            await _apply(kernel, plan)
        except ConfigError as exc:
            log.warning("config reload rejected: %s", exc)
            await announce(kernel, REJECTED, {"error": redact(str(exc)), **_public(exc.details)})
            raise
        kernel._secrets.adopt(source)
    result = ReloadResult(
        changed=tuple(s.rec.name for s in plan.steps),
        diff=tuple(plan.diff),
        restart_required=tuple(plan.restart_required),
    )
    if result.restart_required:
        log.warning(
            "config keys changed that apply only after a restart: %s",
            ", ".join(f"kernel.{k}" for k in result.restart_required),
        )
    log.info(
        "config reloaded: %d key(s) changed, modules %s",
        len(result.diff),
        ", ".join(result.changed) or "unchanged",
    )
    await announce(
        kernel,
        RELOADED,
        {
            "changed": list(result.changed),
            "diff": list(result.diff),
            "restart_required": list(result.restart_required),
        },
    )
    return result


async def preview(kernel: Reloadable, config: Mapping[str, Any] | None = None) -> ReloadResult:
    """What ``reload_config`` would change, validated the same way; nothing is applied.

    Raises:
        ConfigError: the new config is invalid (``details["errors"]`` lists why).
    """
    source = _source(kernel, config)
    plan = _plan(kernel, await kernel._secrets.resolve_async(source))
    return ReloadResult(
        changed=tuple(s.rec.name for s in plan.steps),
        diff=tuple(plan.diff),
        restart_required=tuple(plan.restart_required),
    )


def _source(kernel: Reloadable, config: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The new config as written (``secret://`` references not yet resolved)."""
    if config is not None:
        return config
    if kernel.config_loader is None:
        raise ConfigError(
            "no config source to re-read: pass the new config, or build the kernel "
            "with Kernel.from_config"
        )
    return kernel.config_loader()


def _public(details: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in details.items() if k in ("diff", "module", "rolled_back", "errors")}


def _plan(kernel: Reloadable, config: Mapping[str, Any] | None) -> _Plan:
    """Validate the whole new config and work out what changes; touches nothing."""
    if config is None:
        if kernel.config_loader is None:
            raise ConfigError(
                "no config source to re-read: pass the new config, or build the kernel "
                "with Kernel.from_config"
            )
        config = kernel.config_loader()
    new = merge(kernel.config_defaults, config)
    plan = _Plan(config=new, settings=kernel.settings)
    _plan_kernel(kernel, plan, parse_settings(new.get("kernel")))
    plan.routing = parse_routing(new.get("routing"))  # applied live: weights, rules, mirror
    plan.diff += _diff("routing", kernel.config.get("routing") or {}, new.get("routing") or {})
    sections = new.get("modules") or {}
    if not isinstance(sections, dict):
        raise ConfigError("modules: the [modules] section must be a table of tables")
    errors = _plan_modules(kernel, plan, sections)
    try:
        _plan_policies(kernel, plan, new.get("policies"))
    except ConfigError as exc:
        errors.append(str(exc))
    for section in sections:
        if section not in kernel._life.slots:
            log.warning("config section [modules.%s] names no loaded module", section)
    if errors:
        raise ConfigError("; ".join(errors), details={"errors": errors, "diff": plan.diff})
    return plan


def _plan_policies(kernel: Reloadable, plan: _Plan, section: Any) -> None:
    """``[policies]`` is validated with the rest and applied live (docs/resilience.md)."""
    old = kernel.config.get("policies") or {}
    new = section or {}
    table = parse_policies(new)
    if old != new:
        plan.policies = table
        plan.diff += _diff("policies", old, new)


def _plan_kernel(kernel: Reloadable, plan: _Plan, fresh: KernelSettings) -> None:
    """Hot ``[kernel]`` keys go into the new settings; the others wait for a restart."""
    old_k, new_k = settings_dump(kernel.settings), settings_dump(fresh)
    hot: dict[str, Any] = {}
    for key in sorted(old_k):
        if old_k[key] != new_k[key]:
            plan.diff.append(_change(f"kernel.{key}", old_k[key], new_k[key], by_name=True))
            if key in HOT_KERNEL_KEYS:
                hot[key] = new_k[key]
            else:
                plan.restart_required.append(key)
    plan.settings = msgspec.structs.replace(kernel.settings, **hot)


def _plan_modules(kernel: Reloadable, plan: _Plan, sections: dict[str, Any]) -> list[str]:
    """Validate every module's section (all errors, not the first); plan the changed ones."""
    errors: list[str] = []
    slots = kernel._life.slots
    order = [n for level in (slots.levels or kernel._life.check()) for n in level]
    for name in [*order, *(n for n in slots if n not in order)]:
        rec = slots[name]
        raw = sections.get(name) or {}
        try:
            parsed = lc.validate_config(rec.spec, raw)
        except ConfigError as exc:
            errors.append(str(exc))
            continue
        plan.raws[name] = raw
        old_dump, new_dump = dump_model(rec.instance.config), dump_model(parsed)
        if old_dump != new_dump:
            plan.steps.append(_Step(rec, raw, rec.instance.config, parsed))
            plan.diff += _diff(f"modules.{name}", old_dump, new_dump)
    return errors


async def _apply(kernel: Reloadable, plan: _Plan) -> None:
    """Run ``on_config_changed`` in order; on a failure undo what was done and raise."""
    done: list[_Step] = []
    try:
        for step in plan.steps:
            rec = step.rec
            rec.instance.config = step.new
            done.append(step)
            if kernel._life.running and rec.state is ModuleState.ACTIVE:
                step.notified = True
                await lc.run_hook(
                    rec, "on_config_changed", kernel._life.timeout(rec), step.old, step.new
                )
    except BaseException as exc:  # a failed hook, or a cancelled reload: undo either way
        failed = done.pop() if done else None
        if failed is not None:
            failed.rec.instance.config = failed.old
        await _rollback(kernel, done)
        if not isinstance(exc, Exception):
            raise  # cancelled: rolled back, and the cancellation goes on
        raise ConfigError(
            f"config reload rolled back: {redact(str(exc))}",
            details={
                "module": failed.rec.name if failed else None,
                "rolled_back": [s.rec.name for s in reversed(done)],
                "diff": plan.diff,
            },
        ) from exc
    for name, raw in plan.raws.items():
        kernel._life.slots[name].raw_config = raw
    kernel.config = plan.config
    kernel.settings = plan.settings
    kernel._router.routing.configure(plan.routing)
    kernel._dispatcher.call_timeout_s = plan.settings.call_timeout_s
    if plan.policies is not None:
        kernel._policies.reload(plan.policies)
        kernel._policies_changed()
    if any(d["key"] in ("kernel.log_level", "kernel.log_levels") for d in plan.diff):
        from organelle.observability.logging import apply_levels

        apply_levels(plan.settings)


async def _rollback(kernel: Reloadable, done: list[_Step]) -> None:
    for step in reversed(done):
        step.rec.instance.config = step.old
        if step.notified:
            rec = step.rec
            error = await lc.quietly(
                rec, "on_config_changed", kernel._life.timeout(rec), step.new, step.old
            )
            if error is not None:
                log.error("rolling back the config of %r failed too: %s", rec.name, error)


def _change(key: str, old: Any, new: Any, *, by_name: bool = False) -> dict[str, Any]:
    leaf = key.rsplit(".", 1)[-1]
    masked_old, masked_new = mask({leaf: old}, by_name=by_name), mask({leaf: new}, by_name=by_name)
    return {"key": key, "old": masked_old[leaf], "new": masked_new[leaf]}


def _diff(prefix: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Changed leaves between two nested dicts, as ``{"key", "old", "new"}``, secrets masked."""
    out: list[dict[str, Any]] = []
    for key in sorted({*old, *new}, key=str):
        a, b = old.get(key), new.get(key)
        path = f"{prefix}.{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += _diff(path, a, b)
        elif a != b or (key in old) != (key in new):
            out.append(_change(path, a, b))
    return out


async def announce(kernel: Reloadable, topic: str, payload: dict[str, Any]) -> None:
    """Report a kernel event to the listeners and, while running, local subscribers."""
    if kernel._life.running:
        await kernel._dispatcher.announce(topic, payload)
    else:
        kernel._dispatcher.report_lifecycle(topic, payload)
