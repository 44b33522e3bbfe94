"""Storage: durable key/value state behind one ``Store`` port.

Open one from a URL (``open_store("sqlite:///app.db")``) or construct a
backend directly; see ``docs/storage.md``. Backends are imported on first
access so ``import organelle`` never pulls in sqlite3, asyncpg or nats-py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from organelle.errors import (
    ConflictError,
    StorageUnavailableError,
    TransactionClosedError,
    TransactionError,
    TransactionUnsupportedError,
)
from organelle.storage._tx import current_tx
from organelle.storage.base import Change, ChangeOp, Entry, Page, Store, StoreTx, Watch, WatchFeed
from organelle.storage.cache import CachedStore
from organelle.storage.memory import MemoryStore
from organelle.storage.namespace import NamespacedStore, NamespacedTx
from organelle.storage.retry import RetryPolicy
from organelle.storage.state import StateChange, StateEngine
from organelle.storage.url import open_store

if TYPE_CHECKING:
    from organelle.storage.nats_kv import NatsKvStore
    from organelle.storage.postgres import PostgresStore
    from organelle.storage.redis import RedisStore
    from organelle.storage.sqlite import SqliteStore

__all__ = [
    "CachedStore",
    "Change",
    "ChangeOp",
    "ConflictError",
    "Entry",
    "MemoryStore",
    "NamespacedStore",
    "NamespacedTx",
    "NatsKvStore",
    "Page",
    "PostgresStore",
    "RedisStore",
    "RetryPolicy",
    "SqliteStore",
    "StateChange",
    "StateEngine",
    "StorageUnavailableError",
    "Store",
    "StoreTx",
    "TransactionClosedError",
    "TransactionError",
    "TransactionUnsupportedError",
    "Watch",
    "WatchFeed",
    "current_tx",
    "open_store",
]

_LAZY = {
    "SqliteStore": "organelle.storage.sqlite",
    "PostgresStore": "organelle.storage.postgres",
    "NatsKvStore": "organelle.storage.nats_kv",
    "RedisStore": "organelle.storage.redis",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'organelle.storage' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
