"""The kernel's Store: opened from ``[kernel] storage``, one namespace per module, live states.

Modules reach it as ``self.store`` (their own namespace); ``kernel.states``
holds live values shared by modules, persisted in the Store when
``[kernel] persist_state`` is on. The Store is always handed out inside an
``ObservedStore``, which reports each operation to the ``on_store`` listeners
of the moment (and costs a flag check while there are none). Operations inside
a transaction are reported once it has ended (committed or rolled back),
followed by one ``transaction`` report whose ``error`` says why it rolled back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

from organelle.kernel._listen import StoreReport

if TYPE_CHECKING:
    from organelle.config.settings import KernelSettings
    from organelle.kernel._listen import Listeners
    from organelle.storage import (
        Entry,
        NamespacedStore,
        Page,
        StateEngine,
        Store,
        StoreTx,
        Watch,
    )

__all__ = ["DEFAULT_STORAGE", "ObservedStore", "StoreHost"]

DEFAULT_STORAGE = "sqlite:///organelle.db"  # KernelSettings' default: opened on first use

log = logging.getLogger("organelle.kernel")
T = TypeVar("T")
_perf = time.perf_counter


class ObservedStore:
    """Delegates to ``inner``; reports each operation's time and error to the listeners."""

    def __init__(self, inner: Store, listeners: Listeners) -> None:
        self.inner = inner
        self._listeners = listeners

    async def _op(self, op: str, work: Awaitable[T]) -> T:
        if not self._listeners.store:
            return await work
        started = _perf()
        error = None
        try:
            return await work
        except Exception as exc:
            error = type(exc).__name__
            raise
        finally:
            self._report(StoreReport(op=op, duration_s=_perf() - started, error=error))

    def _report(self, report: StoreReport) -> None:
        """Report now, or once the transaction the operation ran in has ended."""
        tx = self.current_tx()
        if tx is None:
            self._listeners.stored(report)
        else:
            tx.on_end(lambda _committed: self._listeners.stored(report))

    async def get(self, key: str, *, type: Any = None) -> Entry | None:  # noqa: A002 - mirrors Store.get
        """See ``Store.get``."""
        return await self._op("get", self.inner.get(key, type=type))

    async def put(self, key: str, value: Any, *, ttl_s: float | None = None) -> int:
        """See ``Store.put``."""
        return await self._op("put", self.inner.put(key, value, ttl_s=ttl_s))

    async def delete(self, key: str) -> bool:
        """See ``Store.delete``."""
        return await self._op("delete", self.inner.delete(key))

    async def get_many(self, keys: Iterable[str]) -> dict[str, Entry]:
        """See ``Store.get_many``."""
        return await self._op("get_many", self.inner.get_many(keys))

    async def put_many(
        self, items: Mapping[str, Any], *, ttl_s: float | None = None
    ) -> dict[str, int]:
        """See ``Store.put_many``."""
        return await self._op("put_many", self.inner.put_many(items, ttl_s=ttl_s))

    async def delete_many(self, keys: Iterable[str]) -> int:
        """See ``Store.delete_many``."""
        return await self._op("delete_many", self.inner.delete_many(keys))

    async def scan(self, prefix: str = "", *, limit: int = 100, cursor: str | None = None) -> Page:
        """See ``Store.scan``."""
        return await self._op("scan", self.inner.scan(prefix, limit=limit, cursor=cursor))

    async def compare_and_set(
        self, key: str, value: Any, *, revision: int | None, ttl_s: float | None = None
    ) -> int:
        """See ``Store.compare_and_set``."""
        return await self._op(
            "compare_and_set",
            self.inner.compare_and_set(key, value, revision=revision, ttl_s=ttl_s),
        )

    async def incr(self, key: str, by: int = 1) -> int:
        """See ``Store.incr``."""
        return await self._op("incr", self.inner.incr(key, by))

    def watch(self, prefix: str = "") -> Watch:
        """See ``Store.watch`` (a feed, not an operation: not reported)."""
        return self.inner.watch(prefix)

    def transaction(self) -> AbstractAsyncContextManager[StoreTx]:
        """See ``Store.transaction``; its operations are reported once it has ended."""
        return _ObservedBlock(self, self.inner.transaction())

    def current_tx(self) -> StoreTx | None:
        """The inner store's transaction current in this context, or ``None``."""
        from organelle.storage import current_tx  # the Store is imported on first use

        return current_tx(self.inner)

    async def close(self) -> None:
        """Close the inner store."""
        await self.inner.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __getattr__(self, name: str) -> Any:  # backend extras (e.g. a SQLite path) stay reachable
        return getattr(self.inner, name)


class _ObservedBlock:
    """A transaction block that reports itself (op ``transaction``) and its operations."""

    def __init__(self, store: ObservedStore, inner: AbstractAsyncContextManager[StoreTx]) -> None:
        self._store = store
        self._inner = inner
        self._started = 0.0

    async def __aenter__(self) -> StoreTx:
        self._started = _perf()
        return _ObservedTx(self._store, await self._inner.__aenter__())

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        error = None if exc_type is None else exc_type.__name__
        try:
            await self._inner.__aexit__(exc_type, exc, tb)
        except Exception as failed:  # the commit failed
            error = type(failed).__name__
            raise
        finally:
            if self._store._listeners.store:
                took = _perf() - self._started
                self._store._report(StoreReport(op="transaction", duration_s=took, error=error))


