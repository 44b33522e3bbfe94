"""Connection options: server pools, credentials, precise config errors; auth against a real server."""

from __future__ import annotations

from typing import Any

import pytest

from organelle import Kernel
from organelle.config.settings import parse_settings
from organelle.errors import ConfigError, TransportError
from organelle.testing.servers import NatsServer
from organelle.transport._nats_options import Server, parse_options

from .conftest import node_config
from .nodes import Item, Peer
from .nodes import Server as ServerModule


def options(transport: str, **opts: Any) -> Any:
    return parse_options(
        parse_settings({"transport": transport, "transport_options": opts, "node": "n1"})
    )


def test_pool_from_url_list_and_servers_option() -> None:
    opts = options("nats://a:4222,b:4300", servers=["tls://c"])
    assert opts.servers == (Server("a", 4222), Server("b", 4300), Server("c", 4222, tls=True))
    assert opts.node == "n1"
    assert opts.bucket == "org_nodes"


def test_credentials_in_urls_and_options() -> None:
    assert (options("nats://u:p%40ss@h").user, options("nats://u:p%40ss@h").password) == (
        "u",
        "p@ss",
    )
    assert options("nats://s3cret@h").token == "s3cret"  # noqa: S105 - a test value
    assert options("nats://u:p@h", user="other", password="x").user == "other"  # noqa: S106


@pytest.mark.parametrize(
    ("transport", "opts", "key"),
    [
        ("nats://h", {"colour": 1}, "kernel.transport_options.colour"),
        ("nats://h", {"codec": "xml"}, "kernel.transport_options.codec"),
        ("nats://h", {"prefix": "a.b"}, "kernel.transport_options.prefix"),
        ("nats://h", {"heartbeat_s": -1}, "kernel.transport_options.heartbeat_s"),
        ("nats://h", {"tls_ca": "/no/such/ca.pem"}, "kernel.transport_options.tls_ca"),
        ("nats://h:notaport", {}, "kernel.transport"),
        ("http://h", {}, "kernel.transport"),
    ],
)
def test_bad_options_name_the_key(transport: str, opts: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        options(transport, **opts)
    assert err.value.details["key"] == key


async def test_user_and_password_against_a_server(prefix: str) -> None:
    async with NatsServer(extra_args=["--user", "app", "--pass", "s3cret"]) as server:
        good = f"nats://app:s3cret@127.0.0.1:{server.port}"
        async with (
            Kernel([ServerModule], node_config(good, prefix)),
            Kernel([Peer], node_config(good, prefix)) as client,
        ):
            assert await client.call("server.echo", sku="auth") == Item(sku="auth", qty=1)
        bad = node_config(f"nats://app:wrong@127.0.0.1:{server.port}", prefix, connect_timeout_s=1)
        with pytest.raises(TransportError):
            await Kernel([Peer], bad).start()
