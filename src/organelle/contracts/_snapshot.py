"""A snapshot of an app's public contract, built from module classes alone.

Only the classes are read (``describe``): nothing is started and no hook runs,
so a snapshot can be taken in CI from the same target ``organelle run`` takes.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from organelle.codec import to_builtins
from organelle.contracts._events import event_types_part
from organelle.contracts._format import FORMAT, parse, to_dict
from organelle.contracts._render import Hints, fill, render
from organelle.errors import DefinitionError
from organelle.module import Module, ModuleSpec, describe

if TYPE_CHECKING:
    from organelle.kernel import Kernel
    from organelle.module._signature import ParamsContract

__all__ = ["json_default", "return_hint", "snapshot", "specs_of"]


def specs_of(source: Kernel | Iterable[ModuleSpec | type[Module]]) -> list[ModuleSpec]:
    """The specs of a kernel's modules, or of the given classes or specs.

    Raises:
        DefinitionError: a class is not a valid module, or two modules share a name.
    """
    from organelle.kernel import Kernel

    if isinstance(source, Kernel):
        return [describe(type(source.module(name))) for name in source.modules()]
    specs = [item if isinstance(item, ModuleSpec) else describe(item) for item in source]
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise DefinitionError(f"two modules are named {spec.name!r}")
        seen.add(spec.name)
    return specs


def json_default(value: Any) -> Any:
    """``value`` as JSON-able data, or ``msgspec.UNSET`` when JSON cannot hold it."""
    try:
        return to_builtins(value)
    except (TypeError, ValueError, NotImplementedError, OverflowError):
        return msgspec.UNSET  # not JSON-able (a sentinel object, say): left out


def _params(contract: ParamsContract, hints: Hints) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in contract.fields:
        param: dict[str, Any] = {"required": len(field) == 2, "schema": hints.add(field[1])}  # noqa: PLR2004 - (name, hint) means required
        if len(field) == 3:  # noqa: PLR2004 - (name, hint, default)
            default = json_default(field[2])
            if default is not msgspec.UNSET:
                param["default"] = default
        out[field[0]] = param
    return out


def return_hint(spec: ModuleSpec, attr: str) -> Any:
    """The return type a handler declares, or None when it does not annotate one."""
    declared = typing.get_type_hints(getattr(spec.cls, attr), include_extras=True)
    return declared.get("return")


def _returns(spec: ModuleSpec, attr: str, hints: Hints) -> Any:
    """The result's schema slot, or None when the method does not annotate it."""
    hint = return_hint(spec, attr)
    return None if hint is None else hints.add(hint)


def _module(spec: ModuleSpec, hints: Hints) -> dict[str, Any]:
    rpcs = {
        method: {"params": _params(m.contract, hints), "returns": _returns(spec, m.attr, hints)}
        for method, m in spec.rpcs.items()
    }
    events = [
        {"pattern": s.spec.pattern, "handler": s.attr, "payload": hints.payload(s.contract.target)}
        for s in spec.subscriptions
    ]
    consumers = [
        {
            "stream": c.options.stream,
            "group": c.options.group or spec.name,
            "handler": c.attr,
            "payload": hints.payload(c.contract.target),
        }
        for c in spec.consumers
    ]
    return {
        "version": str(spec.version),
        "rpc": rpcs,
        "jobs": {name: {"params": _params(j.contract, hints)} for name, j in spec.jobs.items()},
        "events": sorted(events, key=lambda e: (e["pattern"], e["handler"])),
        "consumers": sorted(consumers, key=lambda c: (c["stream"], c["group"], c["handler"])),
    }


def snapshot(source: Kernel | Iterable[ModuleSpec | type[Module]]) -> dict[str, Any]:
    """Describe every module's public contract as JSON-able data with sorted keys.

    Covers each module's name and version, its RPC methods (parameters with
    their JSON Schema, whether required, defaults; the return type when
    annotated), jobs (parameters), ``@on`` subscriptions and ``@consume``
    handlers (payload schema); and the app's ``@event`` types (newest version,
    data schema, key fields, the versions upcasters lift from; see
    ``_events``). Named types live once in ``schemas``.

    Args:
        source: a built (not necessarily started) Kernel, or module classes or specs.

    Example::

        from organelle.contracts import dumps, snapshot

        Path("contract.json").write_text(dumps(snapshot([Pricing, Inventory])))
    """
    hints = Hints()
    specs = specs_of(source)
    modules = {spec.name: _module(spec, hints) for spec in specs}
    events = event_types_part(specs, hints)
    rendered, table = render(hints.hints)
    data = {
        "format": FORMAT,
        "modules": fill(modules, rendered),
        "event_types": fill(events, rendered),
        "schemas": table,
    }
    # Read back through the file's own shape: what is written is what loads() accepts.
    return to_dict(parse(data))
