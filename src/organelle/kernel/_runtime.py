"""Changing the set of running modules: add, remove (with cascade), reload.

A mixin of ``Kernel``; every change is checked against the running graph
first, so a refused change leaves everything as it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from organelle.config import import_object
from organelle.errors import DefinitionError, DependencyError, LifecycleError, NotFoundError
from organelle.kernel import _lifecycle as lc
from organelle.kernel._lifecycle import ModuleState, Record
from organelle.kernel._phases import Phases
from organelle.module import Module, ModuleSpec, describe
from organelle.module._graph import Node, start_levels

if TYPE_CHECKING:
    import asyncio

    from organelle.module import KernelAPI

__all__ = ["ModuleRef", "Runtime"]

ModuleRef = type[Module] | Module | str


class Runtime(Phases):
    """``add_module``, ``remove_module``, ``reload_module`` (state lives on ``Kernel``)."""

    config: dict[str, Any]
    _levels: list[list[str]]
    _lock: asyncio.Lock
    _running: bool

    def _make_record(self, ref: ModuleRef) -> Record:
        raise NotImplementedError  # pragma: no cover - Kernel defines it

    async def add_module(self, module: ModuleRef, config: Mapping[str, Any] | None = None) -> None:
        """Register and start a module while the kernel runs.

        Raises:
            DefinitionError: a module of that name exists.
            DependencyError: its dependencies are not active or do not match.
            LifecycleError: its ``on_load``/``on_start`` failed (it is not kept).
        """
        async with self._lock:
            if config is not None:
                spec_name = self._spec_of(module).name
                self.config.setdefault("modules", {})[spec_name] = dict(config)
            rec = self._make_record(module)
            if rec.name in self._records:
                raise DefinitionError(f"a module named {rec.name!r} is already registered")
            present = {n: r.spec.version for n, r in self._records.items() if self._is_active(n)}
            for dep in rec.spec.deps:
                if not dep.optional and dep.name in self._records and dep.name not in present:
                    raise DependencyError(
                        f"module {rec.name!r} requires {dep.name!r}, which is not active"
                    )
            start_levels(
                {rec.name: Node(rec.name, rec.spec.version, rec.spec.deps)}, present=present
            )
            self._records[rec.name] = rec
            self._levels.append([rec.name])
            try:
                if self._running:
                    await self._load([[rec.name]])
                    await self._start_levels([[rec.name]])
            except BaseException:
                del self._records[rec.name]
                self._levels.pop()
                raise

    def _spec_of(self, module: ModuleRef) -> ModuleSpec:
        if isinstance(module, str):
            module = import_object(module)
        cls = module if isinstance(module, type) else type(module)
        return describe(cls)  # type: ignore[arg-type]

    def dependents(self, name: str) -> list[str]:
        """Active modules that require ``name``, directly or transitively, nearest last."""
        found: list[str] = []
        frontier = [name]
        while frontier:
            current = frontier.pop()
            for other, rec in self._records.items():
                if other in found or other == name or not self._is_active(other):
                    continue
                if any(d.name == current and not d.optional for d in rec.spec.deps):
                    found.append(other)
                    frontier.append(other)
        order = [n for level in self._levels for n in level]
        return sorted(found, key=order.index)

    async def remove_module(self, name: str, *, cascade: bool = False) -> list[str]:
        """Stop and unregister a module; return the names removed.

        Refused while active modules require it, unless ``cascade``, which
        stops and removes those dependents first (in reverse order).

        Raises:
            NotFoundError: no such module.
            DependencyError: active dependents and no cascade (they are named).
        """
        async with self._lock:
            if name not in self._records:
                raise NotFoundError(f"no module named {name!r}")
            dependents = self.dependents(name)
            if dependents and not cascade:
                raise DependencyError(
                    f"cannot remove {name!r}: required by active modules {', '.join(dependents)}",
                    details={"module": name, "dependents": dependents},
                )
            removed = [*reversed(dependents), name]
            for victim in removed:
                if self._is_active(victim):
                    await self._stop_one(self._records[victim])
                del self._records[victim]
            self._levels = [[n for n in lvl if n not in removed] for lvl in self._levels]
            self._levels = [lvl for lvl in self._levels if lvl]
            return removed

    async def reload_module(
        self,
        name: str,
        module: ModuleRef | None = None,
        *,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        """Replace a running module by a new instance and/or config.

        The new instance is loaded and started while the old one keeps
        serving; only then are calls and events switched over and the old one
        stopped. If the new one fails, it is aborted and the old one never
        stopped serving.

        Raises:
            NotFoundError: no such module.
            DefinitionError: the replacement has another name.
            DependencyError: the new version breaks a dependent's requirement.
            LifecycleError: the new instance failed to start (the old one serves on).
        """
        async with self._lock:
            old = self._records.get(name)
            if old is None:
                raise NotFoundError(f"no module named {name!r}")
            ref: ModuleRef = type(old.instance) if module is None else module
            spec = self._spec_of(ref)
            if spec.name != name:
                raise DefinitionError(f"cannot reload {name!r} with module {spec.name!r}")
            section = dict(config) if config is not None else old.raw_config
            parsed = lc.validate_config(spec, section)
            instance = ref() if isinstance(ref, type) else ref
            if isinstance(instance, str):  # pragma: no cover - resolved by _spec_of
                raise DefinitionError(f"cannot reload with {instance!r}")
            if instance is old.instance:
                instance = type(instance)()
            instance._attach(cast("KernelAPI", self), parsed)
            new = Record(instance=instance, spec=spec, raw_config=section)
            nodes = {
                n: Node(n, (spec.version if n == name else r.spec.version), r.spec.deps)
                for n, r in self._records.items()
            }
            nodes[name] = Node(name, spec.version, spec.deps)
            start_levels(nodes)
            if not self._running or old.state is not ModuleState.ACTIVE:
                self._records[name] = new
                self.config.setdefault("modules", {})[name] = section
                return
            try:
                await lc.run_hook(new, "on_load", self._timeout(new))
                new.loaded = True
                await lc.run_hook(new, "on_start", self._timeout(new))
            except LifecycleError as exc:
                await lc.quietly(new, "on_abort", self._timeout(new), exc)
                raise
            self._bus.unsubscribe(name)
            self._unroute(name)
            old.state = ModuleState.STOPPING
            new.state = ModuleState.ACTIVE
            self._records[name] = new
            self._route(new)
            if self._transport is not None:
                await self._transport.expose(new.spec)
            self.config.setdefault("modules", {})[name] = section
            await lc.quietly(old, "on_stop", self._timeout(old))
            old.state = ModuleState.STOPPED
            await self._set_state(new, ModuleState.ACTIVE)
