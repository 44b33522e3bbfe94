"""Signatures, compression and protected fields of events, on the memory cluster and on NATS.

Forged, tampered and oversized messages are put on the wire by hand: with raw
nats-py on NATS, through the broker's own delivery (``take_event``, the bytes
and headers NATS would carry) on the memory cluster. What crosses NATS is
read back with a raw nats-py subscriber.
"""

from __future__ import annotations

import base64
import logging
import re
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import msgspec
import nats
import pytest

from organelle import Envelope, Kernel, Module, event, on
from organelle.envelope import EnvelopeFactory, parse_security
from organelle.errors import ConfigError
from organelle.testing import eventually, running
from organelle.testing.servers import NatsServer
from organelle.transport._event_wire import EventWire
from organelle.transport._memory_broker import broker_named
from organelle.transport._nats_headers import context_from, parse_headers

pytestmark = pytest.mark.timeout(60)

K1 = "k1-shared-secret-for-tests-0001"
K2 = "k2-shared-secret-for-tests-0002"
F1 = "base64:" + base64.b64encode(b"field-key-f1-32-bytes-long------").decode()
SIGN_K1 = {"sign_kid": "k1", "keys": {"k1": K1}}
SIGN_K2 = {"sign_kid": "k2", "keys": {"k2": K2}}
REQUIRE = {"require_signatures": True, "keys": {"k1": K1, "k2": K2}}


@event("sec.charged", secret=("card",), personal=("email",))
class Charged(msgspec.Struct):
    order: str
    card: str
    email: str


class Till(Module):
    """Takes notes (balanced) and charges (every instance)."""

    name = "till"

    def __init__(self) -> None:
        self.notes: list[Any] = []
        self.charged: list[Charged] = []

    @on("sec.note")
    async def note(self, env: Envelope[Any]) -> None:
        self.notes.append(env.data)

    @on(Charged, delivery="broadcast")
    async def charge(self, charged: Charged) -> None:
        self.charged.append(charged)


def till(kernel: Kernel) -> Till:
    module: Till = kernel.module("till")  # type: ignore[assignment]
    return module


Headers = dict[str, str]
Start = Callable[..., Awaitable[Kernel]]


class Cluster:
    """How a test's kernels join one cluster, and how raw messages get onto its wire."""

    kind = ""

    def options(self, security: dict[str, Any] | None) -> dict[str, Any]:
        raise NotImplementedError

    def config(self, security: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"kernel": {"transport": self.url, "transport_options": self.options(security)}}

    url = ""
    prefix = ""

    async def inject(self, topic: str, headers: Headers, body: bytes) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """Nothing to close by default."""


class MemoryCluster(Cluster):
    kind = "memory"

    def __init__(self, name: str) -> None:
        self.name = name
        self.url = f"memory://{name}"

    def options(self, security: dict[str, Any] | None) -> dict[str, Any]:
        return {} if security is None else {"security": security}

    async def inject(self, topic: str, headers: Headers, body: bytes) -> None:
        lowered = {k.lower(): v for k, v in headers.items()}
        for member, module, handler in broker_named(self.name).deliveries(topic):
            member.take_event(module, handler, topic, body, lowered)


class NatsCluster(Cluster):
    kind = "nats"

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"t{uuid.uuid4().hex[:10]}"
        self.nc: Any = None

    def options(self, security: dict[str, Any] | None) -> dict[str, Any]:
        opts: dict[str, Any] = {"prefix": self.prefix, "heartbeat_s": 0.2, "registry_ttl_s": 1.0}
        return opts if security is None else {**opts, "security": security}

    async def raw(self) -> Any:
        if self.nc is None:
            self.nc = await nats.connect(self.url)
        return self.nc

    async def inject(self, topic: str, headers: Headers, body: bytes) -> None:
        nc = await self.raw()
        await nc.publish(f"{self.prefix}.evt.{topic}", body, headers=headers)
        await nc.flush()

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.close()


@pytest.fixture(params=["memory", "nats"])
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    made: Cluster
    if request.param == "memory":
        name = re.sub(r"[^A-Za-z0-9_.-]", "-", request.node.name)
        made = MemoryCluster(f"{name}-{uuid.uuid4().hex[:6]}")
    else:
        server: NatsServer = request.getfixturevalue("nats_server")
        made = NatsCluster(server.url)
    try:
        yield made
    finally:
        await made.close()


