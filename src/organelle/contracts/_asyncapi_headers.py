"""The headers of organelle's NATS messages, as the JSON Schemas an AsyncAPI document holds.

Names come from the transport (``transport/_nats_headers.py``), so the
document cannot drift from what a node writes. Events and stream records also
describe the CloudEvents 1.0 binary-mode headers (``ce-*`` and
``content-type``) of organelle's event envelope. No header is required: a raw
publish without headers is a valid event or request (docs/nats.md).
"""

from __future__ import annotations

from typing import Any

from organelle.transport._nats_headers import (
    H_CAUSE,
    H_CODEC,
    H_CORR,
    H_ERROR,
    H_ID,
    H_META,
    H_PRINCIPAL,
    H_PTYPE,
    H_RETRY,
    H_ROLES,
    H_TIMEOUT,
)

__all__ = ["ERROR_PAYLOAD", "HEADER_SCHEMAS", "event_headers"]


def _text(description: str, **more: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **more}


_CODEC = _text("Payload encoding; JSON when absent.", enum=["json", "msgpack"])

# What every message carrying a context has, events and requests alike.
_CONTEXT: dict[str, Any] = {
    H_ID: _text("Id of this request or event; a fresh one is made when absent."),
    H_CORR: _text("Id shared by everything one outside request caused."),
    H_CAUSE: _text("Id of the call or event whose handler sent this message."),
    H_CODEC: _CODEC,
    H_PRINCIPAL: _text("Id of the caller's principal (trusted as sent: NATS is the boundary)."),
    H_PTYPE: _text("Type of the principal (user, service, ...); user when absent."),
    H_ROLES: _text("Roles of the principal, comma-separated."),
    H_META: _text("The context's meta, a JSON object.", contentMediaType="application/json"),
    "traceparent": _text("W3C trace context.", pattern="^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-"),
    "tracestate": _text("W3C trace state."),
}

_REQUEST: dict[str, Any] = {
    **_CONTEXT,
    H_TIMEOUT: _text(
        "Time left for the call, in milliseconds; the serving node makes it its deadline.",
        pattern=r"^[0-9]+(\.[0-9]+)?$",
    ),
}

# CloudEvents binary content mode; attributes as the envelope writes them.
_CLOUDEVENTS: dict[str, Any] = {
    "ce-id": _text("CloudEvents id (required when any ce- header is present)."),
    "ce-source": _text("CloudEvents source: the emitting app and module (required with ce-)."),
    "ce-type": _text("CloudEvents type: the event type's name (required with ce-)."),
    "ce-specversion": _text("CloudEvents spec version (required with ce-).", enum=["1.0"]),
    "ce-time": _text("When the event happened, RFC 3339.", format="date-time"),
    "ce-subject": _text("The subject of the event within its source."),
    "ce-dataschema": _text("URI of the payload's schema.", format="uri"),
    "ce-correlationid": _text("Extension: id shared by everything one outside request caused."),
    "ce-causationid": _text("Extension: id of the call or event that caused this one."),
    "ce-traceparent": _text("Extension: W3C trace context of the emitter."),
    "ce-dataversion": _text("Extension: the event type's version.", pattern="^[0-9]+$"),
    "ce-partitionkey": _text("Extension: the business key that orders related events."),
    "content-type": _text("CloudEvents datacontenttype of the body.", default="application/json"),
}

_REPLY: dict[str, Any] = {
    H_CODEC: _CODEC,
    H_ERROR: _text("The error's stable code (organelle.validation, shop.out_of_stock, ...)."),
    H_RETRY: _text(
        "1: refused without running (the module is leaving that node); send it again.",
        enum=["1"],
    ),
}


def _headers(title: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "title": title, "properties": properties}


HEADER_SCHEMAS: dict[str, dict[str, Any]] = {
    "OrganelleRequestHeaders": _headers("RPC request headers", _REQUEST),
    "OrganelleReplyHeaders": _headers("RPC reply headers (none on a JSON success)", _REPLY),
    "OrganelleEventHeaders": _headers(
        "Event and stream record headers", {**_CLOUDEVENTS, **_CONTEXT}
    ),
}
"""Named header schemas, for ``components.schemas``."""

ERROR_PAYLOAD: dict[str, Any] = {
    "type": "object",
    "title": "OrganelleError",
    "description": "An error reply: the Organelle-Error header holds the same code.",
    "properties": {
        "code": {"type": "string"},
        "type": {"type": "string"},
        "message": {"type": "string"},
        "details": {"type": "object"},
    },
    "required": ["code", "message"],
}
"""The body of an error reply (``OrganelleError.to_wire``)."""


def event_headers(ref: str, name: str, version: int) -> dict[str, Any]:
    """The event headers of a typed event: its ``ce-type`` and ``ce-dataversion`` are fixed."""
    return {
        "allOf": [
            {"$ref": ref},
            {
                "type": "object",
                "properties": {
                    "ce-type": {"type": "string", "const": name},
                    "ce-dataversion": {"type": "string", "const": str(version)},
                },
            },
        ]
    }
