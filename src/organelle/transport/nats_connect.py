"""``NatsConnectOptions``: how every NATS backend reaches its servers.

One type for the transport, the NATS job queue, the JetStream stream log and
the NATS KV store: the server pool, credentials (user and password, a token, a
``.creds`` file, an nkey seed) and TLS files. It is parsed once from a URL and
keyword options, with a ``ConfigError`` naming the key, so a typo fails when
the backend opens instead of silently connecting without TLS or auth::

    nats://user:pass@h1:4222,h2:4222?tls_ca=/etc/ca.pem&creds=/etc/app.creds

The transport's ``NatsOptions`` extends it with what only the transport needs;
the nats-py backends pass ``connect_kwargs()`` to ``nats.connect``. Keyword
options win over the URL, and the URL over a ``base`` object. Nothing here
imports the kernel or nats-py.
"""

from __future__ import annotations

import inspect
import os
import ssl
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from organelle.errors import ConfigError

__all__ = [
    "CONNECT_KEYS",
    "NatsConnectOptions",
    "Server",
    "backend_options",
    "parse_connect",
    "server_pool",
]

DEFAULT_PORT = 4222
_FILES = ("creds", "nkey_seed", "tls_ca", "tls_cert", "tls_key")


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
class NatsConnectOptions:
    """Where the servers are and how to prove who we are; see ``docs/nats.md``.

    Attributes:
        servers: the server pool, tried in order (``tls://`` ones demand TLS).
        user, password, token: plain credentials (also ``user:pass@`` or
            ``token@`` in a URL).
        creds: a ``.creds`` file (user JWT and nkey seed, operator mode).
        nkey_seed: a file holding a plain nkey user's seed (``SU…``).
        tls_ca, tls_cert, tls_key: the CA bundle to trust and a client
            certificate with its key (mutual TLS).
        tls_hostname: the name the server certificate must carry (default: the host).
        connect_timeout_s: one connection attempt to one server.
    """

    servers: tuple[Server, ...] = (Server("127.0.0.1", DEFAULT_PORT),)
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

    @property
    def urls(self) -> list[str]:
        """Server URLs without credentials."""
        return [s.url for s in self.servers]

    @property
    def open_budget_s(self) -> float:
        """How long a first connection may take over the whole pool before giving up.

        nats-py keeps retrying a first connect that no server accepts; the
        backends bound it with this so a refused or absent server fails fast.
        """
        return self.connect_timeout_s * max(1, len(self.servers)) + 1.0

    def tls_context(self) -> ssl.SSLContext | None:
        """The client TLS context, or ``None`` when no server asks for TLS and no file is set."""
        wanted = any(s.tls for s in self.servers) or self.tls_ca or self.tls_cert
        if not wanted:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.tls_ca)
        if self.tls_cert:
            ctx.load_cert_chain(self.tls_cert, self.tls_key)
        return ctx

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for nats-py's ``nats.connect`` / ``Client.connect``.

        The caller adds what is its own (``name``, reconnect policy, callbacks).
        """
        kwargs: dict[str, Any] = {"servers": self.urls, "connect_timeout": self.connect_timeout_s}
        tls = self.tls_context()
        if tls is not None:
            kwargs["tls"] = tls
        if self.tls_hostname is not None:
            kwargs["tls_hostname"] = self.tls_hostname
        if self.user is not None:
            kwargs["user"] = self.user
            kwargs["password"] = self.password or ""
        if self.token is not None:
            kwargs["token"] = self.token
        if self.creds is not None:
            kwargs["user_credentials"] = self.creds
        if self.nkey_seed is not None:
            kwargs["nkeys_seed"] = self.nkey_seed
        return kwargs

    @staticmethod
    def from_url(
        url: str, *, base: NatsConnectOptions | None = None, **options: Any
    ) -> NatsConnectOptions:
        """Parse ``nats://[user:pass@]h1:4222,h2?tls_ca=…`` plus keyword options.

        Raises:
            ConfigError: bad URL, unknown key, wrong type, unusable file.
        """
        values, _ = parse_connect(url, options, base=base)
        return NatsConnectOptions(**(values if base is None else _fields(base) | values))

    @staticmethod
    def coerce(servers: NatsConnectOptions | Sequence[str] | str) -> NatsConnectOptions:
        """What a NATS backend's ``servers`` argument may be: options, a URL or URLs."""
        if isinstance(servers, NatsConnectOptions):
            return servers
        text = servers if isinstance(servers, str) else ",".join(servers)
        return NatsConnectOptions.from_url(text)


