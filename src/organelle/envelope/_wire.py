"""Wire types: the class of a value that crossed the wire, named so the receiver can rebuild it.

A local call returns what the handler returned (a msgspec Struct, a pydantic
model, a dataclass). Over the wire the value is encoded, and without more
the caller would get a dict. So the serving node names the class of a
result in a header (``Organelle-Type``) and the caller converts the decoded
value back into the class it knows under that name.

Names are looked up, never imported: a name resolves only to a class this
process has registered — every ``@event`` type, and the classes the ``@rpc``
methods of the module classes defined in this process declare as their
return type (read lazily, on the first miss). An unknown name leaves the
value as decoded. Only the result's own class is named (not the items of a
``list[Quote]``).
"""

from __future__ import annotations

import sys
import typing
from typing import Any

import msgspec

from organelle.envelope._event import event_type

__all__ = ["convert", "rebuild", "register", "remember_module", "wire_name", "wire_type"]

_BY_NAME: dict[str, type] = {}
_MODULES: list[type] = []  # module classes whose RPC return types are not read yet
_SIMPLE = (str, int, float, bool, bytes, list, dict, tuple, type(None))


def wire_name(value: object) -> str | None:
    """The name that travels with ``value``, or ``None`` for builtins and plain data."""
    cls = type(value)
    if cls in _SIMPLE:
        return None
    meta = event_type(cls)
    if meta is not None:
        return meta.ref
    if _is_model(cls):
        return f"{cls.__module__}:{cls.__qualname__}"
    return None


def wire_type(name: str) -> type | None:
    """The class this process knows under ``name`` (never imports anything)."""
    cls = _BY_NAME.get(name)
    if cls is None and _MODULES:
        _read_modules()
        cls = _BY_NAME.get(name)
    if cls is None and "@" in name:
        from organelle.envelope._event import registered

        type_name, _, version = name.rpartition("@")
        meta = registered(type_name, int(version)) if version.isdigit() else None
        cls = None if meta is None else meta.cls
    return cls


def register(cls: type) -> None:
    """Make ``cls`` known by its wire name."""
    if _is_model(cls):
        _BY_NAME[f"{cls.__module__}:{cls.__qualname__}"] = cls


def remember_module(cls: type) -> None:
    """Note a module class: its RPC return types are registered on the first lookup miss."""
    _MODULES.append(cls)


def _read_modules() -> None:
    pending = list(_MODULES)
    _MODULES.clear()
    for module in pending:
        for attr in dir(module):
            fn = getattr(module, attr, None)
            if getattr(fn, "__organelle_rpc__", None) is None:
                continue
            try:
                hints = typing.get_type_hints(fn)
            except Exception:  # noqa: S112 - an unresolvable hint: nothing to register
                continue
            returned = hints.get("return")
            if isinstance(returned, type):
                register(returned)


def _is_model(cls: type) -> bool:
    if hasattr(cls, "__struct_fields__") or hasattr(cls, "__dataclass_fields__"):
        return True
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(cls, type) and issubclass(cls, pydantic.BaseModel)


def rebuild(type_name: str | None, value: Any) -> Any:
    """``value`` as decoded, rebuilt as the class ``type_name`` names here (else unchanged)."""
    if type_name is None or value is None:
        return value
    cls = wire_type(type_name)
    return value if cls is None else convert(value, cls)


def convert(value: Any, cls: type) -> Any:
    """``value`` as decoded, rebuilt as ``cls``; the value unchanged if it does not fit."""
    try:
        validate = getattr(cls, "model_validate", None)
        if validate is not None:
            return validate(value)
        return msgspec.convert(value, cls, strict=False)
    except (msgspec.ValidationError, ValueError, TypeError):
        return value
