"""Typed, versioned events: a class names its event type, version and business key.

``@event("order.placed", version=2, key=("order_id",))`` on a msgspec Struct
or a pydantic model makes it an event type: ``emit(OrderPlaced(...))`` needs
no topic string, the receiver gets the class back locally and remotely alike,
and the event id is a UUIDv5 over the app namespace, the type, the version
and the key's values, so a producer that retries makes the same id.

Event types live in one registry per process, by ``(name, version)``: a node
decodes what it receives into the class it knows under that name, and the
AsyncAPI export and ``organelle contract check`` read the same registry.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from organelle.errors import DefinitionError, ValidationError

__all__ = ["EventType", "event", "event_topic", "event_type", "event_types", "registered"]

T = TypeVar("T", bound=type)

# A CloudEvents type is free text; organelle keeps it a topic: dotted words.
_NAME = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_ATTR = "__organelle_event__"


@dataclass(frozen=True, slots=True)
class EventType:
    """What ``@event`` says about a class.

    ``key`` names the fields whose values identify the business fact (the
    deterministic id is made from them); ``secret`` and ``personal`` name
    fields to encrypt on the wire and mask in logs and exports.
    """

    name: str
    version: int
    cls: type
    key: tuple[str, ...] = ()
    secret: tuple[str, ...] = ()
    personal: tuple[str, ...] = ()
    description: str = ""

    @property
    def ref(self) -> str:
        """``name@version``: how headers and exports refer to the type."""
        return f"{self.name}@{self.version}"

    def key_values(self, obj: object) -> tuple[Any, ...]:
        """The key fields' values of an instance, in declared order."""
        return tuple(getattr(obj, f) for f in self.key)


_REGISTRY: dict[tuple[str, int], EventType] = {}


def _fields(cls: type) -> tuple[str, ...] | None:
    """Field names of a msgspec Struct, pydantic model or dataclass; ``None`` if unknown."""
    struct_fields = getattr(cls, "__struct_fields__", None)
    if struct_fields is not None:
        return tuple(struct_fields)
    model_fields = getattr(cls, "model_fields", None)
    if isinstance(model_fields, dict):
        return tuple(model_fields)
    dc_fields = getattr(cls, "__dataclass_fields__", None)
    if isinstance(dc_fields, dict):
        return tuple(dc_fields)
    return None


def event(
    name: str,
    *,
    version: int = 1,
    key: tuple[str, ...] | list[str] | str = (),
    secret: tuple[str, ...] | list[str] = (),
    personal: tuple[str, ...] | list[str] = (),
) -> Callable[[T], T]:
    """Declare a class an event type (a msgspec Struct, pydantic model or dataclass).

    Raises:
        DefinitionError: a bad name or version, a key/secret/personal field the
            class does not have, or another class already registered under the
            same name and version.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise DefinitionError(f"event name {name!r} must be dotted words (letters, digits, - _)")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise DefinitionError(f"event {name!r}: version must be an integer >= 1, not {version!r}")
    keys = (key,) if isinstance(key, str) else tuple(key)

    def mark(cls: T) -> T:
        fields = _fields(cls)
        if fields is None:
            raise DefinitionError(
                f"@event({name!r}) needs a msgspec Struct, pydantic model or dataclass, not {cls!r}"
            )
        for what, names in (
            ("key", keys),
            ("secret", tuple(secret)),
            ("personal", tuple(personal)),
        ):
            missing = [f for f in names if f not in fields]
            if missing:
                raise DefinitionError(
                    f"@event({name!r}) {what} names fields {cls.__name__} lacks: {missing}"
                )
        meta = EventType(
            name,
            version,
            cls,
            keys,
            tuple(secret),
            tuple(personal),
            (cls.__doc__ or "").strip().split("\n\n")[0],
        )
        held = _REGISTRY.get((name, version))
        if held is not None and held.cls.__qualname__ != cls.__qualname__:
            raise DefinitionError(
                f"event {meta.ref} is already {held.cls.__module__}.{held.cls.__qualname__}"
            )
        _REGISTRY[(name, version)] = meta
        setattr(cls, _ATTR, meta)
        return cls

    return mark


def event_type(obj: object) -> EventType | None:
    """The event type of a class or instance, or ``None`` if it is not one."""
    cls = obj if isinstance(obj, type) else type(obj)
    meta = cls.__dict__.get(_ATTR)
    return meta if isinstance(meta, EventType) else None


def event_topic(obj: object, payload: object) -> str:
    """The topic of ``emit(event)`` (no topic string): the ``@event`` type's name.

    Raises:
        ValidationError: ``obj`` is neither a topic string nor an ``@event``
            instance, or a payload was passed beside an event.
    """
    meta = event_type(obj)
    if meta is None or isinstance(obj, type):
        raise ValidationError(
            f"emit() takes a topic string or an @event instance, not {type(obj).__name__}",
            errors=[{"field": "topic", "message": "not a topic or an event"}],
        )
    if payload is not None:
        raise ValidationError(
            f"emit({meta.name}): an event instance is its own payload; pass one or the other",
            errors=[{"field": "payload", "message": "given twice"}],
        )
    return meta.name


def registered(name: str, version: int | None = None) -> EventType | None:
    """The class registered under ``name`` (and ``version``; the newest if ``None``)."""
    if version is not None:
        return _REGISTRY.get((name, version))
    best: EventType | None = None
    for (n, v), meta in _REGISTRY.items():
        if n == name and (best is None or v > best.version):
            best = meta
    return best


def event_types() -> Iterator[EventType]:
    """Every registered event type, by name then version."""
    for _, meta in sorted(_REGISTRY.items()):
        yield meta