CONNECT_KEYS: frozenset[str] = frozenset(f.name for f in fields(NatsConnectOptions))
"""Option names ``parse_connect`` takes (``servers`` adds to the URL's pool)."""
_PARAMS = CONNECT_KEYS - {"servers"}  # what a URL's query may set


class _Parse:
    """One parse: where its errors point and which keys the caller takes for itself."""

    def __init__(
        self, key_prefix: str, url_key: str, known: Collection[str], query_known: Collection[str]
    ) -> None:
        self.key_prefix = key_prefix
        self.url_key = url_key
        self.known = set(known) - CONNECT_KEYS
        self.query_known = set(query_known)

    def bad(self, key: str, reason: str) -> ConfigError:
        label = self.url_key if key == "url" else f"{self.key_prefix}{key}"
        return ConfigError(f"{label}: {reason}", details={"key": label})

    def split(
        self, pairs: Iterable[tuple[str, Any]], *, in_url: bool
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Connection values and the caller's own, from URL parameters or keyword options."""
        mine, own = {}, {}
        takes = self.query_known if in_url else self.known
        for key, value in pairs:
            if key in takes:
                own[key] = value
            elif key in _PARAMS:
                if value is not None:  # ``token=None``: not set
                    mine[key] = _coerce(key, value, self)
            elif key == "servers" and not in_url:
                pass  # the pool is read by ``servers``
            elif in_url:
                expected = ", ".join(sorted(_PARAMS | takes))
                raise self.bad("url", f"unknown URL parameter {key!r}; expected one of: {expected}")
            else:
                expected = ", ".join(sorted(CONNECT_KEYS | takes))
                raise self.bad(key, f"unknown option; expected one of: {expected}")
        return mine, own

    def servers(self, head: str, extra: object) -> tuple[list[Server], dict[str, str]]:
        """The pool from the comma-separated URL and ``servers``, plus credentials in URLs."""
        items = [u.strip() for u in head.split(",") if u.strip()]
        if isinstance(extra, str):
            items += [u.strip() for u in extra.split(",") if u.strip()]
        elif isinstance(extra, Sequence):
            items += [str(u) for u in extra]
        elif extra is not None:
            raise self.bad("servers", "expected a list of URLs or a comma-separated string")
        scheme = items[0].split("://", 1)[0] if items and "://" in items[0] else "nats"
        pool: list[Server] = []
        creds: dict[str, str] = {}
        for text in items:
            server = self.server(text if "://" in text else f"{scheme}://{text}", creds)
            if server is not None and server not in pool:
                pool.append(server)
        return pool, creds

    def server(self, text: str, creds: dict[str, str]) -> Server | None:
        """One URL of the pool (``None``: ``nats://`` alone); credentials in it go to ``creds``."""
        parts = urlsplit(text)
        if parts.scheme not in ("nats", "tls"):
            raise self.bad("url", f"{text!r} is not a nats:// or tls:// server URL")
        if parts.path.strip("/"):
            raise self.bad("url", f"{text!r}: a NATS server URL has no path")
        if not parts.hostname:
            if parts.netloc:
                raise self.bad("url", f"{text!r} names no host")
            return None
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError:
            raise self.bad("url", f"{text!r} has an invalid port") from None
        if parts.username and parts.password is not None:
            creds.setdefault("user", unquote(parts.username))
            creds.setdefault("password", unquote(parts.password))
        elif parts.username:
            creds.setdefault("token", unquote(parts.username))
        return Server(parts.hostname, port, parts.scheme == "tls")


def parse_connect(
    url: str,
    options: Mapping[str, Any],
    *,
    known: Collection[str] = (),
    query_known: Collection[str] = (),
    base: NatsConnectOptions | None = None,
    key_prefix: str = "",
    url_key: str = "url",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split and check connection options from ``url`` (its query too) and ``options``.

    Args:
        url: one or several comma-separated ``nats://`` / ``tls://`` URLs; a
            host without a scheme takes the first URL's.
        options: keyword options (or a config table); connection keys are
            checked here, ``known`` ones are handed back untouched.
        known: the caller's own option names.
        query_known: the caller's own URL parameters (handed back as strings).
        base: options the URL and keywords refine (its servers stand when the
            URL names none).
        key_prefix: put before a key in errors (``kernel.transport_options.``).
        url_key: how errors name the URL (``kernel.transport``).

    Returns:
        The connection fields that were given (``servers`` always) and the
        caller's own options, keywords winning over URL parameters.

    Raises:
        ConfigError: unknown key, wrong type, bad URL, missing or unusable file.
    """
    parse = _Parse(key_prefix, url_key, known, query_known)
    head, _, query = url.partition("?")
    in_url = ((k, v[-1]) for k, v in parse_qs(query, keep_blank_values=True).items())
    values, own = parse.split(in_url, in_url=True)
    given, own_given = parse.split(options.items(), in_url=False)
    values |= given
    own |= own_given
    pool, url_creds = parse.servers(head, options.get("servers"))
    for key, value in url_creds.items():
        values.setdefault(key, value)
    if not pool:
        if base is None:
            raise parse.bad("url", "no server URL given")
        pool = list(base.servers)
    values["servers"] = tuple(pool)
    _check_files(values if base is None else _fields(base) | values, parse)
    return values, own


def server_pool(url: str, servers: object = None, *, url_key: str = "url") -> tuple[Server, ...]:
    """The servers ``url`` and a ``servers`` option name, without credentials.

    Reads nothing else (no option, no file): for describing where an app
    connects (its AsyncAPI document) on a machine that has none of its files.

    Raises:
        ConfigError: a server URL that is not ``nats://`` or ``tls://``, or has a bad port.
    """
    pool, _ = _Parse("", url_key, (), ()).servers(url.partition("?")[0], servers)
    return tuple(pool)


def _fields(options: NatsConnectOptions) -> dict[str, Any]:
    return {f.name: getattr(options, f.name) for f in fields(NatsConnectOptions)}


def _coerce(key: str, value: Any, err: _Parse) -> Any:
    if key == "connect_timeout_s":
        try:
            seconds = float(value) if isinstance(value, str) else value
        except ValueError:
            seconds = None
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
            raise err.bad(key, f"expected a positive number of seconds, got {value!r}")
        return float(seconds)
    if key in _FILES and isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise err.bad(key, f"expected a string, got {value!r}")
    return value


def _check_files(values: Mapping[str, Any], err: _Parse) -> None:
    """Every file must exist and the TLS ones load now: a ``ConfigError``, not a refused connect."""
    for name in _FILES:
        path = values.get(name)
        if path is not None and not os.path.exists(path):  # noqa: PTH110 - a plain check
            raise err.bad(name, f"no such file {path!r}")
    ca, cert, key = values.get("tls_ca"), values.get("tls_cert"), values.get("tls_key")
    if key is not None and cert is None:
        raise err.bad("tls_key", "a key needs its certificate in tls_cert")
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    try:
        if ca is not None:
            ctx.load_verify_locations(cafile=ca)
    except (ssl.SSLError, OSError) as exc:
        raise err.bad("tls_ca", f"cannot load CA bundle {ca!r}: {exc}") from None
    try:
        if cert is not None:
            ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise err.bad("tls_cert", f"cannot load {cert!r} with key {key or cert!r}: {exc}") from None


def backend_options(
    backend: type,
    url: str,
    options: Mapping[str, Any],
    *,
    query_known: Collection[str] = (),
) -> tuple[NatsConnectOptions, dict[str, Any]]:
    """For ``open_<port>``: the connection options and the keywords left for ``backend``.

    ``options`` may carry a ready ``connect=NatsConnectOptions(...)`` (the base
    the URL and the other keywords refine); any other keyword must be a
    connection option or one ``backend(...)`` takes.

    Raises:
        ConfigError: unknown key, wrong type, bad URL, unusable file.
    """
    opts = dict(options)
    base = opts.pop("connect", None)
    if base is not None and not isinstance(base, NatsConnectOptions):
        raise ConfigError(
            f"connect: expected NatsConnectOptions, got {type(base).__name__}",
            details={"key": "connect"},
        )
    known = _keywords(backend) - {"servers"}
    values, own = parse_connect(url, opts, known=known, query_known=query_known, base=base)
    merged = values if base is None else _fields(base) | values
    return NatsConnectOptions(**merged), own


def _keywords(cls: type) -> frozenset[str]:
    """The keyword options ``cls(...)`` takes, following ``**options`` into its bases."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = list(inspect.signature(init).parameters.values())[1:]
        names |= {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return frozenset(names)
