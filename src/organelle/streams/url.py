"""``open_log(url)``: pick and open a ``StreamLog`` backend from a URL.

``memory://`` (in-process, for tests) · ``sqlite:///relative.db`` or
``sqlite:////abs/path.db`` (``?synchronous=normal`` trades power-loss
durability for speed) · ``sqlite://:memory:`` · ``nats://[user:pass@]host:port``
(``?prefix=…`` names the JetStream streams; several servers comma-separated;
TLS and credentials as URL parameters or keywords, see ``NatsConnectOptions``).
Heavy drivers load only for the backend asked for.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from organelle._extras import missing_extra
from organelle.errors import ConfigError
from organelle.streams.base import StreamLog

__all__ = ["open_log"]


async def open_log(url: str, **options: Any) -> StreamLog:
    """Open the stream log ``url`` names and return it connected; ``options`` go to the backend.

    Use it as ``async with await open_log(url) as log:`` or close it with
    ``await log.close()`` (safe to call twice).

    Raises:
        ConfigError: unknown scheme, malformed URL, or a bad NATS connection option.
    """
    try:
        return await _open_log(url, **options)
    except ImportError as exc:  # the backend's driver is an extra
        raise missing_extra(exc, f"{str(url).split('://', 1)[0]}:// URL") from exc


async def _open_log(url: str, **options: Any) -> StreamLog:
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    scheme = parts.scheme.lower()
    if scheme == "memory":
        from organelle.streams.memory import MemoryStreamLog

        return await MemoryStreamLog(**options).open()
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
        from organelle.transport.nats_connect import backend_options

        connect, own = backend_options(JetStreamLog, url, options, query_known=("prefix",))
        return await JetStreamLog(connect, **own).open()
    raise ConfigError(
        f"unknown stream log URL {url!r}: expected memory://, sqlite:// or nats://",
        details={"key": "url", "scheme": scheme},
    )
