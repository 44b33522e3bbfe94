"""The module registry: one ``Slot`` per module, and every binding the slot owns.

A slot holds one module instance and everything that instance has bound into
the kernel: RPC routes, event subscriptions, job handlers, cron entries,
stream consumers, spawned tasks. Each kind is a ``Binder`` — a part of the
kernel that can attach a slot's bindings and detach them again — so adding,
removing and reloading a module is the same walk over the binders for every
kind (``Lifecycle`` does the walking). A new kind of binding is a new
``Binder``; nothing else changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from organelle.errors import NotFoundError
from organelle.kernel._states import ModuleInfo, ModuleState

if TYPE_CHECKING:
    from organelle.module import Module, ModuleSpec

__all__ = ["Binder", "Slot", "Slots", "Tasks"]


@dataclass(slots=True, eq=False)
class Slot:
    """One registered module: its instance, spec, config section, state and bindings.

    Attributes:
        bound: the binders holding this slot's bindings now, in attach order
            (detached in reverse).
    """

    instance: Module
    spec: ModuleSpec
    raw_config: dict[str, Any]
    state: ModuleState = ModuleState.LOADED
    error: str | None = None
    loaded: bool = False
    bound: list[Binder] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    def info(self) -> ModuleInfo:
        """A read-only view of this slot for the outside world."""
        spec = self.spec
        return ModuleInfo(
            name=spec.name,
            version=str(spec.version),
            state=self.state,
            requires=tuple(str(d) for d in spec.deps if not d.optional),
            optional=tuple(str(d) for d in spec.deps if d.optional),
            rpc_methods=tuple(sorted(spec.rpcs)),
            subscriptions=tuple(s.spec.pattern for s in spec.subscriptions),
            error=self.error,
            instance=self.instance,
        )


class Binder(Protocol):
    """One kind of binding (RPC routes, subscriptions, jobs, consumers, …).

    ``attach`` makes the slot's handlers of this kind reachable; ``detach``
    makes them unreachable again, leaving durable work (jobs, stream records)
    waiting in its queue. Both are idempotent per slot.
    """

    kind: str
    stage: str
    """``"route"``: bound before ``on_start``, unbound after ``on_stop`` (RPC routes, tasks);
    ``"listen"``: bound before ``on_start``, unbound before ``on_stop`` (subscriptions);
    ``"serve"``: bound once the module is active, unbound before it stops (the wire,
    jobs, cron, stream consumers)."""

    async def attach(self, slot: Slot) -> None:
        """Bind the slot's handlers of this kind (the instance in ``slot`` is live)."""
        ...

    async def detach(self, slot: Slot) -> None:
        """Unbind them; in-flight work may finish, new work waits or goes elsewhere."""
        ...


class Slots:
    """Every registered module by name, with the start levels of the last check."""

    __slots__ = ("_by_name", "levels")

    def __init__(self) -> None:
        self._by_name: dict[str, Slot] = {}
        self.levels: list[list[str]] = []

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def __getitem__(self, name: str) -> Slot:
        return self._by_name[name]

    def get(self, name: str) -> Slot | None:
        """The slot of ``name``, or ``None``."""
        return self._by_name.get(name)

    def require(self, name: str) -> Slot:
        """The slot of ``name``; raises ``NotFoundError`` naming it."""
        slot = self._by_name.get(name)
        if slot is None:
            raise NotFoundError(f"no module named {name!r}")
        return slot

    def items(self) -> Iterator[tuple[str, Slot]]:
        """``(name, slot)`` in registration order."""
        return iter(list(self._by_name.items()))

    def values(self) -> Iterator[Slot]:
        """Every slot in registration order."""
        return iter(list(self._by_name.values()))

    def put(self, slot: Slot) -> None:
        """Register ``slot`` (or replace the slot of the same name)."""
        self._by_name[slot.name] = slot

    def pop(self, name: str) -> Slot:
        """Unregister ``name`` and return its slot."""
        return self._by_name.pop(name)

    def is_active(self, name: str) -> bool:
        """Whether module ``name`` is registered here and serving."""
        slot = self._by_name.get(name)
        return slot is not None and slot.state is ModuleState.ACTIVE

    def order(self) -> list[str]:
        """Every name in start order (the levels), then any not yet placed."""
        placed = [n for level in self.levels for n in level]
        seen = set(placed)
        return placed + [n for n in self._by_name if n not in seen]

    def dependents(self, name: str) -> list[str]:
        """Active modules that require ``name``, directly or transitively, nearest last."""
        found: list[str] = []
        frontier = [name]
        while frontier:
            current = frontier.pop()
            for other, slot in self._by_name.items():
                if other in found or other == name or slot.state is not ModuleState.ACTIVE:
                    continue
                if any(d.name == current and not d.optional for d in slot.spec.deps):
                    found.append(other)
                    frontier.append(other)
        order = self.order()
        return sorted(found, key=order.index)


class Tasks:
    """Binder: the tasks a module spawned, cancelled once its ``on_stop`` returned."""

    kind = "tasks"
    stage = "route"

    async def attach(self, slot: Slot) -> None:
        """Nothing to bind: the module spawns its tasks itself (``Module.spawn``)."""

    async def detach(self, slot: Slot) -> None:
        await slot.instance._cancel_background()
