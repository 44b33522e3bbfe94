"""Upcasters: how the data of an older version of an event type becomes the newer version's.

``@upcaster("order.placed", 1, 2)`` on a plain function ``(dict) -> dict``
registers one step; steps chain, so data written at version 1 reaches a
handler that declares the version 3 class through 1→2 and 2→3. The kernel
calls ``lift`` where an envelope says which version its data is at — an
event from the wire (or a local one whose handler takes the envelope) and a
stream record — and the handler's declared class is an ``@event`` type of the
same name at a newer version. Data without a version (an untyped emitter) is
taken as is; a bare local payload has no version to read and is at the
node's own version.

The registry is process-wide, like the ``@event`` one, and read by
``organelle contract check``: a version bump with no step from the old
version is a breaking change.

Example::

    from organelle.envelope import upcaster

    @upcaster("order.placed", 1, 2)
    def _total_in_cents(data: dict) -> dict:
        return {**data, "cents": round(data.pop("total") * 100)}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from organelle.envelope._envelope import Envelope
from organelle.envelope._event import _NAME, EventType
from organelle.errors import DefinitionError, ValidationError

__all__ = ["lift", "upcast", "upcaster", "upcasters"]

Step = Callable[[dict[str, Any]], dict[str, Any]]
F = TypeVar("F", bound=Step)

# type name -> {from version: step to from version + 1}
_STEPS: dict[str, dict[int, Step]] = {}
_SCHEMA = "urn:organelle:event:"


def _version(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def upcaster(name: str, from_version: int, to_version: int) -> Callable[[F], F]:
    """Register a function that lifts ``name``'s data from ``from_version`` to ``to_version``.

    The function takes the decoded data (a ``dict``) and returns the data of
    the next version; it may change the dict it is given. One step goes up
    by exactly one version; steps chain (1→2, 2→3 lift 1 to 3).

    Raises:
        DefinitionError: a bad name or version, a step that does not go up by
            one, or a second function for a step already registered (the same
            function defined again, as by a re-import, replaces it).
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise DefinitionError(f"upcaster: event name {name!r} must be dotted words")
    if not (_version(from_version) and _version(to_version)):
        raise DefinitionError(
            f"upcaster({name!r}): versions must be integers >= 1, "
            f"not {from_version!r} -> {to_version!r}"
        )
    if to_version != from_version + 1:
        raise DefinitionError(
            f"upcaster({name!r}, {from_version}, {to_version}): a step goes up by one version "
            f"(chain {from_version} -> {from_version + 1} -> ... instead)"
        )

    def mark(fn: F) -> F:
        if not callable(fn):
            raise DefinitionError(f"upcaster({name!r}) decorates a function, not {fn!r}")
        steps = _STEPS.setdefault(name, {})
        held = steps.get(from_version)
        if held is not None and _where(held) != _where(fn):
            raise DefinitionError(
                f"upcaster {name} {from_version} -> {to_version} is already {_where(held)}"
            )
        steps[from_version] = fn
        return fn

    return mark


def _where(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def upcasters(name: str) -> dict[int, Step]:
    """The steps registered for ``name``: ``{from version: function}`` (a copy)."""
    return dict(_STEPS.get(name, {}))


def _missing(name: str, at: int, to_version: int) -> ValidationError:
    step = f"{name} {at} -> {at + 1}"
    return ValidationError(
        f"no upcaster for event {step} (needed to read version {at} data as version "
        f"{to_version}): register @upcaster({name!r}, {at}, {at + 1})",
        errors=[{"field": "dataversion", "message": f"no upcaster {step}"}],
        details={"event": name, "from_version": at, "to_version": at + 1},
    )


def _plain(data: Any) -> Any:
    """Data as builtins: a local envelope holds the emitted object, a step takes a dict."""
    if isinstance(data, dict):
        return data
    dump = getattr(data, "model_dump", None)
    if callable(dump):  # a pydantic model
        return dump()
    return msgspec.to_builtins(data)


def upcast(name: str, from_version: int, to_version: int, data: Any) -> Any:
    """``data`` of event type ``name`` at ``from_version`` lifted to ``to_version``.

    Raises:
        ValidationError: a step of the chain is not registered (``details``
            name it: ``event``, ``from_version``, ``to_version``), a step
            failed or returned no dict, or ``from_version`` is newer than
            ``to_version`` (downcasting is not supported).
    """
    if from_version == to_version:
        return data
    if from_version > to_version:
        text = (
            f"event {name} data is at version {from_version}, newer than the version "
            f"{to_version} the handler declares: downcasting is not supported "
            "(deploy the newer event class to this consumer)"
        )
        raise ValidationError(
            text,
            errors=[{"field": "dataversion", "message": "newer than the handler's version"}],
            details={"event": name, "from_version": from_version, "to_version": to_version},
        )
    steps = _STEPS.get(name, {})
    for at in range(from_version, to_version):  # every step first: fail before any runs
        if at not in steps:
            raise _missing(name, at, to_version)
    data = _plain(data)
    for at in range(from_version, to_version):
        try:
            data = steps[at](data)
        except Exception as exc:
            text = f"upcaster {name} {at} -> {at + 1} failed: {type(exc).__name__}: {exc}"
            raise ValidationError(
                text,
                errors=[{"field": "payload", "message": text}],
                details={"event": name, "from_version": at, "to_version": at + 1},
            ) from exc
        if not isinstance(data, dict):
            text = f"upcaster {name} {at} -> {at + 1} returned {type(data).__name__}, not a dict"
            raise ValidationError(text, errors=[{"field": "payload", "message": text}])
    return data


def _type_name(env: Envelope[Any]) -> str:
    """The event type of an envelope: the one its ``dataschema`` names, else its ``type``."""
    schema = env.dataschema
    if schema is not None and schema.startswith(_SCHEMA):
        return schema[len(_SCHEMA) :].rpartition("@")[0] or env.type
    return env.type


def lift(target: EventType, env: Envelope[Any]) -> Any:
    """The envelope's data at ``target``'s version, for a handler that declares ``target``.

    Data of another event type, or without a version, is returned as is (the
    handler's conversion then decides).

    Raises:
        ValidationError: as ``upcast``.
    """
    version = env.dataversion
    if version is None or version == target.version or _type_name(env) != target.name:
        return env.data
    return upcast(target.name, version, target.version, env.data)