class _ObservedTx:
    """A ``StoreTx`` whose operations are reported like the store's."""

    def __init__(self, store: ObservedStore, tx: StoreTx) -> None:
        self._store = store
        self._tx = tx

    async def get(self, key: str, *, type: Any = None) -> Entry | None:  # noqa: A002 - mirrors Store.get
        """See ``StoreTx.get``."""
        return await self._store._op("get", self._tx.get(key, type=type))

    async def get_many(self, keys: Iterable[str]) -> dict[str, Entry]:
        """See ``StoreTx.get_many``."""
        return await self._store._op("get_many", self._tx.get_many(keys))

    async def put(self, key: str, value: Any, *, ttl_s: float | None = None) -> int:
        """See ``StoreTx.put``."""
        return await self._store._op("put", self._tx.put(key, value, ttl_s=ttl_s))

    async def put_many(
        self, items: Mapping[str, Any], *, ttl_s: float | None = None
    ) -> dict[str, int]:
        """See ``StoreTx.put_many``."""
        return await self._store._op("put_many", self._tx.put_many(items, ttl_s=ttl_s))

    async def delete(self, key: str) -> bool:
        """See ``StoreTx.delete``."""
        return await self._store._op("delete", self._tx.delete(key))

    async def delete_many(self, keys: Iterable[str]) -> int:
        """See ``StoreTx.delete_many``."""
        return await self._store._op("delete_many", self._tx.delete_many(keys))

    async def scan(self, prefix: str = "", *, limit: int = 100, cursor: str | None = None) -> Page:
        """See ``StoreTx.scan``."""
        return await self._store._op("scan", self._tx.scan(prefix, limit=limit, cursor=cursor))

    async def compare_and_set(
        self, key: str, value: Any, *, revision: int | None, ttl_s: float | None = None
    ) -> int:
        """See ``StoreTx.compare_and_set``."""
        return await self._store._op(
            "compare_and_set",
            self._tx.compare_and_set(key, value, revision=revision, ttl_s=ttl_s),
        )

    async def incr(self, key: str, by: int = 1) -> int:
        """See ``StoreTx.incr``."""
        return await self._store._op("incr", self._tx.incr(key, by))

    def on_end(self, fn: Callable[[bool], object]) -> None:
        """See ``StoreTx.on_end``."""
        self._tx.on_end(fn)


class StoreHost:
    """Owns the Store, its per-module views and the state engine of one kernel."""

    def __init__(
        self,
        settings: Callable[[], KernelSettings],
        emit: Callable[[str, Any], Awaitable[None]],
        listeners: Listeners,
    ) -> None:
        self._settings = settings
        self._emit = emit
        self._listeners = listeners
        self._store: Store | None = None
        self._states: StateEngine | None = None
        self._views: dict[str, NamespacedStore] = {}

    @property
    def opened(self) -> Store | None:
        """The Store if it is open, else ``None`` (never opens it)."""
        return self._store

    @property
    def store(self) -> Store:
        """The shared Store chosen by ``[kernel] storage``.

        Opened at start when ``[kernel] storage`` names one (a wrong URL or an
        unreachable server fails the start); the default SQLite file is
        created on first use only, so an app that stores nothing leaves none.
        """
        if self._store is None:
            from organelle.storage.url import store_backend

            self._keep(store_backend(self._settings().storage))
        assert self._store is not None  # noqa: S101 - kept above
        return self._store

    def _keep(self, store: Store) -> None:
        self._store = ObservedStore(store, self._listeners)

    def view(self, namespace: str) -> NamespacedStore:
        """The view of the shared store under ``namespace`` (a module's name)."""
        view = self._views.get(namespace)
        if view is None:
            from organelle.storage import NamespacedStore

            view = self._views[namespace] = NamespacedStore(self.store, namespace)
        return view

    @property
    def states(self) -> StateEngine:
        """Live values shared by modules (see ``Kernel.states``)."""
        if self._states is None:
            from organelle.storage import StateEngine

            store = self.view("_state") if self._settings().persist_state else None
            self._states = StateEngine(store=store, emit=self._emit)
        return self._states

    def may_hold_rows(self) -> bool:
        """Whether the Store may hold rows a crash left: named in config, or its file exists.

        A module's ``self.store`` view makes the Store object without touching
        the disk; an app that never stored anything must not get a file from
        the outbox relay looking for leftovers.
        """
        if self._settings().storage != DEFAULT_STORAGE:
            return True
        from pathlib import Path

        return Path(DEFAULT_STORAGE.removeprefix("sqlite:///")).exists()

    async def open(self) -> None:
        """Open a configured Store and restore persisted states, before any module loads."""
        settings = self._settings()
        if self._store is None and settings.storage != DEFAULT_STORAGE:
            from organelle.storage import open_store

            self._keep(await open_store(settings.storage))
        if settings.persist_state:
            await self.states.load()

    async def close(self) -> None:
        """Close the state engine and the Store (after modules stopped); never raises."""
        states, self._states = self._states, None
        if states is not None:
            await states.close()
        store, self._store = self._store, None
        self._views.clear()
        if store is not None:
            try:
                await store.close()
            except Exception:
                log.exception("closing the store failed")
