"""The options of the NATS transport: the URL plus ``[kernel] transport_options``.

Parsed once, with a precise ``ConfigError`` for a bad key, so a typo in the
config fails at start instead of silently connecting without TLS or auth.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from organelle.errors import ConfigError

if TYPE_CHECKING:
    from organelle.config.settings import KernelSettings

__all__ = ["NatsOptions", "Server", "parse_options"]

_TOKEN = re.compile(r"^[A-Za-z0-9_\-]+$")
_DEFAULT_PORT = 4222


@dataclass(frozen=True, slots=True)
class Server:
    """One server address of the pool."""

    host: str
    port: int
    tls: bool = False

    @property
    def url(self) -> str:
        """The address as a URL (never with credentials)."""
        return f"{'tls' if self.tls else 'nats'}://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class NatsOptions:
    """Everything the NATS transport can be told; see ``docs/nats.md``.

    Attributes:
        servers: the server pool (URL list plus ``servers``), tried in order.
        node: this node's name in the registry.
        prefix: first token of every subject (isolates apps sharing a server).
        codec: ``json`` (default, any client can read it) or ``msgpack``.
        user, password, token, creds: credentials (URL ones win when given there).
        nkey_seed: a file holding a plain nkey user's seed (``S…``), for servers
            with ``authorization { users = [{nkey: U…}] }``.
        tls_ca, tls_cert, tls_key, tls_hostname: TLS files and expected host name.
        connect_timeout_s: one connection attempt.
        reconnect_wait_s, reconnect_max_wait_s: backoff between rounds of the pool.
        ping_interval_s, max_outstanding_pings: stale-connection detection.
        no_responders_wait_s: how long a call retries while nobody listens
            (a node reconnecting) before ``UnavailableError``.
        max_payload_bytes: largest message accepted or sent (``0``: the server's).
        heartbeat_s, registry_ttl_s: registry heartbeat period and entry lifetime.
        registry_bucket: KV bucket of the registry (default ``<prefix>_nodes``).
        registry_replicas: replicas of that bucket when this node creates it.
        discover: add the cluster's other servers announced by the server to the pool.
    """

    servers: tuple[Server, ...]
    node: str
    prefix: str = "org"
    codec: str = "json"
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds: str | None = None
    nkey_seed: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_hostname: str | None = None
    connect_timeout_s: float = 2.0
    reconnect_wait_s: float = 0.05
    reconnect_max_wait_s: float = 2.0
    ping_interval_s: float = 10.0
    max_outstanding_pings: int = 2
    no_responders_wait_s: float = 1.0
    max_payload_bytes: int = 0
    heartbeat_s: float = 2.0
    registry_ttl_s: float = 6.0
    registry_bucket: str = ""
    registry_replicas: int = 1
    discover: bool = True

    @property
    def bucket(self) -> str:
        """The registry bucket name."""
        return self.registry_bucket or f"{self.prefix}_nodes"

    @property
    def urls(self) -> list[str]:
        """Server URLs without credentials (for nats-py)."""
        return [s.url for s in self.servers]

    def tls_context(self) -> ssl.SSLContext | None:
        """The client TLS context, or ``None`` when no server asks for TLS and no file is set."""
        wanted = any(s.tls for s in self.servers) or self.tls_ca or self.tls_cert
        if not wanted:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.tls_ca)
        if self.tls_cert:
            ctx.load_cert_chain(self.tls_cert, self.tls_key)
        return ctx


_FLOATS = {
    "connect_timeout_s",
    "reconnect_wait_s",
    "reconnect_max_wait_s",
    "ping_interval_s",
    "no_responders_wait_s",
    "heartbeat_s",
    "registry_ttl_s",
}
_INTS = {"max_outstanding_pings", "max_payload_bytes", "registry_replicas"}
_STRS = {
    "prefix",
    "codec",
    "user",
    "password",
    "token",
    "creds",
    "nkey_seed",
    "tls_ca",
    "tls_cert",
    "tls_key",
    "tls_hostname",
    "registry_bucket",
}
_KNOWN = {f.name for f in fields(NatsOptions)} - {"node"}


def _bad(key: str, reason: str) -> ConfigError:
    label = f"kernel.transport_options.{key}" if key != "transport" else "kernel.transport"
    return ConfigError(f"{label}: {reason}", details={"key": label})


def _servers(url: str, extra: object) -> tuple[list[Server], dict[str, str]]:
    """The pool from the comma-separated URL and ``servers``, plus credentials found in URLs."""
    items = [u for u in url.split(",") if u.strip()]
    if isinstance(extra, str):
        items += [u for u in extra.split(",") if u.strip()]
    elif isinstance(extra, list):
        items += [str(u) for u in extra]
    elif extra is not None:
        raise _bad("servers", "expected a list of URLs or a comma-separated string")
    pool: list[Server] = []
    creds: dict[str, str] = {}
    for raw in items:
        server = _server(raw.strip(), creds)
        if server not in pool:
            pool.append(server)
    if not pool:
        raise _bad("transport", "no server URL given")
    return pool, creds


def _server(text: str, creds: dict[str, str]) -> Server:
    """One URL of the pool; user:password or a token in it go to ``creds``."""
    parts = urlsplit(text if "://" in text else "nats://" + text)
    if parts.scheme not in ("nats", "tls") or not parts.hostname:
        raise _bad("transport", f"{text!r} is not a nats:// or tls:// server URL")
    try:
        port = parts.port or _DEFAULT_PORT
    except ValueError:
        raise _bad("transport", f"{text!r} has an invalid port") from None
    if parts.username and parts.password is not None:
        creds.setdefault("user", unquote(parts.username))
        creds.setdefault("password", unquote(parts.password))
    elif parts.username:
        creds.setdefault("token", unquote(parts.username))
    return Server(parts.hostname, port, parts.scheme == "tls")


def _coerce(key: str, value: Any) -> Any:
    if key in _FLOATS:
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise _bad(key, f"expected a positive number of seconds, got {value!r}")
        return float(value)
    if key in _INTS:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _bad(key, f"expected a non-negative integer, got {value!r}")
        return value
    if key in _STRS:
        if not isinstance(value, str):
            raise _bad(key, f"expected a string, got {value!r}")
        return value
    if not isinstance(value, bool):
        raise _bad(key, f"expected true or false, got {value!r}")
    return value


def _check_tls(values: dict[str, Any]) -> None:
    """Load the TLS files once now: a bad file is a ``ConfigError``, not a refused connect."""
    ca, cert, key = values.get("tls_ca"), values.get("tls_cert"), values.get("tls_key")
    if key is not None and cert is None:
        raise _bad("tls_key", "a key needs its certificate in tls_cert")
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    try:
        if ca is not None:
            ctx.load_verify_locations(cafile=ca)
    except (ssl.SSLError, OSError) as exc:
        raise _bad("tls_ca", f"cannot load CA bundle {ca!r}: {exc}") from None
    try:
        if cert is not None:
            ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise _bad("tls_cert", f"cannot load {cert!r} with key {key or cert!r}: {exc}") from None


def parse_options(settings: KernelSettings) -> NatsOptions:
    """Build the options from ``[kernel] transport``, ``transport_options`` and ``node``.

    Raises:
        ConfigError: unknown key, wrong type, bad URL, unknown codec, bad prefix.
    """
    raw = dict(settings.transport_options)
    pool, url_creds = _servers(settings.transport, raw.pop("servers", None))
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in _KNOWN:
            known = ", ".join(sorted(_KNOWN))
            raise _bad(key, f"unknown option; expected one of: {known}")
        values[key] = _coerce(key, value)
    for key, value in url_creds.items():
        values.setdefault(key, value)
    if values.get("codec", "json") not in ("json", "msgpack"):
        raise _bad("codec", "expected 'json' or 'msgpack'")
    if not _TOKEN.match(values.get("prefix", "org")):
        raise _bad("prefix", "one subject token of letters, digits, '_' or '-'")
    for path_key in ("creds", "tls_ca", "tls_cert", "tls_key"):
        path = values.get(path_key)
        if path is not None and not os.path.exists(path):  # noqa: PTH110 - a plain check
            raise _bad(path_key, f"no such file {path!r}")
    _check_tls(values)
    # pid plus a random suffix: two kernels in one process are two nodes
    node = settings.node or f"{socket.gethostname()}-{os.getpid()}-{os.urandom(2).hex()}"
    return NatsOptions(servers=tuple(pool), node=node, **values)
