"""``open_store(url)``: pick a backend from a config URL and open it.

=================================  ==========================================
``memory://``                      ``MemoryStore`` (lost on exit)
``sqlite:///var/app.db``           ``SqliteStore`` on a file (relative path)
``sqlite:////abs/app.db``          ``SqliteStore`` on an absolute path
``sqlite:///:memory:``             ``SqliteStore`` in memory
``postgresql://user@host/db``      ``PostgresStore`` (also ``postgres://``)
``nats-kv://h1:4222,h2:4222/name``  ``NatsKvStore`` on bucket ``name``
``redis://host:6379/0?prefix=app``  ``RedisStore`` under key prefix ``app`` (``rediss://``: TLS)
=================================  ==========================================

``open_store`` returns the store connected (the table or bucket created), so
a wrong URL or an unreachable server fails there, not on the first write.
The drivers (asyncpg, nats-py, redis-py) are only imported for their own scheme. A
NATS KV URL takes credentials and TLS like every NATS backend
(``nats-kv://user:pass@h:4222/name?tls_ca=…&creds=…``, see ``NatsConnectOptions``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from organelle._extras import missing_extra
from organelle.errors import ConfigError

if TYPE_CHECKING:
    from organelle.storage.base import Store
    from organelle.storage.memory import MemoryStore
    from organelle.storage.nats_kv import NatsKvStore
    from organelle.storage.postgres import PostgresStore
    from organelle.storage.redis import RedisStore
    from organelle.storage.sqlite import SqliteStore

    Backend = MemoryStore | SqliteStore | PostgresStore | NatsKvStore | RedisStore

__all__ = ["open_store", "store_backend"]


async def open_store(url: str, **opts: Any) -> Store:
    """Open the store ``url`` names and return it connected; ``opts`` go to the backend.

    Use it as ``async with await open_store(url) as store:`` or close it with
    ``await store.close()`` (safe to call twice).

    Raises:
        ConfigError: unknown scheme, a URL the backend cannot use, or a bad
            NATS connection option.
        StorageUnavailableError: the backend stayed unreachable for its retry budget.
    """
    store = store_backend(url, **opts)
    try:
        await store.open()
    except ImportError as exc:  # a driver imported on connect
        await store.close()
        raise missing_extra(exc, f"{url.split('://', 1)[0]}:// URL") from exc
    except BaseException:
        await store.close()
        raise
    return store


def store_backend(url: str, **opts: Any) -> Backend:
    """The backend ``url`` names, not yet connected: it connects on first use.

    ``open_store`` is the usual way in; the kernel takes this for a default
    store that no module may ever touch, so none is created on disk unused.

    Raises:
        ConfigError: unknown scheme, a URL the backend cannot use, or a bad
            NATS connection option.
    """
    try:
        return _store_backend(url, **opts)
    except ImportError as exc:  # the backend's driver is an extra
        raise missing_extra(exc, f"{str(url).split('://', 1)[0]}:// URL") from exc


def _store_backend(url: str, **opts: Any) -> Backend:
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(
            f"storage URL must look like scheme://..., got {url!r}", details={"key": "url"}
        )
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
        from organelle.storage.nats_kv import NatsKvStore
        from organelle.transport.nats_connect import backend_options

        query = f"?{parts.query}" if parts.query else ""
        connect, own = backend_options(NatsKvStore, f"nats://{parts.netloc}{query}", opts)
        own.setdefault("bucket", bucket)
        return NatsKvStore(servers=connect, **own)
    if scheme in {"redis", "rediss"}:
        from organelle.storage.redis import RedisStore

        return RedisStore(url, **opts)
    raise ConfigError(
        f"unknown storage scheme {scheme!r}; expected memory, sqlite, postgresql, nats-kv or redis",
        details={"key": "url", "scheme": scheme},
    )
