"""``open_store(url)``: pick a backend from a config URL.

=================================  ==========================================
``memory://``                      ``MemoryStore`` (lost on exit)
``sqlite:///var/app.db``           ``SqliteStore`` on a file (relative path)
``sqlite:////abs/app.db``          ``SqliteStore`` on an absolute path
``sqlite:///:memory:``             ``SqliteStore`` in memory
``postgresql://user@host/db``      ``PostgresStore`` (also ``postgres://``)
``nats-kv://h1:4222,h2:4222/name``  ``NatsKvStore`` on bucket ``name``
=================================  ==========================================

Backends connect lazily on first use, so opening is synchronous and cheap,
and the drivers (asyncpg, nats-py) are only imported for their own scheme.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from organelle.errors import ConfigError
from organelle.storage.base import Store

__all__ = ["open_store"]


def open_store(url: str, **opts: Any) -> Store:
    """Return an unopened store for ``url``; ``opts`` go to the backend constructor.

    Raises:
        ConfigError: unknown scheme or a URL the backend cannot use.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(f"storage URL must look like scheme://..., got {url!r}")
    scheme, rest = url.split("://", 1)
    scheme = scheme.lower()
    if scheme == "memory":
        from organelle.storage.memory import MemoryStore

        return MemoryStore(**opts)
    if scheme == "sqlite":
        if not rest.startswith("/") or rest == "/":
            raise ConfigError(f"SQLite URL needs a path: sqlite:///file.db, got {url!r}")
        from organelle.storage.sqlite import SqliteStore

        return SqliteStore(rest[1:], **opts)
    if scheme in {"postgresql", "postgres"}:
        from organelle.storage.postgres import PostgresStore

        return PostgresStore(url, **opts)
    if scheme == "nats-kv":
        parts = urlsplit(url)
        bucket = parts.path.strip("/")
        if not parts.netloc or not bucket or "/" in bucket:
            raise ConfigError(f"NATS KV URL must be nats-kv://host:port/bucket, got {url!r}")
        auth, _, hosts = parts.netloc.rpartition("@")
        servers = [f"nats://{auth + '@' if auth else ''}{h}" for h in hosts.split(",") if h]
        from organelle.storage.nats_kv import NatsKvStore

        return NatsKvStore(servers=servers, bucket=bucket, **opts)
    raise ConfigError(
        f"unknown storage scheme {scheme!r}; expected memory, sqlite, postgresql or nats-kv"
    )
