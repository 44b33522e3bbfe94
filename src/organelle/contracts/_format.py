"""The snapshot file: one shape for writing and for reading back, checked on load.

A snapshot is data a person commits and a machine compares later, so it is
plain JSON with sorted keys, and a file that does not have this shape is
rejected with the path of the first bad value rather than half-compared.
"""

from __future__ import annotations

from typing import Any

import msgspec
from packaging.version import InvalidVersion, Version

from organelle.errors import ConfigError

__all__ = [
    "FORMAT",
    "EventContract",
    "EventTypeContract",
    "JobContract",
    "ModuleContract",
    "ParamDoc",
    "RpcContract",
    "Schema",
    "Snapshot",
    "StreamContract",
    "dumps",
    "loads",
    "parse",
]

FORMAT = 1
"""Version of the snapshot layout; bumped when an older organelle could misread a newer file."""

Schema = dict[str, Any] | bool
"""A JSON Schema; ``$ref`` points into ``Snapshot.schemas`` as ``#/schemas/Name``."""


class ParamDoc(msgspec.Struct, kw_only=True):
    """One parameter: whether callers must send it, its schema and its default."""

    required: bool
    schema: Schema
    default: Any = msgspec.UNSET  # only when it is JSON-encodable


class RpcContract(msgspec.Struct, kw_only=True):
    """An RPC method: parameters by name and the return type (``None``: not annotated)."""

    params: dict[str, ParamDoc]
    returns: Schema | None = None


class JobContract(msgspec.Struct, kw_only=True):
    """A job: parameters by name."""

    params: dict[str, ParamDoc]


class EventContract(msgspec.Struct, kw_only=True):
    """An ``@on`` subscription: the pattern, the handler and its payload schema."""

    pattern: str
    handler: str
    payload: Schema


class StreamContract(msgspec.Struct, kw_only=True):
    """A ``@consume`` handler: stream, group, handler and payload schema."""

    stream: str
    group: str
    handler: str
    payload: Schema


class ModuleContract(msgspec.Struct, kw_only=True):
    """Everything a module offers to callers, emitters and producers."""

    version: str
    rpc: dict[str, RpcContract] = msgspec.field(default_factory=dict)
    jobs: dict[str, JobContract] = msgspec.field(default_factory=dict)
    events: list[EventContract] = msgspec.field(default_factory=list)
    consumers: list[StreamContract] = msgspec.field(default_factory=list)


class EventTypeContract(msgspec.Struct, kw_only=True):
    """An ``@event`` type of the app at its newest version.

    ``data`` is the schema of its data, ``key`` its business key fields, and
    ``upcasters`` the versions a registered ``@upcaster`` lifts from (each to
    the next one).
    """

    version: int
    data: Schema
    key: list[str] = msgspec.field(default_factory=list)
    upcasters: list[int] = msgspec.field(default_factory=list)


class Snapshot(msgspec.Struct, kw_only=True):
    """The contracts of every module of an app, its event types, and the named schemas they share.

    ``event_types`` is keyed by the type's name (snapshots written before it
    existed read as having none).
    """

    format: int
    modules: dict[str, ModuleContract]
    event_types: dict[str, EventTypeContract] = msgspec.field(default_factory=dict)
    schemas: dict[str, Schema] = msgspec.field(default_factory=dict)


def to_dict(snap: Snapshot) -> dict[str, Any]:
    """The snapshot as plain JSON-able data with sorted keys."""
    data: dict[str, Any] = msgspec.to_builtins(snap, order="sorted")
    return data


def dumps(snapshot: dict[str, Any]) -> str:
    """The snapshot as JSON text: sorted keys, two-space indent, final newline."""
    return (
        msgspec.json.format(msgspec.json.encode(snapshot, order="sorted"), indent=2).decode() + "\n"
    )


def loads(data: str | bytes, *, source: str = "snapshot") -> dict[str, Any]:
    """Read a snapshot from JSON text, checking its shape.

    Raises:
        ConfigError: not JSON, not a snapshot, or a format this version cannot read.
    """
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{source} is not valid JSON: {exc}") from None
    return to_dict(parse(raw, source=source))


def parse(data: Any, *, source: str = "snapshot") -> Snapshot:
    """Check that ``data`` is a snapshot (as ``snapshot()`` returns) and type it.

    Raises:
        ConfigError: a missing or mistyped value (named by its path), an invalid
            module version, or a format newer than this version understands.
    """
    if isinstance(data, Snapshot):
        return data
    if not isinstance(data, dict) or "format" not in data:
        raise ConfigError(f"{source} is not a contract snapshot (no 'format' field)")
    fmt = data["format"]
    if fmt != FORMAT:
        raise ConfigError(
            f"{source} has snapshot format {fmt!r}; this organelle reads format {FORMAT} "
            "(export the snapshot again)"
        )
    try:
        snap = msgspec.convert(data, Snapshot)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source} is not a contract snapshot: {exc}") from None
    for name, module in snap.modules.items():
        try:
            Version(module.version)
        except InvalidVersion:
            raise ConfigError(
                f"{source}: module {name!r} has an invalid version {module.version!r}"
            ) from None
    return snap
