"""The Redis connection both Redis backends share: URL parsing, key prefix, transient errors.

``redis://[:password@]host:port/db?prefix=name`` (``rediss://`` for TLS). The
``prefix`` parameter is ours and is taken off before redis-py sees the URL;
every other parameter (``socket_timeout``, ``ssl_ca_certs``, …) is redis-py's.
Keys carry the prefix as a hash tag (``{name}:…``), so one store or queue
lives in one slot and its Lua scripts touch keys of that slot only.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from organelle.errors import ConfigError

__all__ = ["connect", "is_transient", "split_url"]

_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,100}")


def split_url(url: str, *, default_prefix: str) -> tuple[str, str]:
    """``(url without ?prefix, prefix)``; refuses a scheme other than redis/rediss/unix."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in {"redis", "rediss", "unix"}:
        raise ConfigError(f"Redis URL must be redis://, rediss:// or unix://, got {url!r}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = default_prefix
    rest = []
    for key, value in query:
        if key == "prefix":
            prefix = value
        else:
            rest.append((key, value))
    if not _PREFIX.fullmatch(prefix) or "{" in prefix or "}" in prefix:
        raise ConfigError(
            f"Redis key prefix must be 1-100 of [A-Za-z0-9_.:-], got {prefix!r}",
            details={"key": "prefix"},
        )
    return urlunsplit(parts._replace(query=urlencode(rest))), prefix


def connect(url: str, **options: Any) -> Any:
    """A ``redis.asyncio.Redis`` for ``url`` (connects lazily; bytes in, bytes out)."""
    try:
        import redis.asyncio
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(
            "Redis backends need the redis extra: pip install 'organelle[redis]'"
        ) from exc
    options.setdefault("decode_responses", False)
    options.setdefault("health_check_interval", 30)
    # It bounds connecting and, in redis-py, closing too: without it a close
    # can wait forever on a socket the server stopped reading.
    options.setdefault("socket_connect_timeout", 5.0)
    return redis.asyncio.Redis.from_url(url, **options)


def is_transient(exc: BaseException) -> bool:
    """A dropped connection, a timeout or a server still loading its data."""
    import redis.exceptions

    return isinstance(
        exc,
        OSError
        | TimeoutError
        | redis.exceptions.ConnectionError
        | redis.exceptions.TimeoutError
        | redis.exceptions.BusyLoadingError
        | redis.exceptions.TryAgainError,
    )
