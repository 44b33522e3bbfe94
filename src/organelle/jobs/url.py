"""``open_queue(url)``: pick and open a ``JobQueue`` backend from a URL.

``memory://`` · ``sqlite:///relative.db`` or ``sqlite:////abs/path.db``
(``?synchronous=normal`` to trade power-loss durability for speed) ·
``postgresql://user@host:port/db`` (``?table=…``) ·
``nats://[user:pass@]host:port`` (``?stream=…``; several servers
comma-separated; TLS and credentials as URL parameters or keywords, see
``NatsConnectOptions``) · ``redis://[:pass@]host:port/db`` (``?prefix=…``;
``rediss://`` for TLS). Heavy drivers load only for the backend asked for.
``?retention_s=…`` (any backend) sets how long succeeded jobs are kept.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from organelle._extras import missing_extra
from organelle.errors import ConfigError
from organelle.jobs.base import JobQueue

__all__ = ["open_queue"]


def _retention(url: str, query: dict[str, str], options: dict[str, Any]) -> None:
    """``?retention_s=`` (every backend): how long succeeded jobs stay."""
    if "retention_s" in query:
        try:
            options.setdefault("retention_s", float(query.pop("retention_s")))
        except ValueError as exc:
            raise ConfigError(f"bad retention_s in job queue URL {url!r}") from exc


async def open_queue(url: str, **options: Any) -> JobQueue:
    """Open the queue ``url`` names and return it connected; ``options`` go to the backend.

    Use it as ``async with await open_queue(url) as queue:`` or close it with
    ``await queue.close()`` (safe to call twice).

    Raises:
        ConfigError: unknown scheme, malformed URL, or a bad NATS connection option.
    """
    try:
        return await _open_queue(url, **options)
    except ImportError as exc:  # the backend's driver is an extra
        raise missing_extra(exc, f"{str(url).split('://', 1)[0]}:// URL") from exc


async def _open_queue(url: str, **options: Any) -> JobQueue:
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    scheme = parts.scheme.lower()
    _retention(url, query, options)
    if scheme == "memory":
        from organelle.jobs.memory import MemoryJobQueue

        return await MemoryJobQueue(**options).open()
    if scheme == "sqlite":
        from organelle.jobs.sqlite import SqliteJobQueue

        path = parts.path.removeprefix("/")
        if not path:
            raise ConfigError(f"sqlite job queue URL needs a path: {url!r}")
        if "synchronous" in query:
            options.setdefault("synchronous", query["synchronous"].lower())
        return await SqliteJobQueue(path, **options).open()
    if scheme in ("postgres", "postgresql"):
        from organelle.jobs.postgres import PostgresJobQueue

        if "table" in query:
            options.setdefault("table", query["table"])
        dsn = parts._replace(query="").geturl()
        return await PostgresJobQueue(dsn, **options).open()
    if scheme in ("nats", "tls"):
        from organelle.jobs.nats import NatsJobQueue
        from organelle.transport.nats_connect import backend_options

        connect, own = backend_options(
            NatsJobQueue, url, options, query_known=("stream", "retention_s")
        )
        return await NatsJobQueue(connect, **own).open()
    if scheme in ("redis", "rediss"):
        from organelle.jobs.redis import RedisJobQueue

        return await RedisJobQueue(url, **options).open()
    raise ConfigError(
        f"unknown job queue URL {url!r}: expected memory://, sqlite://, postgresql://, nats://"
        " or redis://",
        details={"key": "url", "scheme": scheme},
    )
