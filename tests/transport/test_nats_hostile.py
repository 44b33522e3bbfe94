"""Hostile wire input over NATS: typed refusals, a node that keeps serving, logs that do not flood.

The sender is a plain nats-py client, or raw protocol lines where nats-py
cannot write the input (a subject that is not UTF-8).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import nats
import pytest

from organelle import Kernel
from organelle.testing import eventually

from .conftest import Config
from .nodes import Server

_DEEP = 50_000
_TIMEOUT_S = 10.0


@pytest.fixture
async def node(config: Config) -> AsyncIterator[Kernel]:
    async with Kernel([Server], config()) as kernel:
        yield kernel


@pytest.fixture
async def nc(nats_server: Any) -> AsyncIterator[Any]:
    client = await nats.connect(nats_server.url, max_reconnect_attempts=0)
    yield client
    await client.close()


async def _still_serving(nc: Any, prefix: str) -> None:
    msg = await nc.request(f"{prefix}.rpc.server.echo", b'{"sku": "ok"}', timeout=_TIMEOUT_S)
    assert json.loads(msg.data)["sku"] == "ok"


@pytest.mark.parametrize(
    ("data", "headers"),
    [
        (b'{"sku": ' + b"[" * _DEEP + b"]" * _DEEP + b"}", None),
        (b"\x81\xa3sku" + b"\x91" * _DEEP + b"\x90", {"Organelle-Codec": "msgpack"}),
        (b'{"sku": "x"}', {"Organelle-Meta": '{"k":' + "[" * _DEEP + "]" * _DEEP + "}"}),
    ],
    ids=["json", "msgpack", "meta"],
)
async def test_deep_nesting_gets_a_validation_error(
    node: Kernel, nc: Any, prefix: str, data: bytes, headers: dict[str, str] | None
) -> None:
    msg = await nc.request(f"{prefix}.rpc.server.echo", data, timeout=_TIMEOUT_S, headers=headers)
    assert msg.headers["Organelle-Error"] == "organelle.validation"
    if msg.headers.get("Organelle-Codec") == "msgpack":
        body = msgspec.msgpack.decode(msg.data)
    else:
        body = json.loads(msg.data)
    assert body["code"] == "organelle.validation"
    assert "nested too deeply" in body["message"]
    await _still_serving(nc, prefix)


async def _raw_request(port: int, subject: bytes, reply: bytes) -> bytes:
    """Send one request over raw protocol lines; return the reply's header block and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await reader.readline()  # INFO
        connect = {"verbose": False, "pedantic": False, "headers": True, "protocol": 1}
        writer.write(b"CONNECT %s\r\n" % json.dumps(connect).encode())
        writer.write(b"SUB %s 1\r\nPUB %s %s 2\r\n{}\r\nPING\r\n" % (reply, subject, reply))
        await writer.drain()
        async with asyncio.timeout(_TIMEOUT_S):
            while True:
                line = await reader.readline()
                if line.startswith((b"HMSG", b"MSG")):
                    size = int(line.split()[-1])
                    return await reader.readexactly(size + 2)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_a_method_that_is_not_utf8_gets_a_typed_reply(
    node: Kernel, nc: Any, prefix: str, nats_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="asyncio")
    subject = f"{prefix}.rpc.server.".encode() + b"\xff\xfe"
    got = await _raw_request(nats_server.port, subject, b"_INBOX.hostile")
    assert b"Organelle-Error: organelle.validation" in got
    assert b"UTF-8" in got
    await _still_serving(nc, prefix)
    gc.collect()  # a task that died unobserved reports itself when collected
    assert [r.getMessage() for r in caplog.records] == []


async def test_a_flood_of_malformed_events_logs_a_bounded_number_of_lines(
    node: Kernel, nc: Any, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="organelle")
    server = node.module("server")
    assert isinstance(server, Server)
    subject = f"{prefix}.evt.shop.tea.created"
    n = 10_000
    deep = b"[" * _DEEP + b"]" * _DEEP
    structured = {"content-type": "application/cloudevents+json"}
    for i in range(n):
        if i % 1000 == 0:  # a decoder's own failure (RecursionError) among them
            await nc.publish(subject, deep, headers=structured if i % 2000 else None)
        else:
            await nc.publish(subject, b"{broken %d" % i)
    await nc.publish(subject, b'{"after": "the flood"}')
    await nc.flush(timeout=_TIMEOUT_S)
    await eventually(lambda: server.seen == [{"after": "the flood"}], timeout_s=60)
    assert node.transport.rejected == {"malformed": n}
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) <= 2, [r.getMessage()[:200] for r in lines]  # one per interval
    assert "malformed" in lines[0].getMessage()
