"""Changing the set of running modules: add, remove (with cascade), reload.

Every change is checked against the running graph first, so a refused change
leaves everything as it was; then it goes through the same per-slot steps as
start and stop (``Lifecycle``), so each kind of binding — routes,
subscriptions, the wire, jobs, cron, stream consumers, tasks — follows it.

Durable work addressed to a module this node no longer hosts waits in its
queue (jobs) or its consumer group (stream records): it is neither run nor
failed nor dead-lettered, and runs once a module serving it is added, here
or on another node.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from organelle.config import import_object
from organelle.errors import DefinitionError, DependencyError, LifecycleError
from organelle.kernel import _states as st
from organelle.kernel._slots import Slot
from organelle.kernel._states import ModuleState
from organelle.module import Module, ModuleSpec, describe
from organelle.module._graph import Node, start_levels

if TYPE_CHECKING:
    from organelle.kernel._lifecycle import Lifecycle

__all__ = ["Changes", "ModuleRef"]

ModuleRef = type[Module] | Module | str


def spec_of(module: ModuleRef) -> ModuleSpec:
    """The spec of a module class, instance or import string."""
    if isinstance(module, str):
        module = import_object(module)
    cls = module if isinstance(module, type) else type(module)
    return describe(cls)  # type: ignore[arg-type]


class Changes:
    """``add_module``, ``remove_module``, ``reload_module`` on a running (or idle) kernel."""

    def __init__(
        self,
        life: Lifecycle,
        config: Callable[[], dict[str, Any]],
        make_slot: Callable[[ModuleRef], Slot],
        attach: Callable[[Module, Any], None],
    ) -> None:
        self._life = life
        self._config = config
        self._make_slot = make_slot
        self._attach = attach

    async def add(self, module: ModuleRef, config: Mapping[str, Any] | None = None) -> None:
        """Register a module and, if the kernel runs, start and serve it (see ``Kernel``)."""
        life = self._life
        slots = life.slots
        async with life.lock:
            if config is not None:
                self._config().setdefault("modules", {})[spec_of(module).name] = dict(config)
            slot = self._make_slot(module)
            if slot.name in slots:
                raise DefinitionError(f"a module named {slot.name!r} is already registered")
            present = {n: s.spec.version for n, s in slots.items() if slots.is_active(n)}
            for dep in slot.spec.deps:
                if not dep.optional and dep.name in slots and dep.name not in present:
                    raise DependencyError(
                        f"module {slot.name!r} requires {dep.name!r}, which is not active"
                    )
            start_levels(
                {slot.name: Node(slot.name, slot.spec.version, slot.spec.deps)}, present=present
            )
            slots.put(slot)
            slots.levels.append([slot.name])
            try:
                if life.running:
                    await life.load([[slot.name]])
                    await life.start_levels([[slot.name]], serve=True)
            except BaseException:
                slots.pop(slot.name)
                slots.levels.pop()
                raise

    async def remove(self, name: str, *, cascade: bool = False) -> list[str]:
        """Stop and unregister a module (and, with ``cascade``, its dependents first)."""
        life = self._life
        slots = life.slots
        async with life.lock:
            slots.require(name)
            dependents = slots.dependents(name)
            if dependents and not cascade:
                raise DependencyError(
                    f"cannot remove {name!r}: required by active modules {', '.join(dependents)}",
                    details={"module": name, "dependents": dependents},
                )
            removed = [*reversed(dependents), name]
            for victim in removed:
                if slots.is_active(victim):
                    await life.stop_one(slots[victim])
                slots.pop(victim)
            slots.levels = [[n for n in lvl if n not in removed] for lvl in slots.levels]
            slots.levels = [lvl for lvl in slots.levels if lvl]
            return removed

    async def reload(
        self,
        name: str,
        module: ModuleRef | None = None,
        *,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        """Replace a module's instance and/or config; the old one serves until the switch."""
        life = self._life
        slots = life.slots
        async with life.lock:
            old = slots.require(name)
            ref: ModuleRef = type(old.instance) if module is None else module
            spec = spec_of(ref)
            if spec.name != name:
                raise DefinitionError(f"cannot reload {name!r} with module {spec.name!r}")
            section = dict(config) if config is not None else old.raw_config
            parsed = st.validate_config(spec, section)
            instance = ref() if isinstance(ref, type) else ref
            if isinstance(instance, str):  # pragma: no cover - resolved by spec_of
                raise DefinitionError(f"cannot reload with {instance!r}")
            if instance is old.instance:
                instance = type(instance)()
            self._attach(instance, parsed)
            new = Slot(instance=instance, spec=spec, raw_config=section)
            nodes = {n: Node(n, s.spec.version, s.spec.deps) for n, s in slots.items()}
            nodes[name] = Node(name, spec.version, spec.deps)
            start_levels(nodes)
            modules_cfg = self._config().setdefault("modules", {})
            if not life.running or old.state is not ModuleState.ACTIVE:
                slots.put(new)
                modules_cfg[name] = section
                return
            try:
                await st.run_hook(new, "on_load", life.timeout(new))
                new.loaded = True
                await st.run_hook(new, "on_start", life.timeout(new))
            except LifecycleError as exc:
                await st.quietly(new, "on_abort", life.timeout(new), exc)
                await instance._cancel_background()
                raise
            await self._switch(old, new)
            modules_cfg[name] = section
            # The old instance stops last: its bindings are already the new one's.
            error = await st.quietly(old, "on_stop", life.timeout(old))
            await old.instance._cancel_background()
            old.state = ModuleState.FAILED if error else ModuleState.STOPPED
            await life.set_state(new, ModuleState.ACTIVE)

    async def _switch(self, old: Slot, new: Slot) -> None:
        """Move every binding of ``old`` to ``new``: route and listen first, then serve.

        A binder with a ``switch`` method moves its bindings itself (jobs and
        consumers look the live instance up per run, the wire re-announces);
        the others — routes, subscriptions — are detached and attached without
        a suspension point between, so no call or event sees the module missing.
        The old instance's tasks are left to end with it.
        """
        life = self._life
        old.state = ModuleState.STOPPING
        new.state = ModuleState.ACTIVE
        life.slots.put(new)
        for binder in life.binders:
            if binder not in old.bound:
                continue
            old.bound.remove(binder)
            switch = getattr(binder, "switch", None)
            if switch is not None:
                await switch(old, new)
            elif binder.kind != "tasks":
                await binder.detach(old)
                await binder.attach(new)
            new.bound.append(binder)
