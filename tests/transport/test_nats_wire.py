"""``NatsWire`` closes its socket on every way a connection ends: failed, cancelled, closed.

Each scenario runs on an event loop of its own that is closed the moment the
scenario returns: a socket whose close is still a queued callback, or still
waits on the server (a TLS close_notify), is then never closed, and the
garbage collector reports it as a ``ResourceWarning``. Under
``filterwarnings = error`` such a warning fails whichever test happens to
collect it, which is how this leak showed up (as a flaky
``test_plain_nkey_user``).

Misbehaving servers are tiny asyncio servers on 127.0.0.1 scripted per test.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from organelle.errors import ConfigError, TransportError
from organelle.testing.servers import NatsServer
from organelle.transport._nats_options import NatsOptions, Server
from organelle.transport._nats_wire import NatsWire

from .pki import Pki, make_pki

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
TOKEN = "wire-t0k3n"  # noqa: S105 - a test value
INFO = {"server_id": "fake", "version": "2.10.0", "max_payload": 1048576, "nonce": "n0nce"}


def _resource_warnings(scenario: Callable[[], Coroutine[Any, Any, None]]) -> list[str]:
    """Run ``scenario`` on a fresh loop, close the loop at once, return what GC reports."""
    with warnings.catch_warnings(record=True):  # garbage left by earlier tests is not ours
        warnings.simplefilter("always")
        gc.collect()
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


def _options(*servers: Server, **options: Any) -> NatsOptions:
    return NatsOptions(servers=servers, node="wire-test", **{"connect_timeout_s": 2.0, **options})


@contextlib.asynccontextmanager
async def _fake_nats(script: Script) -> AsyncIterator[Server]:
    """A server on 127.0.0.1 that runs ``script`` per connection; all closed on exit."""
    handlers: set[asyncio.Task[Any]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            with contextlib.suppress(ConnectionError):
                await script(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield Server("127.0.0.1", server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()
        async with asyncio.timeout(5):  # the client hung up, so each handler ends
            await asyncio.gather(*handlers, return_exceptions=True)


async def _send_info(writer: asyncio.StreamWriter, **extra: Any) -> None:
    writer.write(b"INFO " + json.dumps({**INFO, **extra}).encode() + b"\r\n")
    await writer.drain()


async def _until_hangup(reader: asyncio.StreamReader) -> None:
    await reader.read()  # b"" once the client closed its end


def _refused_by(script: Script, error: type[Exception], **options: Any) -> str:
    """Connect to a fake server running ``script``; the connect must fail with ``error``."""
    messages: list[str] = []

    async def scenario() -> None:
        async with _fake_nats(script) as server:
            wire = NatsWire(_options(server, **options))
            with pytest.raises(error) as info:
                await wire.connect()
            messages.append(str(info.value))
            await wire.close()

    assert _resource_warnings(scenario) == []
    return messages[0]


# -- handshakes that fail -----------------------------------------------------------------
def test_a_server_that_closes_right_after_info() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _send_info(writer)

    assert "connection lost" in _refused_by(script, TransportError)


def test_a_server_that_closes_before_info() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        return

    assert "cannot connect" in _refused_by(script, TransportError)


def test_an_unreadable_info() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"INFO {not json\r\n")
        await writer.drain()
        await _until_hangup(reader)

    assert "cannot connect" in _refused_by(script, TransportError)


def test_a_server_that_never_sends_info_times_out() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _until_hangup(reader)

    assert "TimeoutError" in _refused_by(script, TransportError, connect_timeout_s=0.2)


def test_refused_credentials() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _send_info(writer, auth_required=True)
        await reader.readline()  # CONNECT
        writer.write(b"-ERR 'Authorization Violation'\r\n")
        await writer.drain()
        await _until_hangup(reader)

    message = _refused_by(script, TransportError, token="wrong")  # noqa: S106
    assert "Authorization Violation" in message


def test_a_tls_handshake_the_server_breaks_off() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _send_info(writer, tls_required=True)
        await reader.read(5)  # the start of the ClientHello, then hang up

    assert "cannot connect" in _refused_by(script, TransportError)


def test_tls_configured_but_not_offered() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _send_info(writer)
        await _until_hangup(reader)

    async def scenario() -> None:
        async with _fake_nats(script) as plain:
            wire = NatsWire(_options(replace(plain, tls=True)))
            with pytest.raises(TransportError, match="does not offer TLS"):
                await wire.connect()

    assert _resource_warnings(scenario) == []


def test_an_nkey_seed_that_cannot_sign(tmp_path: Path) -> None:
    """The seed is read when the nonce arrives, mid-handshake: a ConfigError, socket closed."""
    not_a_seed = tmp_path / "user.nk"
    not_a_seed.write_text("nothing here\n")

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _send_info(writer, auth_required=True)
        await _until_hangup(reader)

    assert "no user seed" in _refused_by(script, ConfigError, nkey_seed=str(not_a_seed))


def test_a_handshake_cancelled_while_waiting_for_the_server() -> None:
    async def scenario() -> None:
        got_connect = asyncio.Event()

        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await _send_info(writer)
            await reader.readline()  # CONNECT; the PONG never comes
            got_connect.set()
            await _until_hangup(reader)

        async with _fake_nats(script) as server:
            wire = NatsWire(_options(server))
            attempt = asyncio.ensure_future(wire.connect())
            await got_connect.wait()
            attempt.cancel()
            with pytest.raises(asyncio.CancelledError):
                await attempt
            assert wire._proto is None

    assert _resource_warnings(scenario) == []


# -- against a real server ------------------------------------------------------------------
@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_server(pki: Pki) -> Iterator[NatsServer]:
    args = ["--tls", "--tlscert", str(pki.server_cert), "--tlskey", str(pki.server_key)]
    with NatsServer(extra_args=args) as server:
        yield server


@pytest.fixture(scope="module")
def token_server() -> Iterator[NatsServer]:
    with NatsServer(extra_args=["--auth", TOKEN]) as server:
        yield server


def test_a_wrong_token_against_nats_server(token_server: NatsServer) -> None:
    async def scenario() -> None:
        wire = NatsWire(_options(Server("127.0.0.1", token_server.port), token="wrong"))  # noqa: S106
        with pytest.raises(TransportError, match="Authorization Violation"):
            await wire.connect()

    assert _resource_warnings(scenario) == []


def test_an_untrusted_certificate(tls_server: NatsServer, pki: Pki) -> None:
    async def scenario() -> None:
        server = Server("127.0.0.1", tls_server.port, tls=True)
        wire = NatsWire(_options(server, tls_ca=str(pki.other_ca)))
        with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
            await wire.connect()

    assert _resource_warnings(scenario) == []


def test_close_over_tls_waits_for_the_socket(tls_server: NatsServer, pki: Pki) -> None:
    """The flake's cause: close() returned while the TLS close_notify was still in flight."""

    async def scenario() -> None:
        server = Server("127.0.0.1", tls_server.port, tls=True)
        wire = NatsWire(_options(server, tls_ca=str(pki.ca)))
        await wire.connect()
        await wire.flush()
        await wire.close()
        assert not wire.connected

    for _ in range(3):  # the race was lost often, not always
        assert _resource_warnings(scenario) == []


def test_close_of_a_plain_connection(token_server: NatsServer) -> None:
    async def scenario() -> None:
        wire = NatsWire(_options(Server("127.0.0.1", token_server.port), token=TOKEN))
        await wire.connect()
        await wire.close()

    assert _resource_warnings(scenario) == []
