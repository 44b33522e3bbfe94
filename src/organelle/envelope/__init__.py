"""Event envelopes: CloudEvents 1.0 attributes, typed versioned events, ids, upcasters.

Ground floor: plain data and pure functions the transport, the stream host
and the kernel share. See ``docs/events.md``; signatures, compression and
protected fields on the wire (``_seal``, ``_compress``, ``_protect``,
``_security``) in ``docs/event-security.md``; the claim-check's reference
headers (``_claim``) in ``docs/events.md``. ``upcaster`` (``_upcast``)
lifts an older version's data to the version a handler declares.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from organelle.context import _PREFIX as _ID_PREFIX
from organelle.context import Context
from organelle.envelope._envelope import (
    CE_PREFIX,
    SPECVERSION,
    Envelope,
    Incoming,
    from_headers,
    to_headers,
)
from organelle.envelope._event import (
    EventType,
    event,
    event_topic,
    event_type,
    event_types,
    registered,
)
from organelle.envelope._ids import app_namespace, keyed_hasher, keyed_id, utc_now, uuid7
from organelle.envelope._upcast import lift, upcast, upcaster, upcasters
from organelle.envelope._wire import (
    convert,
    rebuild,
    register,
    remember_module,
    wire_name,
    wire_type,
)

if TYPE_CHECKING:
    from organelle.envelope._protect import mask
    from organelle.envelope._security import EventSecurity, SecuritySettings, parse_security

__all__ = [
    "CE_PREFIX",
    "SPECVERSION",
    "Envelope",
    "EnvelopeFactory",
    "EventSecurity",
    "EventType",
    "Incoming",
    "SecuritySettings",
    "app_namespace",
    "convert",
    "event",
    "event_topic",
    "event_type",
    "event_types",
    "from_headers",
    "keyed_id",
    "lift",
    "mask",
    "parse_security",
    "rebuild",
    "register",
    "registered",
    "remember_module",
    "to_headers",
    "upcast",
    "upcaster",
    "upcasters",
    "uuid7",
    "wire_name",
    "wire_type",
]

_JSON = "application/json"
# Imported on first use: only a node whose events cross a wire needs them, and
# ``import organelle`` stays fast.
_LAZY = {
    "mask": "organelle.envelope._protect",
    "EventSecurity": "organelle.envelope._security",
    "SecuritySettings": "organelle.envelope._security",
    "parse_security": "organelle.envelope._security",
}


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(where), name)
    globals()[name] = value
    return value


class EnvelopeFactory:
    """Makes the envelope of an event this node emits: who sent it, its id, its time.

    ``source`` is ``/organelle/<app>/<node>`` (plus ``/<module>`` when the
    emitting module is known); the id is deterministic for an event type with
    a key, else a fresh UUIDv7.

    It runs once per event that has an envelope, so what is the same for every
    event of one payload class (its ``@event`` type, ``dataschema``, the keyed
    id's hash state) is worked out once per class (``_Kind``).
    """

    __slots__ = ("_kinds", "_sources", "app", "content_type", "node", "source")

    def __init__(self, app: str, node: str, content_type: str = _JSON) -> None:
        self.app = app
        self.node = node
        self.source = f"/organelle/{app}/{node}"
        self.content_type = content_type
        self._kinds: dict[type, _Kind] = {}
        self._sources: dict[str, str] = {}

    def _kind(self, cls: type) -> _Kind:
        kind = self._kinds.get(cls)
        if kind is None:
            if len(self._kinds) >= _MAX_KINDS:  # payload classes made on the fly: stay bounded
                self._kinds.clear()
            kind = self._kinds[cls] = _Kind(self.app, event_type(cls))
        return kind

    def event_id(self, payload: Any, meta: EventType | None = None) -> str:
        """The id of an event with this payload (the same for the same business key)."""
        if meta is None:
            return self._kind(type(payload)).event_id(payload)
        if meta.key:
            return keyed_id(self.app, meta.name, meta.version, meta.key_values(payload))
        return uuid7()

    def make(
        self,
        topic: str,
        payload: Any,
        ctx: Context | None,
        *,
        module: str | None = None,
        key: str | None = None,
        event_id: str | None = None,
        source: str | None = None,
    ) -> Envelope[Any]:
        """The envelope of ``payload`` emitted on ``topic`` under ``ctx``."""
        kind = self._kinds.get(type(payload)) or self._kind(type(payload))
        if source is None:
            source = self.source if module is None else self._module_source(module)
        corr: str | None
        cause: str | None
        if ctx is None:
            corr = cause = trace = None
        else:
            # ctx.correlation_id and causation_id, formatted here: two property calls
            # cost more than the whole Struct (callgrind).
            raw = ctx.seq if ctx.corr is None else ctx.corr
            corr = raw if isinstance(raw, str) else f"{_ID_PREFIX}{raw:x}"
            was = ctx.cause
            cause = was if was is None or isinstance(was, str) else f"{_ID_PREFIX}{was:x}"
            trace = _traceparent(ctx) if ctx.meta else None
        return Envelope(
            id=event_id or kind.event_id(payload),
            source=source,
            type=topic,
            data=payload,
            time=utc_now(),
            datacontenttype=self.content_type,
            dataschema=kind.dataschema,
            correlationid=corr,
            causationid=cause,
            traceparent=trace,
            dataversion=kind.dataversion,
            partitionkey=key,
        )

    def _module_source(self, module: str) -> str:
        source = self._sources.get(module)
        if source is None:
            if len(self._sources) >= _MAX_KINDS:
                self._sources.clear()
            source = self._sources[module] = f"{self.source}/{module}"
        return source


_MAX_KINDS = 1024


class _Kind:
    """What every event of one payload class shares in its envelope."""

    __slots__ = ("dataschema", "dataversion", "event_id", "meta")

    def __init__(self, app: str, meta: EventType | None) -> None:
        self.meta = meta
        self.dataschema = None if meta is None else f"urn:organelle:event:{meta.ref}"
        self.dataversion = None if meta is None else meta.version
        self.event_id: Callable[[Any], str] = _fresh
        if meta is not None and meta.key:
            ids = keyed_hasher(app, meta.name, meta.version)
            values = attrgetter(*meta.key)
            if len(meta.key) == 1:
                self.event_id = lambda payload: ids((values(payload),))
            else:
                self.event_id = lambda payload: ids(values(payload))


def _fresh(_payload: Any) -> str:
    return _uuid7()


_uuid7 = uuid7


def _traceparent(ctx: Context) -> str | None:
    value = ctx.meta.get("traceparent") if ctx.meta else None
    return value if isinstance(value, str) else None