@pytest.fixture
async def start(cluster: Cluster) -> AsyncIterator[Start]:
    """``await start(*modules, security=...)``: a running node of the test's cluster."""
    async with AsyncExitStack() as stack:

        async def start(*modules: Any, security: dict[str, Any] | None = None) -> Kernel:
            return await stack.enter_async_context(
                running(*modules, config=cluster.config(security))
            )

        yield start


def message(security: dict[str, Any], topic: str, data: Any) -> tuple[Headers, bytes]:
    """The headers and body an organelle node with ``security`` would send for this event."""
    wire = EventWire(parse_security(security), "json", logging.getLogger("test"))
    env = EnvelopeFactory("sec", "forger").make(topic, data, None)
    block, body = wire.encode(context_from({}), env, 1 << 20)
    return parse_headers(block)[1], body


# -- signatures --------------------------------------------------------------------------
async def test_signed_events_are_delivered_across_a_key_rotation(start: Start) -> None:
    receiver = await start(Till, security=REQUIRE)
    old = await start(security=SIGN_K1)
    new = await start(security={**SIGN_K2, "keys": {"k1": K1, "k2": K2}})
    await old.emit("sec.note", {"n": 1})
    await new.emit("sec.note", {"n": 2})
    await eventually(lambda: len(till(receiver).notes) == 2)
    assert sorted(n["n"] for n in till(receiver).notes) == [1, 2]
    assert dict(receiver.transport.rejected) == {}
    # A node that retired k1 refuses what is still signed with it.
    await receiver.stop()
    retired = await start(Till, security={"require_signatures": True, "keys": {"k2": K2}})
    await old.emit("sec.note", {"n": 3})
    await eventually(lambda: retired.transport.rejected.get("unknown_kid") == 1)
    await new.emit("sec.note", {"n": 4})
    await eventually(lambda: till(retired).notes == [{"n": 4}])


