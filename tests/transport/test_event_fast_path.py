"""The common event's short ways through ``EventWire``: the same bytes and values as the long ones.

``quick`` (out) must write exactly what ``encode`` writes, and ``read`` plus
``event_context`` (in) must give what ``claim_of``, ``decode`` and
``context_from`` give, for every shape of event: the short way is only ever
a shortcut, never a second wire format.
"""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest

from organelle.context import Context, _next_seq
from organelle.envelope import Envelope, EnvelopeFactory, Incoming, parse_security
from organelle.errors import ValidationError
from organelle.kernel._claims import Claims
from organelle.transport._event_wire import Claimed, EventWire
from organelle.transport._nats_headers import (
    context_from,
    event_context,
    header_map,
    parse_headers,
)

K1 = "k1-shared-secret-for-tests-0001"
F1 = "base64:" + base64.b64encode(b"field-key-f1-32-bytes-long------").decode()
MB = 1 << 20
factory = EnvelopeFactory("fast", "node-1")


def wire(security: dict[str, Any] | None = None, codec: str = "json") -> EventWire:
    return EventWire(parse_security(security or {}), codec, logging.getLogger("test"))


def root() -> Context:
    return Context(_next_seq(), None, None, None, None, {}, "fast.t")


def child() -> Context:
    return root().child(None, topic="fast.t")


def contexts() -> list[Context]:
    traced = root().child(None, topic="fast.t", meta={"traceparent": "00-ab-cd-01", "k": 1})
    return [
        root(),
        child(),
        Context("from-the-wire", None, "corr-1", None, None, {}, "fast.t"),
        traced,
        Context(_next_seq(), None, None, None, "ada", {}, "fast.t"),
    ]


