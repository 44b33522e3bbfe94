"""Event envelopes: CloudEvents 1.0 attributes, typed versioned events, deterministic ids.

Ground floor: plain data and pure functions the transport, the stream host
and the kernel share. See ``docs/events.md``; signatures, compression and
protected fields on the wire (``_seal``, ``_compress``, ``_protect``,
``_security``) in ``docs/event-security.md``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from organelle.context import Context
from organelle.envelope._envelope import (
    CE_PREFIX,
    SPECVERSION,
    Envelope,
    from_headers,
    to_headers,
)
from organelle.envelope._event import EventType, event, event_type, event_types, registered
from organelle.envelope._ids import app_namespace, keyed_id, uuid7
from organelle.envelope._protect import mask
from organelle.envelope._security import EventSecurity, SecuritySettings, parse_security

__all__ = [
    "CE_PREFIX",
    "SPECVERSION",
    "Envelope",
    "EnvelopeFactory",
    "EventSecurity",
    "EventType",
    "SecuritySettings",
    "app_namespace",
    "event",
    "event_type",
    "event_types",
    "from_headers",
    "keyed_id",
    "mask",
    "parse_security",
    "registered",
    "to_headers",
    "uuid7",
]

_JSON = "application/json"


class EnvelopeFactory:
    """Makes the envelope of an event this node emits: who sent it, its id, its time.

    ``source`` is ``/organelle/<app>/<node>`` (plus ``/<module>`` when the
    emitting module is known); the id is deterministic for an event type with
    a key, else a fresh UUIDv7.
    """

    __slots__ = ("app", "content_type", "node", "source")

    def __init__(self, app: str, node: str, content_type: str = _JSON) -> None:
        self.app = app
        self.node = node
        self.source = f"/organelle/{app}/{node}"
        self.content_type = content_type

    def event_id(self, payload: Any) -> str:
        """The id of an event with this payload (the same for the same business key)."""
        meta = event_type(payload)
        if meta is not None and meta.key:
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
        meta = event_type(payload)
        if source is None:
            source = self.source if module is None else f"{self.source}/{module}"
        return Envelope(
            id=event_id or self.event_id(payload),
            source=source,
            type=topic,
            data=payload,
            time=datetime.now(UTC),
            datacontenttype=self.content_type,
            dataschema=None if meta is None else f"urn:organelle:event:{meta.ref}",
            correlationid=None if ctx is None else ctx.correlation_id,
            causationid=None if ctx is None else ctx.causation_id,
            traceparent=None if ctx is None else _traceparent(ctx),
            dataversion=None if meta is None else meta.version,
            partitionkey=key,
        )


def _traceparent(ctx: Context) -> str | None:
    value = ctx.meta.get("traceparent") if ctx.meta else None
    return value if isinstance(value, str) else None
