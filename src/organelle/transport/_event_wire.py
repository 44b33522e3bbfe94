"""An event on the wire, both ways: CloudEvents binary content mode over NATS headers.

Out: the context headers (``_nats_headers``) plus the envelope's ``ce-*``
attributes, ``content-type`` naming the codec; the body is the payload alone.
In: a message with ``ce-*`` headers becomes an ``Incoming`` around the decoded
payload (its envelope read only if a handler asks); one without (a plain NATS
client) is the payload alone — the kernel makes one for it if a handler asks.
Structured content mode
(``application/cloudevents+json``: the whole event as a JSON body) is read
too, since SDKs default to it.

The body is decoded by what ``content-type`` says: JSON (``application/json``
or any ``+json``), MessagePack, text as ``str``, anything else as ``bytes``.
``Organelle-Codec`` (organelle's own header) wins when present.

``EventWire`` adds what ``transport_options.security`` asks for
(docs/event-security.md), in this order out: protected fields encrypted,
the payload encoded, the body compressed, the whole signed; and the reverse
in: the signature checked (before anything is decompressed), the body
decompressed within its bound, decoded, the fields opened. Each dropped
event is counted by reason (``rejected``) and logged at most once per
interval per reason.

With a claim-check (``claims``), an encoded payload longer than
``claims.above`` goes to the blob store before compression and the size
check (``seal``); the event carries ``ce-dataref`` and the
``Organelle-Dataref-*`` headers, signed like the others, and an empty body.
A receiver verifies, fetches and checks it (``redeem``) — asynchronously,
so the transports hold the events behind it (their order kept) meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any, cast

import msgspec

from organelle.codec import Codec, codec_for
from organelle.context import _PREFIX as _ID_PREFIX
from organelle.context import Context
from organelle.envelope import Envelope, Incoming, from_headers
from organelle.envelope._claim import DATAREF, ClaimCheck, ClaimRef, claim_of, without_claim
from organelle.envelope._compress import ENCODING_HEADER, compress, decompress
from organelle.envelope._envelope import CONSTANT, constant_lines, header_lines, utc_text
from organelle.envelope._protect import protect, unprotect
from organelle.envelope._seal import SIGNATURE_HEADER
from organelle.envelope._security import EventSecurity
from organelle.errors import ClaimCheckError, OrganelleError, ValidationError
from organelle.transport._nats_headers import headers_for, parse_headers
from organelle.transport._throttle import ThrottledLog

__all__ = ["CONTENT_TYPES", "Claimed", "EventWire", "decode_event", "event_headers"]

CONTENT_TYPES = {"json": "application/json", "msgpack": "application/msgpack"}
_STRUCTURED = "application/cloudevents+json"
_json = msgspec.json.Decoder(dict[str, Any])
_JSON = codec_for("json")
_ENCODING = ENCODING_HEADER.lower()
_SIGNATURE = SIGNATURE_HEADER.lower()
_DATAREF = DATAREF
_JSON_MEDIA = CONTENT_TYPES["json"]
_decode_json = msgspec.json.Decoder().decode
_INF = float("inf")


def event_headers(
    ctx: Context,
    env: Envelope[Any],
    codec: str,
    encoding: str | None = None,
    claim: Mapping[str, str] | None = None,
) -> bytes:
    """The header block of an outgoing event.

    ``encoding``: the body's compression; ``claim``: the claim-check headers
    that stand for the body.
    """
    lines = header_lines(env, CONTENT_TYPES.get(codec, "application/octet-stream"))
    if encoding is not None:
        lines += f"{ENCODING_HEADER}: {encoding}\r\n"
    if claim:
        lines += "".join(f"{name}: {value}\r\n" for name, value in claim.items())
    return headers_for(ctx, codec, timeout=False, extra=lines)


def _plain_headers(ctx: Context, env: Envelope[Any]) -> bytes:
    """``event_headers`` of the common JSON event, written in one format.

    What it covers: a context without principal or meta, an envelope without
    subject, partition key or extensions, its time in UTC and its id safe as
    is (a UUID). Everything an event type from one source shares comes
    ready-made (``constant_block``); only the ids and the time are written per
    event. Anything else goes to ``event_headers``: the same bytes either way.
    """
    when = env.time
    eid = env.id
    if (
        ctx.principal is not None
        or ctx.meta
        or env.subject is not None
        or env.partitionkey is not None
        or env.extensions
        or when is None
        or when.tzinfo is not UTC
        or not (eid.isascii() and eid.encode().replace(b"-", b"").isalnum())  # a UUID: as is
    ):
        return event_headers(ctx, env, "json")
    key = (env.source, env.type, env.specversion, env.dataschema, env.dataversion, _JSON_MEDIA)
    head, middle, tail = CONSTANT.get(key) or constant_lines(key)
    seq = ctx.seq
    rid = seq if type(seq) is str else f"{_ID_PREFIX}{seq:x}"
    ids = ""  # a root event has none; one emitted by a handler has both
    if ctx.corr is not None:
        ids = f"Organelle-Correlation-Id: {ctx.correlation_id}\r\n"
    if ctx.cause is not None:
        ids += f"Organelle-Causation-Id: {ctx.causation_id or ''}\r\n"
    return (
        f"NATS/1.0\r\nOrganelle-Id: {rid}\r\n{ids}ce-id: {eid}\r\n{head}"
        f"ce-time: {utc_text(when)}\r\n{middle}{tail}\r\n"
    ).encode()


def _body_codec(headers: Mapping[str, str]) -> Codec | str:
    """The codec of the body, or ``"text"`` / ``"bytes"`` for other media."""
    named = headers.get("organelle-codec")
    if named:
        return codec_for(named)
    content_type = headers.get("content-type", "")
    how = _MEDIA.get(content_type)
    if how is None:
        how = _media_codec(content_type)
        if len(_MEDIA) >= _MAX_MEDIA:
            _MEDIA.clear()
        _MEDIA[content_type] = how
    return how


def _media_codec(content_type: str) -> Codec | str:
    media = content_type.split(";", 1)[0].strip().lower()
    if not media or media == "application/json" or media.endswith("+json"):
        return _JSON
    if media in ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack"):
        return codec_for("msgpack")
    return "text" if media.startswith("text/") else "bytes"


# content-type → codec: the same few media types on every event (bounded against a
# peer that varies its parameters per event).
_MEDIA: dict[str, Codec | str] = {}
_MAX_MEDIA = 256


def decode_event(headers: Mapping[str, str], body: bytes | bytearray) -> Any:
    """The payload of an incoming event, inside an ``Incoming`` when it carries ``ce-*`` headers.

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
        data = bytes(body)  # a claimed payload arrives in a bytearray
    else:
        data = cast("Codec", how).decode(body)
    if "ce-id" in headers or "ce-specversion" in headers:
        return Incoming(headers, data)  # the envelope is read only if a handler asks
    return data


