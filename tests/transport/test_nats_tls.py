"""TLS, mutual TLS, tokens and credentials against real ``nats-server`` processes.

Each server is started by its fixture with its own config (certificates made
in ``tmp_path`` by ``pki``, keys and JWTs by ``creds``). A refused connection
must fail ``Kernel.start()`` at once with a ``TransportError`` (or a
``ConfigError`` for an unusable file) — never hang until some timeout.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from organelle import Kernel
from organelle.config.settings import parse_settings
from organelle.errors import ConfigError, TransportError
from organelle.testing.servers import NatsServer
from organelle.transport._nats_options import parse_options
from organelle.transport.nats import NatsTransport

from .conftest import node_config
from .creds import new_nkey, nkey_config, operator_setup, write
from .nodes import Item, Peer, Server
from .pki import Pki, make_pki

TOKEN = "t0k3n-for-tests"  # noqa: S105 - a test value
FAST_FAIL_S = 3.0  # a refused connection is reported well before any call deadline


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _tls_args(pki: Pki, *, verify_clients: bool) -> list[str]:
    args = ["--tls", "--tlscert", str(pki.server_cert), "--tlskey", str(pki.server_key)]
    if verify_clients:
        args += ["--tlsverify", "--tlscacert", str(pki.ca)]
    return args


@pytest.fixture(scope="module")
def tls_server(pki: Pki) -> Iterator[NatsServer]:
    with NatsServer(extra_args=_tls_args(pki, verify_clients=False)) as server:
        yield server


@pytest.fixture(scope="module")
def mtls_server(pki: Pki) -> Iterator[NatsServer]:
    with NatsServer(extra_args=_tls_args(pki, verify_clients=True)) as server:
        yield server


def _connections(server: NatsServer) -> list[dict[str, Any]]:
    """The server's own view of its clients (monitoring endpoint ``/connz``)."""
    url = f"http://127.0.0.1:{server.http_port}/connz?auth=1"
    with urllib.request.urlopen(url, timeout=2) as resp:
        conns: list[dict[str, Any]] = json.load(resp).get("connections") or []
    return conns


async def _refused(cfg: dict[str, Any], error: type[Exception] = TransportError) -> str:
    """Start a node with ``cfg``; it must fail fast with ``error``. Returns the message."""
    start = time.monotonic()
    with pytest.raises(error) as info:
        await Kernel([Peer], cfg).start()
    assert time.monotonic() - start < FAST_FAIL_S
    return str(info.value)


async def _serves_rpc(cfg: dict[str, Any]) -> tuple[Kernel, Kernel]:
    """Two nodes with ``cfg``: an RPC and the registry (JetStream) both work."""
    server, client = Kernel([Server], cfg), Kernel([Peer], cfg)
    await server.start()
    try:
        await client.start()
    except BaseException:
        await server.stop()
        raise
    assert await client.call("server.echo", sku="tls", qty=2) == Item(sku="tls", qty=2)
    await client.wait_for("server", timeout_s=5)  # read from the registry over its own link
    return server, client


# -- TLS --------------------------------------------------------------------------------
async def test_rpc_over_tls(tls_server: NatsServer, pki: Pki, prefix: str) -> None:
    url = f"tls://127.0.0.1:{tls_server.port}"
    server, client = await _serves_rpc(node_config(url, prefix, tls_ca=str(pki.ca)))
    try:
        assert isinstance(client.transport, NatsTransport)
        proto = client.transport._wire._proto
        assert proto is not None
        assert proto.transport is not None
        assert proto.transport.get_extra_info("ssl_object") is not None
        # The server agrees: every organelle connection, data and registry, is TLS.
        mine = [c for c in _connections(tls_server) if "organelle" in c.get("name", "")]
        assert len(mine) == 4, mine
        assert all(c.get("tls_version") for c in mine), mine
    finally:
        await client.stop()
        await server.stop()


async def test_tls_required_by_the_server_is_used_with_a_nats_url(
    tls_server: NatsServer, pki: Pki, prefix: str
) -> None:
    server, client = await _serves_rpc(node_config(tls_server.url, prefix, tls_ca=str(pki.ca)))
    await client.stop()
    await server.stop()


@pytest.mark.parametrize("ca", ["other", "system"])
async def test_an_untrusted_server_certificate_is_refused(
    tls_server: NatsServer, pki: Pki, prefix: str, ca: str
) -> None:
    options: dict[str, Any] = {"connect_timeout_s": 1}
    if ca == "other":
        options["tls_ca"] = str(pki.other_ca)
    message = await _refused(node_config(tls_server.url, prefix, **options))
    assert "CERTIFICATE_VERIFY_FAILED" in message
    assert tls_server.url in message


async def test_a_wrong_server_name_is_refused(
    tls_server: NatsServer, pki: Pki, prefix: str
) -> None:
    cfg = node_config(tls_server.url, prefix, tls_ca=str(pki.ca), tls_hostname="nats.example")
    assert "CERTIFICATE_VERIFY_FAILED" in await _refused(cfg)


async def test_tls_options_never_fall_back_to_plain_text(
    nats_server: NatsServer, pki: Pki, prefix: str
) -> None:
    """A server without TLS is refused when TLS is configured: no silent downgrade."""
    plain = f"127.0.0.1:{nats_server.port}"
    assert "does not offer TLS" in await _refused(
        node_config(f"nats://{plain}", prefix, tls_ca=str(pki.ca), connect_timeout_s=1)
    )
    assert "does not offer TLS" in await _refused(
        node_config(f"tls://{plain}", prefix, connect_timeout_s=1)
    )


