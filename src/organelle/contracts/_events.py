"""The app's ``@event`` types in a snapshot (``_compare`` checks their versions).

An app's event types are the ``@event`` classes its modules refer to: in a
handler's signature (an ``@on`` or ``@consume`` payload, an ``@rpc`` or
``@job`` parameter or result), or in the namespace of the Python module that
defines a module class — an emitter constructs the events it emits, so it
defines or imports their class there. Each is written at its newest version,
with the schema of its data, its key fields and the versions registered
upcasters lift from (the upcaster registry as the loaded app left it).

Stored events and records outlive a deploy, so a type's data is an input
that must keep accepting what the old version wrote: a schema that accepts
less at the same version is breaking, and so is a new version that old data
cannot reach through upcasters.
"""

from __future__ import annotations

import sys
import typing
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from organelle.envelope import EventType, event_type, upcasters

if TYPE_CHECKING:
    from organelle.contracts._render import Hints
    from organelle.module import ModuleSpec

__all__ = ["app_event_types", "event_types_part"]


def _walk(hint: Any, found: dict[tuple[str, int], EventType]) -> None:
    meta = event_type(hint) if isinstance(hint, type) else None
    if meta is not None:
        found[meta.name, meta.version] = meta
    for arg in typing.get_args(hint):
        _walk(arg, found)


def _hints_of(spec: ModuleSpec) -> Iterable[Any]:
    for sub in spec.subscriptions:
        yield sub.contract.target
    for consumer in spec.consumers:
        yield consumer.contract.target
    for method in spec.rpcs.values():
        yield from method.contract.types.values()
        yield typing.get_type_hints(getattr(spec.cls, method.attr)).get("return")
    for job in spec.jobs.values():
        yield from job.contract.types.values()


def app_event_types(specs: Iterable[ModuleSpec]) -> list[EventType]:
    """The newest version of each event type the modules refer to, by name."""
    found: dict[tuple[str, int], EventType] = {}
    for spec in specs:
        for hint in _hints_of(spec):
            _walk(hint, found)
        defined_in = sys.modules.get(spec.cls.__module__)
        for value in vars(defined_in).values() if defined_in is not None else ():
            if isinstance(value, type):
                _walk(value, found)
    newest: dict[str, EventType] = {}
    for (name, version), meta in found.items():
        held = newest.get(name)
        if held is None or version > held.version:
            newest[name] = meta
    return [newest[name] for name in sorted(newest)]


def event_types_part(specs: Iterable[ModuleSpec], hints: Hints) -> dict[str, Any]:
    """The snapshot's ``event_types``, schemas as slots of ``hints``."""
    return {
        meta.name: {
            "version": meta.version,
            "data": hints.add(meta.cls),
            "key": list(meta.key),
            "upcasters": sorted(upcasters(meta.name)),
        }
        for meta in app_event_types(specs)
    }
