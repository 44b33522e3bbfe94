"""The options of the NATS transport: the URL plus ``[kernel] transport_options``.

Parsed once, with a precise ``ConfigError`` for a bad key, so a typo in the
config fails at start instead of silently connecting without TLS or auth. The
connection part (servers, credentials, TLS) is the ``NatsConnectOptions``
every NATS backend shares; ``NatsOptions`` adds what only the transport needs.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from organelle.envelope._security import EventSecurity, parse_security
from organelle.errors import ConfigError
from organelle.transport.nats_connect import CONNECT_KEYS, NatsConnectOptions, Server, parse_connect

if TYPE_CHECKING:
    from organelle.config.settings import KernelSettings

__all__ = ["NatsOptions", "Server", "parse_options"]

_TOKEN = re.compile(r"^[A-Za-z0-9_\-]+$")
_PREFIX = "kernel.transport_options."


@dataclass(frozen=True, slots=True, kw_only=True)
class NatsOptions(NatsConnectOptions):
    """Everything the NATS transport can be told; see ``docs/nats.md``.

    The connection fields (servers, credentials, TLS, ``connect_timeout_s``)
    are ``NatsConnectOptions``'s, so these options can be handed to any other
    NATS backend as they are.

    Attributes:
        node: this node's name in the registry.
        prefix: first token of every subject (isolates apps sharing a server).
        codec: ``json`` (default, any client can read it) or ``msgpack``.
        reconnect_wait_s, reconnect_max_wait_s: backoff between rounds of the pool.
        ping_interval_s, max_outstanding_pings: stale-connection detection.
        no_responders_wait_s: how long a call retries while nobody listens
            (a node reconnecting) before ``UnavailableError``.
        max_payload_bytes: largest message accepted or sent (``0``: the server's).
        max_backlog_bytes: incoming events (bytes on the wire) held while the local
            queue is full; past it an event is dropped and counted (``overflow``).
        shed_backlog_bytes: past this backlog a node leaves its balanced event
            groups (other members take the events) until the backlog is half
            that; ``0``: never (docs/nats.md, *When a node cannot keep up*).
        heartbeat_s, registry_ttl_s: registry heartbeat period and entry lifetime.
        registry_bucket: KV bucket of the registry (default ``<prefix>_nodes``).
        registry_replicas: replicas of that bucket when this node creates it.
        discover: add the cluster's other servers announced by the server to the pool.
        security: signing, compression and protected fields of events
            (``transport_options.security``; docs/event-security.md).
    """

    node: str
    prefix: str = "org"
    codec: str = "json"
    reconnect_wait_s: float = 0.05
    reconnect_max_wait_s: float = 2.0
    ping_interval_s: float = 10.0
    max_outstanding_pings: int = 2
    no_responders_wait_s: float = 1.0
    max_payload_bytes: int = 0
    max_backlog_bytes: int = 64 << 20
    shed_backlog_bytes: int = 4 << 20
    heartbeat_s: float = 2.0
    registry_ttl_s: float = 6.0
    registry_bucket: str = ""
    registry_replicas: int = 1
    discover: bool = True
    security: EventSecurity = field(default_factory=EventSecurity.default)

    @property
    def bucket(self) -> str:
        """The registry bucket name."""
        return self.registry_bucket or f"{self.prefix}_nodes"


_FLOATS = {
    "reconnect_wait_s",
    "reconnect_max_wait_s",
    "ping_interval_s",
    "no_responders_wait_s",
    "heartbeat_s",
    "registry_ttl_s",
}
_INTS = {
    "max_outstanding_pings",
    "max_payload_bytes",
    "max_backlog_bytes",
    "shed_backlog_bytes",
    "registry_replicas",
}
_STRS = {"prefix", "codec", "registry_bucket"}
_OWN = {f.name for f in fields(NatsOptions)} - CONNECT_KEYS - {"node"}
_SECURITY = "security"


def _bad(key: str, reason: str) -> ConfigError:
    return ConfigError(f"{_PREFIX}{key}: {reason}", details={"key": f"{_PREFIX}{key}"})


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


def parse_options(settings: KernelSettings) -> NatsOptions:
    """Build the options from ``[kernel] transport``, ``transport_options`` and ``node``.

    Raises:
        ConfigError: unknown key, wrong type, bad URL, unknown codec, bad prefix.
    """
    values, own = parse_connect(
        settings.transport,
        settings.transport_options,
        known=_OWN,
        key_prefix=_PREFIX,
        url_key="kernel.transport",
    )
    security = own.pop(_SECURITY, None)
    values |= {key: _coerce(key, value) for key, value in own.items()}
    values[_SECURITY] = parse_security(security, f"{_PREFIX}{_SECURITY}")
    if values.get("codec", "json") not in ("json", "msgpack"):
        raise _bad("codec", "expected 'json' or 'msgpack'")
    if not _TOKEN.match(values.get("prefix", "org")):
        raise _bad("prefix", "one subject token of letters, digits, '_' or '-'")
    # pid plus a random suffix: two kernels in one process are two nodes
    node = settings.node or f"{socket.gethostname()}-{os.getpid()}-{os.urandom(2).hex()}"
    return NatsOptions(node=node, **values)
