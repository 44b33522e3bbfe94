"""The broker goes away: calls in flight fail fast, new ones succeed once it is back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from organelle import Kernel
from organelle.errors import CallTimeoutError, NotFoundError, TransportError, UnavailableError
from organelle.testing import eventually
from organelle.testing.servers import NatsServer
from organelle.transport.nats import NatsTransport

from .conftest import node_config
from .nodes import Item, Peer, Server


@pytest.fixture
async def own_server() -> AsyncIterator[NatsServer]:
    async with NatsServer() as server:
        yield server


async def test_server_restart(own_server: NatsServer, prefix: str) -> None:
    cfg = node_config(own_server.url, prefix, kernel={"call_timeout_s": 10})
    async with Kernel([Server], cfg) as server, Kernel([Peer], cfg) as client:
        assert await client.call("server.echo", sku="before") == Item(sku="before", qty=1)
        in_flight = asyncio.create_task(
            client.call_with("server.sleep", {"seconds": 5}, timeout_s=8)
        )
        serving = server.module("server")
        assert isinstance(serving, Server)
        await serving.sleeping.wait()  # the call is in flight on the serving node
        start = time.monotonic()
        await asyncio.to_thread(own_server.stop)
        with pytest.raises(UnavailableError):
            await in_flight
        assert time.monotonic() - start < 3  # fails at the loss, not at the deadline
        # While the broker is away a call waits for it, never past its deadline.
        with pytest.raises(TransportError):
            await client.call_with("server.echo", {"sku": "away"}, timeout_s=0.3)
        assert not client.transport.connected
        await asyncio.to_thread(own_server.restart)
        # No restart of either node: both reconnect and resubscribe.
        result = await client.call_with("server.echo", {"sku": "after"}, timeout_s=8)
        assert result == Item(sku="after", qty=1)
        assert server.transport.connected
        for i in range(20):
            assert await client.call("server.echo", sku=str(i), qty=i + 1) == Item(
                sku=str(i), qty=i + 1
            )


async def test_unreachable_server_fails_start(prefix: str) -> None:
    from organelle.testing.servers import free_port

    cfg = node_config(f"nats://127.0.0.1:{free_port()}", prefix, connect_timeout_s=0.5)
    with pytest.raises(TransportError):
        await Kernel([Server], cfg).start()


async def test_deadline_bounds_a_call_while_nobody_answers(
    own_server: NatsServer, prefix: str
) -> None:
    cfg = node_config(own_server.url, prefix)
    async with Kernel([Server], cfg) as server, Kernel([Peer], cfg) as client:
        await client.wait_for("server", 5)
        # Announced but not answering (its subscriptions gone, as in a broker failover):
        # Unavailable after no_responders_wait_s, or the deadline, whichever comes first.
        transport = server.transport
        assert isinstance(transport, NatsTransport)
        for sid in transport._exposer.exposed["server"][1]:
            transport._wire.unsubscribe(sid)
        start = time.monotonic()
        with pytest.raises((UnavailableError, CallTimeoutError)):
            await client.call_with("server.echo", {"sku": "x"}, timeout_s=0.4)
        assert (
            time.monotonic() - start < 1.5
        )  # bounded by the deadline, with slack for 2 busy cores
        # Withdrawn: the registry no longer lists it, so the module is unknown.
        await server.transport.withdraw("server")
        # The withdrawal reaches the client with the next registry update.
        await eventually(lambda: not client.transport.versions("server"))
        with pytest.raises(NotFoundError):
            await client.call_with("server.echo", {"sku": "x"}, timeout_s=0.4)
