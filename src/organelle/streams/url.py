"""``open_log(url)``: pick and open a ``StreamLog`` backend from a URL.

``sqlite:///relative.db`` or ``sqlite:////abs/path.db`` (``?synchronous=normal``
trades power-loss durability for speed) · ``sqlite://:memory:`` for tests ·
``nats://host:port`` (``?prefix=…`` names the JetStream streams; several
servers comma-separated). Heavy drivers load only for the backend asked for.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from organelle.errors import ConfigError
from organelle.streams.base import StreamLog

__all__ = ["open_log"]


async def open_log(url: str, **options: Any) -> StreamLog:
    """Open the stream log ``url`` names; ``options`` go to the backend's constructor.

    Raises:
        ConfigError: unknown scheme or malformed URL.
    """
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        from organelle.streams.sqlite import SqliteStreamLog

        path = parts.netloc if parts.netloc == ":memory:" else parts.path.removeprefix("/")
        if not path:
            raise ConfigError(f"sqlite stream URL needs a path: {url!r}")
        if "synchronous" in query:
            options.setdefault("synchronous", query["synchronous"].lower())
        return await SqliteStreamLog(path, **options).open()
    if scheme in ("nats", "tls"):
        from organelle.streams.nats import JetStreamLog

        if "prefix" in query:
            options.setdefault("prefix", query["prefix"])
        servers = [f"{scheme}://{host}" for host in parts.netloc.split(",") if host]
        return await JetStreamLog(servers, **options).open()
    raise ConfigError(f"unknown stream log URL {url!r}: expected sqlite:// or nats://")
