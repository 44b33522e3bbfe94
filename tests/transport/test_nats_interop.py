"""A plain nats-py client speaks to organelle (docs/nats.md), and bad wire input gets typed errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import nats
import pytest

from organelle import Kernel
from organelle.testing import eventually

from .conftest import Config
from .nodes import Server


@pytest.fixture
async def node(config: Config) -> AsyncIterator[Kernel]:
    async with Kernel([Server], config(max_payload_bytes=2000)) as kernel:
        yield kernel


@pytest.fixture
async def nc(nats_server: Any) -> AsyncIterator[Any]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


async def call(
    nc: Any, subject: str, data: bytes, headers: dict[str, str] | None = None
) -> tuple[dict[str, str], Any]:
    msg = await nc.request(subject, data, timeout=5, headers=headers)
    return dict(msg.headers or {}), msg.data


async def test_raw_client_calls_an_rpc(node: Kernel, nc: Any, prefix: str) -> None:
    headers, data = await call(nc, f"{prefix}.rpc.server.echo", b'{"sku": "A1", "qty": 2}')
    # A JSON body a plain client reads as is; the header names the class for organelle callers.
    assert headers == {"Organelle-Type": "tests.transport.nodes:Item"}
    assert json.loads(data) == {"sku": "A1", "qty": 2}
    headers, data = await call(
        nc,
        f"{prefix}.rpc.server.whoami",
        b"{}",
        {"Organelle-Id": "req-1", "Organelle-Timeout-Ms": "1500", "Organelle-Meta": '{"k": "v"}'},
    )
    seen = json.loads(data)
    assert (seen["request_id"], seen["meta"]) == ("req-1", {"k": "v"})
    assert 1.0 < seen["remaining"] <= 1.5


async def test_raw_client_gets_typed_errors(node: Kernel, nc: Any, prefix: str) -> None:
    headers, data = await call(nc, f"{prefix}.rpc.server.fail", b'{"kind": "coffee"}')
    assert headers["Organelle-Error"] == "test.out_of_coffee"
    assert json.loads(data)["code"] == "test.out_of_coffee"


@pytest.mark.parametrize(
    ("data", "headers"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"sku": 5}', None),
        (b"{}", {"Organelle-Codec": "xml"}),
        (b"{}", {"Organelle-Timeout-Ms": "soon"}),
        (b"{}", {"Organelle-Meta": "[1]"}),
        (b'{"sku": "' + b"x" * 3000 + b'"}', None),
        (b"\xff\xfe", {"Organelle-Codec": "msgpack"}),
    ],
    ids=[
        "malformed",
        "not-object",
        "wrong-type",
        "unknown-codec",
        "bad-timeout",
        "bad-meta",
        "oversized",
        "bad-msgpack",
    ],
)
async def test_bad_input_gets_a_validation_error(
    node: Kernel, nc: Any, prefix: str, data: bytes, headers: dict[str, str] | None
) -> None:
    got, body = await call(nc, f"{prefix}.rpc.server.echo", data, headers)
    assert got["Organelle-Error"] == "organelle.validation"
    codec = got.get("Organelle-Codec", "json")
    decoded = msgspec.msgpack.decode(body) if codec == "msgpack" else json.loads(body)
    assert decoded["code"] == "organelle.validation"
    _, ok = await call(nc, f"{prefix}.rpc.server.echo", b'{"sku": "still-serving"}')
    assert json.loads(ok)["sku"] == "still-serving"


async def test_msgpack_request_gets_a_msgpack_reply(node: Kernel, nc: Any, prefix: str) -> None:
    body = msgspec.msgpack.encode({"sku": "A", "qty": 4})
    headers, data = await call(
        nc, f"{prefix}.rpc.server.echo", body, {"Organelle-Codec": "msgpack"}
    )
    assert headers["Organelle-Codec"] == "msgpack"
    assert msgspec.msgpack.decode(data) == {"sku": "A", "qty": 4}


async def test_events_both_ways(node: Kernel, nc: Any, prefix: str) -> None:
    server = node.module("server")
    assert isinstance(server, Server)
    await nc.publish(f"{prefix}.evt.shop.tea.created", b'{"id": 1}')
    await nc.publish(f"{prefix}.evt.shop.tea.created", b"{broken")  # dropped, node keeps going
    await nc.publish(f"{prefix}.evt.shop.cake.created", b'{"id": 2}')
    await eventually(lambda: len(server.seen) == 2)  # the raw events were delivered
    assert server.seen == [{"id": 1}, {"id": 2}]

    received: list[Any] = []

    async def on_msg(msg: Any) -> None:
        received.append((msg.subject, json.loads(msg.data), msg.headers))

    await nc.subscribe(f"{prefix}.evt.audit.>", cb=on_msg)
    await nc.flush()
    await node.emit("audit.login", {"user": "ada"}, meta={"tenant": "t1"})
    await eventually(lambda: len(received) == 1)  # the organelle event on a raw subscriber
    subject, payload, headers = received[0]
    assert (subject, payload) == (f"{prefix}.evt.audit.login", {"user": "ada"})
    assert json.loads(headers["Organelle-Meta"]) == {"tenant": "t1"}
    assert headers["Organelle-Id"]


async def test_request_without_reply_subject_is_ignored(node: Kernel, nc: Any, prefix: str) -> None:
    await nc.publish(f"{prefix}.rpc.server.echo", b'{"sku": "x"}')
    _, ok = await call(nc, f"{prefix}.rpc.server.echo", b'{"sku": "y"}')
    assert json.loads(ok)["sku"] == "y"