async def test_forged_events_are_dropped_counted_and_logged_once(
    cluster: Cluster, start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = await start(Till, security=REQUIRE)
    headers, body = message(SIGN_K1, "sec.note", {"amount": 10})
    unsigned = {k: v for k, v in headers.items() if k != "organelle-signature"}
    stranger = message({"sign_kid": "k7", "keys": {"k7": K1}}, "sec.note", {"amount": 10})
    caplog.set_level(logging.WARNING, logger="organelle.transport")
    await cluster.inject("sec.note", unsigned, body)
    await cluster.inject("sec.note", {}, b'{"amount": 10}')  # a plain client, no headers
    await cluster.inject("sec.note", *stranger)
    await cluster.inject("sec.note", headers, body.replace(b"10", b"99"))
    await cluster.inject("sec.note", {**headers, "ce-type": "sec.refund"}, body)
    await cluster.inject("sec.note", {**headers, "organelle-roles": "admin"}, body)
    await cluster.inject("sec.note", headers, body)  # the genuine one
    await eventually(lambda: len(till(receiver).notes) == 1)
    assert till(receiver).notes == [{"amount": 10}]
    rejected = receiver.transport.rejected
    assert dict(rejected) == {"unsigned": 2, "unknown_kid": 1, "bad_signature": 3}
    lines = [r.getMessage() for r in caplog.records if "dropping an event" in r.getMessage()]
    assert len(lines) == 3, lines  # one per reason within the interval
    assert {re.search(r"\((\w+)\)", line).group(1) for line in lines} == set(rejected)  # type: ignore[union-attr]


# -- compression -------------------------------------------------------------------------
async def test_a_big_event_crosses_compressed_and_arrives_intact(
    cluster: Cluster, start: Start
) -> None:
    receiver = await start(Till, security=REQUIRE)
    sender = await start(security=SIGN_K1)
    seen: list[Any] = []
    if isinstance(cluster, NatsCluster):
        nc = await cluster.raw()

        async def take(msg: Any) -> None:
            seen.append(msg)

        await nc.subscribe(f"{cluster.prefix}.evt.sec.note", cb=take)
        await nc.flush()
    big = {"rows": [{"sku": f"A{i % 50}", "note": "lorem ipsum dolor"} for i in range(5000)]}
    plain = msgspec.json.encode(big)
    assert len(plain) > 200_000
    await sender.emit("sec.note", big)
    await eventually(lambda: len(till(receiver).notes) == 1)
    assert till(receiver).notes == [big]
    assert dict(receiver.transport.rejected) == {}
    if isinstance(cluster, NatsCluster):
        await eventually(lambda: len(seen) == 1)
        raw = seen[0]
        assert raw.headers["Organelle-Encoding"] == "zstd"
        assert raw.headers["content-type"] == "application/json"  # the uncompressed media type
        assert raw.headers["Organelle-Signature"].startswith("k1:hmac-sha256:")
        assert len(raw.data) < len(plain) // 20


async def test_a_decompression_bomb_is_refused(cluster: Cluster, start: Start) -> None:
    receiver = await start(Till)
    packer = zlib.compressobj(9, wbits=31)
    bomb = b"".join(packer.compress(bytes(1 << 20)) for _ in range(64)) + packer.flush()
    assert len(bomb) < 100_000  # 64 MiB of zeros, well under the 1 MiB message limit
    headers, _ = message({}, "sec.note", None)
    await cluster.inject("sec.note", {**headers, "Organelle-Encoding": "gzip"}, bomb)
    await cluster.inject("sec.note", {**headers, "Organelle-Encoding": "br"}, b"xx")
    await cluster.inject("sec.note", headers, b'{"after": true}')
    await eventually(lambda: len(till(receiver).notes) == 1)
    assert till(receiver).notes == [{"after": True}]
    assert dict(receiver.transport.rejected) == {"too_large": 1, "encoding": 1}


# -- protected fields --------------------------------------------------------------------
async def test_protected_fields_are_ciphertext_on_the_wire(cluster: Cluster, start: Start) -> None:
    keyed = await start(Till, security={"field_keys": {"f1": F1}})
    keyless = await start(Till)
    sender = await start(security={"field_kid": "f1", "field_keys": {"f1": F1}})
    seen: list[Any] = []
    if isinstance(cluster, NatsCluster):
        nc = await cluster.raw()

        async def take(msg: Any) -> None:
            seen.append(msg)

        await nc.subscribe(f"{cluster.prefix}.evt.sec.charged", cb=take)
        await nc.flush()
    await sender.emit(Charged(order="o-1", card="4111 1111", email="ada@example.org"))
    await eventually(lambda: len(till(keyed).charged) == len(till(keyless).charged) == 1)
    assert till(keyed).charged == [Charged("o-1", "4111 1111", "ada@example.org")]
    blind = till(keyless).charged[0]
    assert blind.order == "o-1"
    assert blind.card.startswith("enc:f1:")
    assert blind.email.startswith("enc:f1:")
    if isinstance(cluster, NatsCluster):
        await eventually(lambda: len(seen) == 1)
        doc = msgspec.json.decode(seen[0].data)
        assert doc["order"] == "o-1"
        assert doc["card"].startswith("enc:f1:")
        assert b"4111" not in seen[0].data
        assert b"ada@" not in seen[0].data


async def test_a_tampered_protected_field_is_dropped(cluster: Cluster, start: Start) -> None:
    receiver = await start(Till, security={"field_keys": {"f1": F1}})
    sec = {"field_kid": "f1", "field_keys": {"f1": F1}}
    headers, body = message(sec, "sec.charged", Charged(order="o-1", card="4111", email="e"))
    doc = msgspec.json.decode(body)
    doc["email"], doc["card"] = doc["card"], doc["email"]  # swapped between fields
    await cluster.inject("sec.charged", headers, msgspec.json.encode(doc))
    await cluster.inject("sec.charged", headers, body)
    await eventually(lambda: len(till(receiver).charged) == 1)
    assert till(receiver).charged[0].card == "4111"
    assert dict(receiver.transport.rejected) == {"field": 1}


# -- config ------------------------------------------------------------------------------
async def test_bad_security_settings_fail_the_start(cluster: Cluster) -> None:
    config = cluster.config({"sign_kid": "k9", "keys": {"k1": K1}})
    with pytest.raises(ConfigError) as err:
        async with running(config=config):
            pass
    assert err.value.details["key"] == "kernel.transport_options.security.sign_kid"
