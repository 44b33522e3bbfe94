"""The claim-check of events: large payloads go through the blob store, on NATS and the memory cluster.

The must-hold case: a 10 MB payload crosses a NATS server whose
``max_payload`` is 1 MB, arrives intact, and the receiving node's memory for
it stays bounded (measured with ``tracemalloc`` around the receive path only:
the message captured off the wire is published again by a raw client).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import nats
import pytest

from organelle import Kernel, Module, on
from organelle.blobs import open_blobs
from organelle.envelope import EnvelopeFactory, parse_security
from organelle.envelope._claim import BLOB_URN, DATAREF, SHA256_HEADER, SIZE_HEADER, ClaimRef
from organelle.errors import ClaimCheckError, SignatureError, ValidationError
from organelle.kernel._claims import Claims
from organelle.testing import eventually, running
from organelle.testing.servers import NatsServer
from organelle.transport._event_wire import Claimed, EventWire
from organelle.transport._memory_broker import broker_named
from organelle.transport._nats_headers import context_from, parse_headers

from .conftest import node_config

pytestmark = pytest.mark.timeout(120)

MB = 1 << 20
K1 = "k1-shared-secret-for-tests-0001"


class Sink(Module):
    name = "sink"

    def __init__(self) -> None:
        self.got: list[str] = []

    @on("big.data", delivery="broadcast")
    async def take(self, text: str) -> None:
        self.got.append(text)


def sink(kernel: Kernel) -> Sink:
    module = kernel.module("sink")
    assert isinstance(module, Sink)
    return module


# -- NATS, max_payload 1 MB ---------------------------------------------------------------
@pytest.fixture(scope="module")
def small_nats() -> Iterator[NatsServer]:
    with NatsServer(config="max_payload: 1048576\n") as server:
        yield server


async def test_10mb_crosses_a_1mb_nats_server_intact_with_bounded_memory(
    small_nats: NatsServer, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    kernel = {"storage": "memory://", "blobs": f"file://{tmp_path}/blobs"}
    config = node_config(small_nats.url, prefix, kernel=kernel)
    text = os.urandom(5 * MB).hex()  # 10 MB of JSON string
    size = len(text) + 2
    nc = await nats.connect(small_nats.url)
    try:
        wire = await nc.subscribe(f"{prefix}.evt.big.data")
        async with running(Sink, config=config) as receiver, running(config=config) as sender:
            await sender.emit("big.data", text)
            await eventually(lambda: len(sink(receiver).got) == 1, timeout_s=30)
            assert sink(receiver).got[0] == text  # intact, and the handler saw no reference

            # What crossed NATS: an empty body and the reference, well under 1 MB.
            msg = await wire.next_msg(timeout=10)
            assert msg.data == b""
            headers = {k.lower(): v for k, v in (msg.headers or {}).items()}
            assert headers[DATAREF].startswith(BLOB_URN + "claims/events/")
            assert headers[SIZE_HEADER.lower()] == str(size)
            digest = hashlib.sha256(f'"{text}"'.encode()).hexdigest()
            assert headers[SHA256_HEADER.lower()] == digest

            # The receive path alone, measured: the same message again, by a raw client.
            sink(receiver).got.clear()
            tracemalloc.start()
            try:
                tracemalloc.reset_peak()
                await nc.publish(msg.subject, b"", headers=msg.headers)
                await nc.flush()
                await eventually(lambda: len(sink(receiver).got) == 1, timeout_s=30)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert sink(receiver).got[0] == text
            print(f"receive peak: {peak / MB:.1f} MiB for a {size / MB:.1f} MiB payload")
            # the buffer the blob is read into, the decoded str, one chunk, the rest
            assert peak < 3 * size
    finally:
        await nc.close()


async def test_without_the_claim_check_the_server_limit_applies(
    small_nats: NatsServer, tmp_path: Path
) -> None:
    kernel = {"storage": "memory://", "claim_check_above": 0, "blobs": f"file://{tmp_path}/b"}
    config = node_config(small_nats.url, f"t{uuid.uuid4().hex[:10]}", kernel=kernel)
    async with running(config=config) as sender:
        with pytest.raises(ValidationError, match="exceeds the server's 1048576"):
            await sender.emit("big.data", "x" * (2 * MB))
    assert not (tmp_path / "b").exists()


# -- the memory cluster -------------------------------------------------------------------
Start = Callable[..., Awaitable[Kernel]]


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", request.node.name) + uuid.uuid4().hex[:6]


@pytest.fixture
async def start(cluster: str, tmp_path: Path) -> AsyncIterator[Start]:
    """``await start(*modules, security=..., above=...)``: a node sharing the blob directory."""
    async with AsyncExitStack() as stack:

        async def start(
            *modules: Any, security: dict[str, Any] | None = None, above: int = 64 * 1024
        ) -> Kernel:
            options = {} if security is None else {"security": security}
            config = {
                "kernel": {
                    "transport": f"memory://{cluster}",
                    "transport_options": options,
                    "storage": "memory://",
                    "blobs": f"file://{tmp_path}/blobs",
                    "claim_check_above": above,
                }
            }
            return await stack.enter_async_context(running(*modules, config=config))

        yield start


async def test_below_the_threshold_nothing_goes_to_the_blob_store(
    start: Start, tmp_path: Path
) -> None:
    receiver = await start(Sink)
    sender = await start()
    await sender.emit("big.data", "x" * 60_000)
    await sender.drain()
    await eventually(lambda: sink(receiver).got == ["x" * 60_000])
    assert not (tmp_path / "blobs").exists()  # not even opened


async def test_a_signed_claimed_event_is_delivered(start: Start) -> None:
    signed = {"sign_kid": "k1", "keys": {"k1": K1}, "require_signatures": True}
    receiver = await start(Sink, security=signed)
    sender = await start(security=signed)
    text = "y" * (2 * MB)  # past the memory cluster's 1 MiB max_payload too
    await sender.emit("big.data", text)
    await eventually(lambda: sink(receiver).got == [text])
    assert dict(receiver.transport.rejected) == {}


def inject(cluster: str, topic: str, headers: dict[str, str], body: bytes = b"") -> None:
    lowered = {k.lower(): v for k, v in headers.items()}
    for member, module, handler in broker_named(cluster).deliveries(topic):
        member.take_event(module, handler, topic, body, lowered)


def claimed_headers(ref: ClaimRef, security: dict[str, Any] | None = None) -> dict[str, str]:
    """What a node sends for a claimed ``big.data`` event with this reference."""
    wire = EventWire(parse_security(security or {}), "json", logging.getLogger("test"))
    env = EnvelopeFactory("cc", "forger").make("big.data", None, None)
    block, _ = wire._frame(context_from({}), env, b"", MB, ref.headers())
    return parse_headers(block)[1]


async def test_a_missing_or_corrupted_blob_drops_the_event_counted(
    cluster: str, start: Start, tmp_path: Path
) -> None:
    receiver = await start(Sink)
    missing = ClaimRef(key="claims/events/gone", size=10, sha256="0" * 64)
    inject(cluster, "big.data", claimed_headers(missing))
    await receiver.drain()
    assert dict(receiver.transport.rejected) == {"claim_missing": 1}

    async with await open_blobs(f"file://{tmp_path}/blobs") as blobs:
        info = await blobs.put("claims/events/other", b'"other bytes"')
    assert info.sha256 is not None
    wrong_sha = ClaimRef(key=info.key, size=info.size, sha256="1" * 64)
    wrong_size = ClaimRef(key=info.key, size=info.size + 1, sha256=info.sha256)
    inject(cluster, "big.data", claimed_headers(wrong_sha))
    inject(cluster, "big.data", claimed_headers(wrong_size))
    await receiver.drain()
    assert dict(receiver.transport.rejected) == {"claim_missing": 1, "claim_integrity": 2}

    # A damaged data file (same size): the reader's SHA-256 check catches it at the end.
    sender = await start()
    [data_file] = (tmp_path / "blobs").rglob("*.data")
    data_file.write_bytes(b'"OTHER BYTES"')
    intact = ClaimRef(key=info.key, size=info.size, sha256=info.sha256)
    inject(cluster, "big.data", claimed_headers(intact))
    await receiver.drain()
    assert receiver.transport.rejected.get("claim_integrity") == 3
    assert sink(receiver).got == []
    # The node keeps serving: the next event arrives.
    await sender.emit("big.data", "ok")
    await eventually(lambda: sink(receiver).got == ["ok"])


async def test_the_signature_covers_the_reference(cluster: str, start: Start) -> None:
    signed = {"sign_kid": "k1", "keys": {"k1": K1}, "require_signatures": True}
    receiver = await start(Sink, security=signed)
    ref = ClaimRef(key="claims/events/x", size=10, sha256="0" * 64)
    headers = claimed_headers(ref, signed)
    headers[SIZE_HEADER.lower()] = "11"  # a relay changes the reference
    inject(cluster, "big.data", headers)
    await receiver.drain()
    assert dict(receiver.transport.rejected) == {"bad_signature": 1}  # refused before a fetch


# -- EventWire with the kernel's Claims, alone --------------------------------------------
class _Settings:
    def __init__(self, **values: Any) -> None:
        self.blobs = "memory://"
        self.claim_check_above = 1000
        self.claim_check_ttl_s = 60.0
        self.claim_check_record_ttl_s = None
        self.__dict__.update(values)


async def test_event_wire_claims_after_encoding_and_before_the_size_check() -> None:
    claims = Claims(_Settings)  # type: ignore[arg-type]
    signed = {"sign_kid": "k1", "keys": {"k1": K1}, "require_signatures": True}
    wire = EventWire(parse_security(signed), "json", logging.getLogger("test"), claims)
    env = EnvelopeFactory("cc", "n").make("big.data", {"blob": "z" * 5000}, None)
    block, body = await wire.seal(context_from({}), env, 2000)  # max_payload below the payload
    assert body == b""
    headers = parse_headers(block)[1]
    ref = wire.claim_of(headers)
    assert ref is not None
    assert ref.size > 5000
    out = await wire.redeem(Claimed("big.data", headers, body, ref))
    assert out.data == {"blob": "z" * 5000}
    assert DATAREF not in out.open().extensions  # the handler never sees the reference
    small = EnvelopeFactory("cc", "n").make("big.data", {"blob": "z"}, None)
    _, body = await wire.seal(context_from({}), small, 2000)
    assert body == b'{"blob":"z"}'
    assert claims.claimed == 1
    store = claims.store_if_open
    assert store is not None
    [info] = [i async for i in store.list()]
    assert info.expires_at == pytest.approx(info.created + 60.0)
    # A store that lost it: the typed error.
    await store.delete(ref.key)
    with pytest.raises(ClaimCheckError) as caught:
        await wire.redeem(Claimed("big.data", headers, b"", ref))
    assert caught.value.details == {"reason": "claim_missing", "key": ref.key}
    # Tampered reference headers under a signature: refused before anything is fetched.
    with pytest.raises(SignatureError):
        forged = {**headers, SHA256_HEADER.lower(): "f" * 64}
        await wire.redeem(Claimed("big.data", forged, b"", ref))
    await claims.close()
    assert claims.store_if_open is None
