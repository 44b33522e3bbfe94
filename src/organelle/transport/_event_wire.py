"""An event on the wire, both ways: CloudEvents binary content mode over NATS headers.

Out: the context headers (``_nats_headers``) plus the envelope's ``ce-*``
attributes, ``content-type`` naming the codec; the body is the payload alone.
In: a message with ``ce-*`` headers becomes an ``Envelope`` around the decoded
payload; one without (a plain NATS client) is the payload alone — the kernel
makes an envelope for it only if a handler asks. Structured content mode
(``application/cloudevents+json``: the whole event as a JSON body) is read
too, since SDKs default to it.

The body is decoded by what ``content-type`` says: JSON (``application/json``
or any ``+json``), MessagePack, text as ``str``, anything else as ``bytes``.
``Organelle-Codec`` (organelle's own header) wins when present.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import msgspec

from organelle.codec import Codec, codec_for
from organelle.context import Context
from organelle.envelope import Envelope, from_headers, to_headers
from organelle.errors import ValidationError
from organelle.transport._nats_headers import headers_for

__all__ = ["CONTENT_TYPES", "decode_event", "event_headers"]

CONTENT_TYPES = {"json": "application/json", "msgpack": "application/msgpack"}
_STRUCTURED = "application/cloudevents+json"
_json = msgspec.json.Decoder(dict[str, Any])
_JSON = codec_for("json")


def event_headers(ctx: Context, env: Envelope[Any], codec: str) -> bytes:
    """The header block of an outgoing event."""
    ce = to_headers(env)
    ce["content-type"] = CONTENT_TYPES.get(codec, "application/octet-stream")
    return headers_for(ctx, codec, timeout=False, extra=ce)


def _body_codec(headers: Mapping[str, str]) -> Codec | str:
    """The codec of the body, or ``"text"`` / ``"bytes"`` for other media."""
    named = headers.get("organelle-codec")
    if named:
        return codec_for(named)
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not media or media == "application/json" or media.endswith("+json"):
        return _JSON
    if media in ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack"):
        return codec_for("msgpack")
    return "text" if media.startswith("text/") else "bytes"


def decode_event(headers: Mapping[str, str], body: bytes) -> Any:
    """The payload of an incoming event, inside an ``Envelope`` when it carries one.

    Raises:
        ValidationError: the body does not decode, or the CloudEvents
            attributes are incomplete or malformed.
    """
    if headers.get("content-type", "").startswith(_STRUCTURED) and "organelle-codec" not in headers:
        return _structured(body)
    how = _body_codec(headers)
    data: Any
    if not body:
        data = None
    elif how == "text":
        try:
            data = body.decode()
        except UnicodeDecodeError:
            raise ValidationError("a text/* event body is not valid UTF-8") from None
    elif how == "bytes":
        data = body
    else:
        data = cast("Codec", how).decode(body)
    env = from_headers(headers, data)
    return data if env is None else env


def _structured(body: bytes) -> Envelope[Any]:
    """An event in structured content mode: attributes and ``data`` in one JSON object."""
    try:
        doc = _json.decode(body)
    except msgspec.DecodeError as exc:
        raise ValidationError(f"malformed structured CloudEvent: {exc}") from None
    data = doc.pop("data", None)
    if data is None and "data_base64" in doc:
        import base64

        data = base64.b64decode(doc.pop("data_base64"))
    attrs = {f"ce-{k}": v if isinstance(v, str) else str(v) for k, v in doc.items()}
    if "ce-datacontenttype" in attrs:
        attrs["content-type"] = attrs.pop("ce-datacontenttype")
    env = from_headers(attrs, data)
    if env is None:
        raise ValidationError("a structured CloudEvent without attributes")
    return env