def _structured(body: bytes | bytearray) -> Envelope[Any]:
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


@dataclass(frozen=True, slots=True)
class Claimed:
    """A claim-checked event read off the wire, its payload still in the blob store.

    A transport queues it in place of the payload and hands it to
    ``EventWire.redeem`` when its turn comes.
    """

    topic: str
    headers: Mapping[str, str]
    body: bytes
    ref: ClaimRef


def _too_large(what: str, size: int, limit: int) -> ValidationError:
    message = f"{what} of {size} bytes exceeds the server's {limit}"
    return ValidationError(message, errors=[{"field": "$", "message": message}])


class EventWire:
    """One transport's events on the wire, with its security settings applied.

    Args:
        security: what to sign, compress and protect (``EventSecurity.default()``:
            compression only).
        codec: ``json`` or ``msgpack``: what this node encodes its events with.
        logger: where dropped events are reported (throttled per reason).
        claims: the claim-check (the kernel's blob store), or ``None``: large
            payloads are refused as too large, claimed ones received are dropped.
    """

    __slots__ = (
        "_checks",
        "_codec",
        "_dropped",
        "_plain_above",
        "_read_for",
        "_sent_for",
        "claims",
        "codec_name",
        "rejected",
        "security",
    )

    def __init__(
        self,
        security: EventSecurity,
        codec: str,
        logger: logging.Logger,
        claims: ClaimCheck | None = None,
    ) -> None:
        self.security = security
        self.claims = claims
        self.codec_name = codec
        self._codec = codec_for(codec)
        self._dropped = ThrottledLog(logger, security.log_interval_s)
        self.rejected: dict[str, int] = {}
        # What ``quick`` and ``read`` need of ``security``, worked out once per
        # settings object (frozen; replaced, never changed).
        self._sent_for: EventSecurity | None = None
        self._plain_above: float = -1.0  # a JSON body up to this long takes ``quick``
        self._read_for: EventSecurity | None = None
        self._checks = True  # an incoming event may need its signature checked or fields opened

    def quick(
        self, ctx: Context, env: Envelope[Any], max_payload: int
    ) -> tuple[bytes, bytes] | None:
        """``encode`` of the common event, or ``None``: ``seal`` it.

        Common: this node encodes JSON, neither signs nor protects fields, and
        the body is short enough to be neither compressed nor claim-checked.
        The same bytes as ``seal``, with less in between (docs/nats.md).

        Raises:
            ValidationError: the payload cannot be encoded, or is larger than ``max_payload``.
        """
        sec = self.security
        if sec is not self._sent_for:
            self._plan_sends(sec)
        limit = self._plain_above
        if limit < 0:
            return None
        body = self._codec.encode(env.data)
        size = len(body)
        claims = self.claims
        if size > limit or (claims is not None and 0 < claims.above < size):
            return self._frame_or_seal(ctx, env, body, max_payload)
        if size > max_payload:
            raise _too_large("event", size, max_payload)
        return _plain_headers(ctx, env), body

    def _plan_sends(self, sec: EventSecurity) -> None:
        plain = self.codec_name == "json" and sec.fields.active is None
        plain = plain and sec.signing.active is None
        self._plain_above = -1.0
        if plain:
            self._plain_above = _INF if sec.compression is None else sec.compress_above
        self._sent_for = sec

    def _frame_or_seal(
        self, ctx: Context, env: Envelope[Any], body: bytes, max_payload: int
    ) -> tuple[bytes, bytes] | None:
        """A body ``quick`` cannot send as is: framed here, or ``None`` if it is to be claimed."""
        claims = self.claims
        if claims is not None and claims.above and len(body) > claims.above:
            return None
        return self._frame(ctx, env, body, max_payload, None)

    def encode(self, ctx: Context, env: Envelope[Any], max_payload: int) -> tuple[bytes, bytes]:
        """``(header block, body)`` of an outgoing event, never claim-checked.

        Raises:
            ValidationError: the payload cannot be encoded, or is larger than
                ``max_payload`` (compressed: than ``max_decompressed_bytes``
                before, ``max_payload`` after).
        """
        return self._frame(ctx, env, self._body(env), max_payload, None)

    async def seal(self, ctx: Context, env: Envelope[Any], max_payload: int) -> tuple[bytes, bytes]:
        """``(header block, body)`` of an outgoing event, its payload claim-checked if large.

        A body longer than ``claims.above`` goes to the blob store; the event
        carries its reference (``ce-dataref`` and the ``Organelle-Dataref-*``
        headers, signed with the rest) and an empty body, so the size check
        below applies to what is left.

        Raises:
            ValidationError: as ``encode``.
            StorageUnavailableError: the blob store is unreachable.
        """
        body = self._body(env)
        claims = self.claims
        if claims is None or not claims.above or len(body) <= claims.above:
            return self._frame(ctx, env, body, max_payload, None)
        ref = await claims.claim(body, kind="events", ttl_s=claims.event_ttl_s)
        return self._frame(ctx, env, b"", max_payload, ref.headers())

    def _body(self, env: Envelope[Any]) -> bytes:
        data = env.data
        fields = self.security.fields
        if fields.active is not None:
            data = protect(data, fields, self._codec.encode, env.type)
        return self._codec.encode(data)

    def _frame(
        self,
        ctx: Context,
        env: Envelope[Any],
        body: bytes,
        max_payload: int,
        claim: dict[str, str] | None,
    ) -> tuple[bytes, bytes]:
        sec = self.security
        encoding = None
        if sec.compression is not None and len(body) > sec.compress_above:
            limit = sec.max_decompressed_bytes or max_payload
            if len(body) > limit:
                raise _too_large("event", len(body), limit)
            packed = compress(body, sec.compression, sec.compression_level)
            if len(packed) < len(body):
                body, encoding = packed, sec.compression
        if len(body) > max_payload:
            raise _too_large("event", len(body), max_payload)
        block = event_headers(ctx, env, self.codec_name, encoding, claim)
        if sec.signing.active is not None:
            value = sec.signing.sign(parse_headers(block)[1], body)
            block = block[:-2] + f"{SIGNATURE_HEADER}: {value}\r\n\r\n".encode()
        return block, body

    @staticmethod
    def claim_of(headers: Mapping[str, str]) -> ClaimRef | None:
        """The claim-check reference of an incoming event, or ``None`` (decode it at once).

        Raises:
            ValidationError: an organelle reference without a valid size or SHA-256.
        """
        if _DATAREF not in headers:
            return None
        return claim_of(headers)

    def decode(self, headers: Mapping[str, str], body: bytes, max_payload: int) -> Any:
        """The payload of an incoming event (see ``decode_event``), security checks first.

        An event carrying a claim-check reference (``claim_of``) goes through
        ``redeem`` instead.

        Raises:
            SignatureError: signatures are required and this one is missing,
                unknown or wrong (a wrong one with a known key is refused even
                when they are not required).
            ValidationError: a body that decompresses past its bound
                (``details["reason"] == "too_large"``), a bad encoding or a
                protected field that does not open; anything ``decode_event`` raises.
        """
        self._verify(headers, body)
        encoding = headers.get(_ENCODING)
        if encoding:
            body = decompress(body, encoding, self.security.max_decompressed_bytes or max_payload)
        return self._open(headers, body)

    def read(self, topic: str, headers: Mapping[str, str], body: bytes, max_payload: int) -> Any:
        """``decode``, or a ``Claimed`` for an event whose payload is in the blob store.

        The one call a transport makes per incoming event. An organelle JSON
        event with nothing to verify, decompress or open is decoded here
        straight; the rest goes the way of ``claim_of`` and ``decode``.

        Raises:
            SignatureError, ValidationError: as ``decode`` and ``claim_of``.
        """
        sec = self.security
        if sec is not self._read_for:
            self._checks = bool(sec.require_signatures or sec.signing.keys or sec.fields.keys)
            self._read_for = sec
        if (
            self._checks
            or _DATAREF in headers
            or _ENCODING in headers
            or headers.get("content-type") != _JSON_MEDIA
            or "organelle-codec" in headers
        ):
            ref = self.claim_of(headers)
            if ref is not None:
                return Claimed(topic, headers, body, ref)
            return self.decode(headers, body, max_payload)
        try:
            data = _decode_json(body) if body else None
        except Exception:  # the codec's own error (malformed, nested too deeply)
            data = _JSON.decode(body)
        if "ce-id" in headers or "ce-specversion" in headers:
            return Incoming(headers, data)  # the envelope is read only if a handler asks
        return data

    async def redeem(self, claimed: Claimed) -> Any:
        """The payload of an incoming claim-checked event: verified, fetched, decoded.

        The signature (over the reference headers and the empty body) is
        checked before anything is fetched; the fetched payload is checked
        against the reference's size and SHA-256.

        Raises:
            SignatureError: as ``decode``.
            ClaimCheckError: the payload is missing, damaged or unreachable
                (``details["reason"]``: ``claim_missing``, ``claim_integrity``,
                ``claim_unavailable``).
            ValidationError: a body beside the reference, a compressed claim,
                or anything ``decode_event`` raises.
        """
        headers, body, ref = claimed.headers, claimed.body, claimed.ref
        self._verify(headers, body)
        if body or headers.get(_ENCODING):
            raise ValidationError("a claim-checked event has an empty, uncompressed body")
        claims = self.claims
        if claims is None:
            raise ClaimCheckError(
                f"claim-check {ref.uri}: this node has no blob store",
                details={"reason": "claim_unavailable", "key": ref.key},
            )
        data = await claims.redeem(ref)
        return self._open(without_claim(headers), data)

    def _verify(self, headers: Mapping[str, str], body: bytes) -> None:
        sec = self.security
        if sec.require_signatures or (_SIGNATURE in headers and sec.signing.keys):
            try:
                sec.signing.verify(headers, body)
            except OrganelleError as err:
                if sec.require_signatures or err.details.get("reason") == "bad_signature":
                    raise

    def _open(self, headers: Mapping[str, str], body: bytes | bytearray) -> Any:
        sec = self.security
        payload = decode_event(headers, body)
        if sec.fields.keys and isinstance(payload, Incoming) and isinstance(payload.data, dict):
            how = _body_codec(headers)
            if not isinstance(how, str):
                kind = headers.get("ce-type", "")
                payload.data = unprotect(payload.data, sec.fields, how.decode, kind)
        return payload

    def drop(self, topic: str, err: OrganelleError) -> None:
        """Count and (throttled) log an incoming event that is not delivered."""
        reason = err.details.get("reason")
        if not isinstance(reason, str):
            reason = "malformed"
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        if reason == "malformed":
            self._dropped.warning(reason, "dropping a malformed event on %r: %s", topic, err)
        else:
            self._dropped.warning(reason, "dropping an event on %r (%s): %s", topic, reason, err)