def envelopes() -> list[Envelope[Any]]:
    base = factory.make("fast.t", {"n": 1, "text": "hello"}, root())
    paris = timezone(timedelta(hours=1))
    return [
        base,
        factory.make("fast.t", {"n": 2}, child(), module="orders", key="k-1"),
        msgspec.structs.replace(base, subject="a subject"),
        msgspec.structs.replace(base, extensions={"tenant": "t 1"}),
        msgspec.structs.replace(base, id="an id with spaces%"),
        msgspec.structs.replace(base, id="évènement"),
        msgspec.structs.replace(base, time=datetime(2026, 1, 2, 3, 4, 5, tzinfo=paris)),
        msgspec.structs.replace(base, time=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
        msgspec.structs.replace(base, time=None),
        msgspec.structs.replace(base, dataschema="urn:x", dataversion=3),
        msgspec.structs.replace(base, data=None),
    ]


@pytest.mark.parametrize("ctx", contexts(), ids=range(5))
@pytest.mark.parametrize("env", envelopes(), ids=range(11))
def test_quick_writes_what_encode_writes(ctx: Context, env: Envelope[Any]) -> None:
    events = wire()
    framed = events.quick(ctx, env, MB)
    assert framed == events.encode(ctx, env, MB)


def test_quick_leaves_what_it_does_not_cover_to_seal() -> None:
    env = factory.make("fast.t", {"n": 1}, root())
    ctx = root()
    # signing, protected fields, another codec: not the short way
    assert wire({"sign_kid": "k1", "keys": {"k1": K1}}).quick(ctx, env, MB) is None
    assert wire({"field_kid": "f1", "field_keys": {"f1": F1}}).quick(ctx, env, MB) is None
    assert wire(codec="msgpack").quick(ctx, env, MB) is None
    # a body past the compression threshold: framed (compressed) as encode does
    big = factory.make("fast.t", {"blob": "z" * 40_000}, root())
    events = wire()
    assert events.quick(ctx, big, MB) == events.encode(ctx, big, MB)
    with pytest.raises(ValidationError):
        events.quick(ctx, factory.make("fast.t", {"n": "x" * 100}, ctx), 50)


class _Settings:
    blobs = "memory://"
    claim_check_above = 100
    claim_check_ttl_s = 60.0
    claim_check_record_ttl_s = None


async def test_quick_hands_a_payload_to_claim_to_seal() -> None:
    claims = Claims(_Settings)  # type: ignore[arg-type]
    events = EventWire(parse_security({}), "json", logging.getLogger("test"), claims)
    small = factory.make("fast.t", {"n": 1}, root())
    assert events.quick(root(), small, MB) is not None
    big = factory.make("fast.t", {"blob": "z" * 500}, root())
    assert events.quick(root(), big, MB) is None
    block, body = await events.seal(root(), big, MB)
    assert body == b""
    assert events.claim_of(parse_headers(block)[1]) is not None


def _long_way(events: EventWire, topic: str, headers: dict[str, str], body: bytes) -> Any:
    ref = events.claim_of(headers)
    if ref is not None:
        return Claimed(topic, headers, body, ref)
    return events.decode(headers, body, MB)


def _outcome(read: Any, *args: Any) -> Any:
    """What a read returns, or the text of what it raises."""
    try:
        return read(*args)
    except ValidationError as err:
        return f"raised {err}"


def _same(a: Any, b: Any) -> bool:
    if type(a) is Incoming and type(b) is Incoming:
        return dict(a.headers) == dict(b.headers) and a.data == b.data
    return bool(a == b)


def incoming() -> list[tuple[dict[str, str], bytes]]:
    out = []
    for ctx in contexts():
        for env in envelopes():
            block, body = wire().encode(ctx, env, MB)
            out.append((header_map(block), body))
    plain = out[0][0]
    out += [
        ({}, b'{"a": 1}'),  # a plain NATS client
        ({"content-type": "text/plain", "ce-id": "1"}, b"hi"),
        ({**plain, "organelle-codec": "msgpack"}, msgspec.msgpack.encode({"a": 1})),
        ({**plain, "content-type": "application/cloudevents+json"}, b'{"id":"1"}'),
        ({**plain, "content-type": "application/json; charset=utf-8"}, b'{"a":1}'),
        (plain, b""),
    ]
    return out


@pytest.mark.parametrize("case", range(len(incoming())))
def test_read_gives_what_claim_of_and_decode_give(case: int) -> None:
    headers, body = incoming()[case]
    events = wire()
    short = _outcome(events.read, "fast.t", headers, body, MB)
    assert _same(short, _outcome(_long_way, events, "fast.t", headers, body))
    if "organelle-id" in headers:  # else each makes a fresh id
        assert event_context(headers, "fast.t") == context_from(headers, "fast.t")


@pytest.mark.parametrize("body", [b"{not json", b"[" * 100_000, b'{"a": 1} trailing'])
def test_read_refuses_a_bad_body_as_decode_does(body: bytes) -> None:
    headers = incoming()[0][0]
    events = wire()
    with pytest.raises(ValidationError) as short:
        events.read("fast.t", headers, body, MB)
    with pytest.raises(ValidationError) as long:
        events.decode(headers, body, MB)
    assert str(short.value) == str(long.value)


def test_read_checks_signatures_when_keys_are_set() -> None:
    signed = wire({"sign_kid": "k1", "keys": {"k1": K1}})
    block, body = signed.encode(root(), factory.make("fast.t", {"n": 1}, root()), MB)
    headers = header_map(block)
    out = wire({"require_signatures": True, "keys": {"k1": K1}}).read("fast.t", headers, body, MB)
    assert type(out) is Incoming
    assert out.data == {"n": 1}
    tampered = body.replace(b"1", b"2")
    with pytest.raises(Exception, match="signature"):
        wire({"keys": {"k1": K1}}).read("fast.t", headers, tampered, MB)
    unsigned = header_map(wire().encode(root(), factory.make("fast.t", 1, root()), MB)[0])
    with pytest.raises(Exception, match="sign"):
        wire({"require_signatures": True, "keys": {"k1": K1}}).read("fast.t", unsigned, b"1", MB)