async def test_mutual_tls(mtls_server: NatsServer, pki: Pki, prefix: str) -> None:
    cfg = node_config(
        mtls_server.url,
        prefix,
        tls_ca=str(pki.ca),
        tls_cert=str(pki.client_cert),
        tls_key=str(pki.client_key),
    )
    server, client = await _serves_rpc(cfg)
    await client.stop()
    await server.stop()


async def test_mutual_tls_without_a_client_certificate_is_refused(
    mtls_server: NatsServer, pki: Pki, prefix: str
) -> None:
    cfg = node_config(mtls_server.url, prefix, tls_ca=str(pki.ca), connect_timeout_s=1)
    # The server's TLS alert (CERTIFICATE_REQUIRED) or, racing it, a reset: never a hang.
    assert "NATS connection lost" in await _refused(cfg)


async def test_a_client_certificate_from_another_ca_is_refused(
    mtls_server: NatsServer, pki: Pki, prefix: str, tmp_path: Path
) -> None:
    stranger = make_pki(tmp_path)
    cfg = node_config(
        mtls_server.url,
        prefix,
        tls_ca=str(pki.ca),
        tls_cert=str(stranger.client_cert),
        tls_key=str(stranger.client_key),
        connect_timeout_s=1,
    )
    assert "NATS connection lost" in await _refused(cfg)  # UNKNOWN_CA, or a reset


async def test_a_key_that_does_not_match_the_certificate_is_a_config_error(
    mtls_server: NatsServer, pki: Pki, prefix: str
) -> None:
    cfg = node_config(
        mtls_server.url,
        prefix,
        tls_ca=str(pki.ca),
        tls_cert=str(pki.client_cert),
        tls_key=str(pki.server_key),
    )
    assert "tls_cert" in await _refused(cfg, ConfigError)


@pytest.mark.parametrize(
    ("files", "key"),
    [
        ({"tls_key": "client_key"}, "tls_key"),  # a key without its certificate
        ({"tls_ca": "client_key"}, "tls_ca"),  # not a CA bundle
        ({"tls_cert": "ca", "tls_key": "client_key"}, "tls_cert"),
    ],
)
def test_unusable_tls_files_are_config_errors(pki: Pki, files: dict[str, str], key: str) -> None:
    options = {name: str(getattr(pki, attr)) for name, attr in files.items()}
    settings = parse_settings({"transport": "tls://h", "transport_options": options})
    with pytest.raises(ConfigError) as err:
        parse_options(settings)
    assert err.value.details["key"] == f"kernel.transport_options.{key}"


# -- token ------------------------------------------------------------------------------
async def test_token(prefix: str) -> None:
    async with NatsServer(extra_args=["--auth", TOKEN]) as nats:
        server, client = await _serves_rpc(node_config(nats.url, prefix, token=TOKEN))
        await client.stop()
        await server.stop()
        url = f"nats://{TOKEN}@127.0.0.1:{nats.port}"  # the token may ride in the URL too
        server, client = await _serves_rpc(node_config(url, prefix))
        await client.stop()
        await server.stop()
        bad = node_config(nats.url, prefix, token="wrong", connect_timeout_s=1)  # noqa: S106
        assert "Authorization Violation" in await _refused(bad)
        assert "Authorization Violation" in await _refused(node_config(nats.url, prefix))


# -- credentials (operator mode: user JWT + nkey seed) ----------------------------------
async def test_creds_file_with_an_operator_setup(prefix: str, tmp_path: Path) -> None:
    setup = operator_setup()
    good = write(tmp_path / "node.creds", setup.user_creds)
    stranger = write(tmp_path / "stranger.creds", setup.stranger_creds)
    async with NatsServer(config=setup.config) as nats:
        server, client = await _serves_rpc(node_config(nats.url, prefix, creds=good))
        await client.stop()
        await server.stop()
        bad = node_config(nats.url, prefix, creds=stranger, connect_timeout_s=1)
        assert "Authorization Violation" in await _refused(bad)
        assert "Authorization Violation" in await _refused(node_config(nats.url, prefix))


async def test_a_bare_nkey_seed_is_not_a_creds_file(prefix: str, tmp_path: Path) -> None:
    """A seed-only file given as ``creds`` is a ConfigError (it belongs in ``nkey_seed``)."""
    user = new_nkey("user")
    seed_only = write(
        tmp_path / "user.nk",
        f"-----BEGIN USER NKEY SEED-----\n{user.seed}\n------END USER NKEY SEED------\n",
    )
    async with NatsServer(config=nkey_config(user)) as nats:
        cfg = node_config(nats.url, prefix, creds=seed_only, connect_timeout_s=1)
        assert "no NATS USER JWT" in await _refused(cfg, ConfigError)


async def test_plain_nkey_user(prefix: str, tmp_path: Path) -> None:
    """A plain nkey user (``nkey_seed``) connects and serves; another key is refused."""
    user, stranger = new_nkey("user"), new_nkey("user")
    seed = write(tmp_path / "user.nk", user.seed + "\n")
    other = write(tmp_path / "other.nk", stranger.seed + "\n")
    async with NatsServer(config=nkey_config(user)) as nats:
        cfg = node_config(nats.url, prefix, nkey_seed=seed)
        async with Kernel([Server], cfg) as server, Kernel([Peer], cfg) as client:
            await client.wait_for("server", 5)
            assert await client.call("server.echo", sku="nk") == Item(sku="nk", qty=1)
            assert server.running
        bad = node_config(nats.url, prefix, nkey_seed=other, connect_timeout_s=1)
        assert "Authorization Violation" in await _refused(bad)
