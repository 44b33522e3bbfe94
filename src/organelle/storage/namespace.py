"""``NamespacedStore``: one module's view of a shared store.

Each module gets keys under ``<namespace>.``, so two modules can both use
``"config"`` as a key without seeing each other's. Reaching another module's
state is explicit: ``store.namespace("other")``. The separator is a dot so
that NATS KV can filter a namespace on the server (one subject token).

A view's ``transaction()`` is the store's, with its keys prefixed too; and a
view's plain calls join a transaction opened on the store underneath (or on
any view of it), since they reach the same backend object.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Self

import msgspec

from organelle.storage._tx import current_tx
from organelle.storage.base import Change, Entry, Page, Store, StoreTx, Watch, bad

__all__ = ["NamespacedStore", "NamespacedTx"]

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SEP = "."


def _checked(namespace: object) -> str:
    if not isinstance(namespace, str) or not _NAME.match(namespace):
        raise bad("namespace", f"bad namespace {namespace!r}: use [A-Za-z0-9_-], 1-64 chars")
    return namespace


class _Prefixed:
    """The key operations of a view, on a store or on a transaction."""

    def __init__(self, ops: Store | StoreTx, namespace: str) -> None:
        self._ops = ops
        self.name = _checked(namespace)
        self._pre = namespace + SEP

    def _k(self, key: object) -> str:
        if not isinstance(key, str) or not key:
            raise bad("key", "key must be a non-empty str")
        return self._pre + key

    def _strip(self, entry: Entry) -> Entry:
        return msgspec.structs.replace(entry, key=entry.key[len(self._pre) :])

    async def get(self, key: str, *, type: Any = None) -> Entry | None:  # noqa: A002 - mirrors codec.decode(target)
        """Return the live entry for ``key`` in this namespace."""
        entry = await self._ops.get(self._k(key), type=type)
        return None if entry is None else self._strip(entry)

    async def put(self, key: str, value: Any, *, ttl_s: float | None = None) -> int:
        """Write ``value`` under this namespace; return its revision."""
        return await self._ops.put(self._k(key), value, ttl_s=ttl_s)

    async def delete(self, key: str) -> bool:
        """Remove ``key`` from this namespace."""
        return await self._ops.delete(self._k(key))

    async def get_many(self, keys: Iterable[str]) -> dict[str, Entry]:
        """Return the live entries among ``keys``."""
        if isinstance(keys, str):
            raise bad("keys", "keys must be an iterable of str, not a str")
        found = await self._ops.get_many([self._k(k) for k in keys])
        return {e.key: e for e in map(self._strip, found.values())}

    async def put_many(
        self, items: Mapping[str, Any], *, ttl_s: float | None = None
    ) -> dict[str, int]:
        """Write all ``items`` under this namespace."""
        revs = await self._ops.put_many({self._k(k): v for k, v in items.items()}, ttl_s=ttl_s)
        return {k[len(self._pre) :]: r for k, r in revs.items()}

    async def delete_many(self, keys: Iterable[str]) -> int:
        """Remove ``keys`` from this namespace."""
        if isinstance(keys, str):
            raise bad("keys", "keys must be an iterable of str, not a str")
        return await self._ops.delete_many([self._k(k) for k in keys])

    async def scan(self, prefix: str = "", *, limit: int = 100, cursor: str | None = None) -> Page:
        """Scan this namespace only; cursors are namespace-relative keys."""
        if not isinstance(prefix, str):
            raise bad("prefix", "prefix must be a str")
        if cursor is not None and not isinstance(cursor, str):
            raise bad("cursor", "cursor must be None or the str from the previous page")
        inner = await self._ops.scan(
            self._pre + prefix,
            limit=limit,
            cursor=None if cursor is None else self._pre + cursor,
        )
        items = [self._strip(e) for e in inner.items]
        next_cursor = None if inner.cursor is None else inner.cursor[len(self._pre) :]
        return Page(items=items, cursor=next_cursor)

    async def compare_and_set(
        self, key: str, value: Any, *, revision: int | None, ttl_s: float | None = None
    ) -> int:
        """Compare-and-set within this namespace."""
        return await self._ops.compare_and_set(self._k(key), value, revision=revision, ttl_s=ttl_s)

    async def incr(self, key: str, by: int = 1) -> int:
        """Atomically add ``by`` within this namespace."""
        return await self._ops.incr(self._k(key), by)


class NamespacedStore(_Prefixed):
    """A ``Store`` whose keys are transparently prefixed with ``namespace + "."``.

    Args:
        store: the shared store; the view never closes it.
        namespace: letters, digits, ``_`` and ``-`` (1-64 characters).

    Raises:
        ValidationError: the namespace name is not allowed.
    """

    def __init__(self, store: Store, namespace: str) -> None:
        super().__init__(store, namespace)
        self._store = store

    @property
    def store(self) -> Store:
        """The shared store underneath."""
        return self._store

    def namespace(self, name: str) -> NamespacedStore:
        """Return the view of another namespace on the same store (a sibling, not a child)."""
        return NamespacedStore(self._store, name)

    def transaction(self) -> AbstractAsyncContextManager[StoreTx]:
        """The store's transaction, its keys under this namespace (see ``Store.transaction``)."""
        return _NamespacedBlock(self._store.transaction(), self.name)

    def current_tx(self) -> NamespacedTx | None:
        """The store's transaction current in this context, seen through this namespace."""
        tx = current_tx(self._store)
        return None if tx is None else NamespacedTx(tx, self.name)

    def watch(self, prefix: str = "") -> Watch:
        """Watch this namespace; change keys are namespace-relative."""
        if not isinstance(prefix, str):
            raise bad("prefix", "prefix must be a str")
        cut = len(self._pre)

        def strip(change: Change) -> Change:
            return msgspec.structs.replace(change, key=change.key[cut:])

        return self._store.watch(self._pre + prefix).mapped(strip)

    async def close(self) -> None:
        """Do nothing: the shared store belongs to whoever opened it."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class NamespacedTx(_Prefixed):
    """A ``StoreTx`` whose keys are prefixed with ``namespace + "."``."""

    def __init__(self, tx: StoreTx, namespace: str) -> None:
        super().__init__(tx, namespace)
        self._tx = tx

    def namespace(self, name: str) -> NamespacedTx:
        """The same transaction under another namespace."""
        return NamespacedTx(self._tx, name)

    def on_end(self, fn: Callable[[bool], object]) -> None:
        """See ``StoreTx.on_end``."""
        self._tx.on_end(fn)


class _NamespacedBlock:
    def __init__(self, inner: AbstractAsyncContextManager[StoreTx], namespace: str) -> None:
        self._inner = inner
        self._name = namespace

    async def __aenter__(self) -> NamespacedTx:
        return NamespacedTx(await self._inner.__aenter__(), self._name)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._inner.__aexit__(exc_type, exc, tb)
