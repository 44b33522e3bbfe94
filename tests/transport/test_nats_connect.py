"""One ``NatsConnectOptions`` for every NATS backend: parsing, and secured servers.

The job queue, the stream log and the NATS KV store connect with nats-py;
each must reach a TLS-only server (``tls_ca``; mutual TLS with
``tls_cert``/``tls_key``) and servers requiring a password or a ``.creds``
file, from URL parameters or keyword options alike. Certificates and
credentials come from the same helpers as the transport's TLS tests.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from organelle.config.settings import parse_settings
from organelle.errors import ConfigError, UnavailableError
from organelle.jobs import NewJob, open_queue
from organelle.storage import open_store
from organelle.streams import StreamSpec, open_log
from organelle.testing.servers import NatsServer
from organelle.transport._nats_options import parse_options
from organelle.transport.nats_connect import NatsConnectOptions, Server

from .creds import operator_setup, write
from .pki import Pki, make_pki

pytestmark = pytest.mark.timeout(60)

FAST_FAIL_S = 5.0


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


def _organelle_connections(server: NatsServer) -> dict[str, bool]:
    """The server's view of organelle's clients (``/connz``): name -> is it TLS."""
    url = f"http://127.0.0.1:{server.http_port}/connz"
    with urllib.request.urlopen(url, timeout=2) as resp:
        conns: list[dict[str, Any]] = json.load(resp).get("connections") or []
    return {
        c["name"].split(":")[0]: bool(c.get("tls_version"))
        for c in conns
        if c.get("name", "").startswith("organelle-")
    }


def _name() -> str:
    return f"T{uuid.uuid4().hex[:8].upper()}"


async def _queue_works(url: str, **options: Any) -> None:
    async with await open_queue(url, stream=_name(), **options) as queue:
        (job_id,) = await queue.enqueue([NewJob(name="work", params={"n": 1})])
        (lease,) = await queue.claim(names=["work"], limit=1)
        assert lease.job_id == job_id
        await queue.complete(lease)
        assert (await queue.get(job_id)).state == "succeeded"


async def _log_works(url: str, **options: Any) -> None:
    async with await open_log(url, prefix=_name(), **options) as log:
        await log.ensure("s", StreamSpec())
        part, off = await log.append("s", b"x", key="k")
        (rec,) = await log.read("s", part, off, 1)
        assert rec.data == b"x"


async def _store_works(url: str, **options: Any) -> None:
    async with await open_store(url, **options) as store:
        await store.put("k", 1)
        entry = await store.get("k")
        assert entry is not None
        assert entry.value == 1


# -- parsing ----------------------------------------------------------------------------
def test_a_url_with_several_servers_credentials_and_parameters(pki: Pki) -> None:
    opts = NatsConnectOptions.from_url(
        f"nats://app:p%40ss@h1:4300,h2?tls_ca={pki.ca}&connect_timeout_s=0.5"
    )
    assert opts.servers == (Server("h1", 4300), Server("h2", 4222))
    assert (opts.user, opts.password, opts.tls_ca, opts.connect_timeout_s) == (
        "app",
        "p@ss",
        str(pki.ca),
        0.5,
    )
    kwargs = opts.connect_kwargs()
    assert kwargs["servers"] == ["nats://h1:4300", "nats://h2:4222"]  # no secret in a URL
    assert (kwargs["user"], kwargs["password"], kwargs["connect_timeout"]) == ("app", "p@ss", 0.5)
    assert isinstance(kwargs["tls"], ssl.SSLContext)
    assert NatsConnectOptions.from_url("nats://s3cret@h").token == "s3cret"  # noqa: S105
    assert NatsConnectOptions.from_url("tls://h1,h2:5").urls == ["tls://h1:4222", "tls://h2:5"]


def test_keywords_win_over_the_url_and_refine_a_base(pki: Pki, tmp_path: Path) -> None:
    creds = write(tmp_path / "app.creds", "creds")
    seed = write(tmp_path / "app.nk", "seed")
    opts = NatsConnectOptions.from_url("nats://u:p@h?user=q", user="k", creds=creds)
    assert (opts.user, opts.password, opts.creds) == ("k", "p", creds)
    kwargs = opts.connect_kwargs()
    assert kwargs["user_credentials"] == creds
    assert "tls" not in kwargs  # nothing asks for TLS
    assert NatsConnectOptions.from_url("nats://h", nkey_seed=seed).connect_kwargs()[
        "nkeys_seed"
    ] == (seed)
    base = NatsConnectOptions.from_url("nats://h1,h2", tls_ca=str(pki.ca))
    assert NatsConnectOptions.from_url("nats://", base=base) == base  # its servers stand
    moved = NatsConnectOptions.from_url("nats://h3", base=base, token="t")  # noqa: S106
    assert (moved.urls, moved.tls_ca, moved.token) == (["nats://h3:4222"], str(pki.ca), "t")


def test_the_transport_options_are_connect_options() -> None:
    settings = parse_settings({"transport": "nats://u:p@h:4300", "node": "n1"})
    options = parse_options(settings)
    assert isinstance(options, NatsConnectOptions)  # hand them to any NATS backend
    assert options.connect_kwargs()["servers"] == ["nats://h:4300"]
    assert (options.user, options.password) == ("u", "p")


@pytest.mark.parametrize(
    ("url", "options", "key"),
    [
        ("nats://h?colour=red", {}, "url"),
        ("nats://h?servers=x", {}, "url"),
        ("http://h", {}, "url"),
        ("nats://h:port", {}, "url"),
        ("nats://h/path", {}, "url"),
        ("nats://", {}, "url"),
        ("nats://h", {"colour": "red"}, "colour"),
        ("nats://h", {"tls_ca": "/no/such/ca.pem"}, "tls_ca"),
        ("nats://h", {"creds": "/no/such.creds"}, "creds"),
        ("nats://h", {"connect_timeout_s": -1}, "connect_timeout_s"),
        ("nats://h", {"user": 7}, "user"),
        ("nats://h?connect_timeout_s=soon", {}, "connect_timeout_s"),
        ("nats://h", {"servers": 5}, "servers"),
    ],
)
def test_bad_options_are_config_errors_naming_the_key(
    url: str, options: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError) as err:
        NatsConnectOptions.from_url(url, **options)
    assert err.value.details["key"] == key
    assert err.value.code == "organelle.config"


def test_unusable_tls_files_are_config_errors(pki: Pki) -> None:
    with pytest.raises(ConfigError) as err:
        NatsConnectOptions.from_url("nats://h", tls_key=str(pki.client_key))
    assert err.value.details["key"] == "tls_key"  # a key without its certificate
    with pytest.raises(ConfigError) as err:
        NatsConnectOptions.from_url("nats://h", tls_ca=str(pki.client_key))
    assert err.value.details["key"] == "tls_ca"


@pytest.mark.parametrize(
    ("opener", "url"),
    [(open_queue, "nats://h"), (open_log, "nats://h"), (open_store, "nats-kv://h/b")],
)
async def test_every_nats_backend_checks_its_options_before_connecting(
    opener: Any, url: str
) -> None:
    for options, key in [
        ({"tls_ca": "/no/such/ca.pem"}, "tls_ca"),
        ({"colour": "red"}, "colour"),
        ({"connect": "nats://h"}, "connect"),
    ]:
        start = time.monotonic()
        with pytest.raises(ConfigError) as err:
            await opener(url, **options)
        assert err.value.details["key"] == key
        assert time.monotonic() - start < 1  # refused before any connection attempt
    with pytest.raises(ConfigError) as err:
        await opener(f"{url}?colour=red")
    assert "colour" in str(err.value)


# -- TLS --------------------------------------------------------------------------------
async def test_queue_log_and_store_over_tls(tls_server: NatsServer, pki: Pki) -> None:
    host = f"127.0.0.1:{tls_server.port}"
    ca = quote(str(pki.ca))
    await _queue_works(f"tls://{host}?tls_ca={ca}")  # the CA as a URL parameter
    await _log_works(f"nats://{host}", tls_ca=str(pki.ca))  # TLS the server requires
    await _store_works(f"nats-kv://{host}/{_name()}?tls_ca={ca}")
    async with (  # the server agrees: every one of them is TLS
        await open_queue(f"nats://{host}", stream=_name(), tls_ca=str(pki.ca)),
        await open_log(f"tls://{host}", prefix=_name(), tls_ca=str(pki.ca)),
        await open_store(f"nats-kv://{host}/{_name()}", tls_ca=str(pki.ca)),
    ):
        seen = _organelle_connections(tls_server)
        assert seen == {"organelle-jobs": True, "organelle-streams": True, "organelle-kv": True}


async def test_mutual_tls_and_a_shared_options_object(mtls_server: NatsServer, pki: Pki) -> None:
    host = f"127.0.0.1:{mtls_server.port}"
    connect = NatsConnectOptions.from_url(
        f"tls://{host}",
        tls_ca=str(pki.ca),
        tls_cert=str(pki.client_cert),
        tls_key=str(pki.client_key),
    )
    await _queue_works("nats://", connect=connect)  # the object's servers stand
    await _log_works("nats://", connect=connect)
    await _store_works(f"nats-kv://{host}/{_name()}", connect=connect)


async def test_an_untrusted_server_fails_fast(tls_server: NatsServer, pki: Pki) -> None:
    url = f"tls://127.0.0.1:{tls_server.port}"
    for opener in (open_queue, open_log):
        start = time.monotonic()
        with pytest.raises(UnavailableError):
            await opener(url, tls_ca=str(pki.other_ca), connect_timeout_s=0.5)
        assert time.monotonic() - start < FAST_FAIL_S


# -- credentials ------------------------------------------------------------------------
async def test_user_and_password() -> None:
    async with NatsServer(extra_args=["--user", "app", "--pass", "s3cret"]) as nats:
        good = f"nats://app:s3cret@127.0.0.1:{nats.port}"
        await _queue_works(good)
        await _log_works(f"nats://127.0.0.1:{nats.port}", user="app", password="s3cret")  # noqa: S106
        await _store_works(f"nats-kv://app:s3cret@127.0.0.1:{nats.port}/{_name()}")
        start = time.monotonic()
        with pytest.raises(UnavailableError):
            await open_queue(f"nats://app:wrong@127.0.0.1:{nats.port}?connect_timeout_s=0.5")
        assert time.monotonic() - start < FAST_FAIL_S


async def test_a_creds_file_with_an_operator_setup(tmp_path: Path) -> None:
    setup = operator_setup()
    good = write(tmp_path / "node.creds", setup.user_creds)
    stranger = write(tmp_path / "stranger.creds", setup.stranger_creds)
    async with NatsServer(config=setup.config) as nats:
        host = f"127.0.0.1:{nats.port}"
        await _queue_works(f"nats://{host}", creds=good)
        await _log_works(f"nats://{host}?creds={quote(good)}")
        await _store_works(f"nats-kv://{host}/{_name()}", creds=good)
        for opener in (open_queue, open_log):
            start = time.monotonic()
            with pytest.raises(UnavailableError):
                await opener(f"nats://{host}", creds=stranger, connect_timeout_s=0.5)
            assert time.monotonic() - start < FAST_FAIL_S
