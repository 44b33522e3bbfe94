"""The kernel's Store: opened from ``[kernel] storage``, one namespace per module, live states.

Modules reach it as ``self.store`` (their own namespace); ``kernel.states``
holds live values shared by modules, persisted in the Store when
``[kernel] persist_state`` is on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from organelle.config.settings import KernelSettings
    from organelle.storage import NamespacedStore, StateEngine, Store

__all__ = ["DEFAULT_STORAGE", "StoreHost"]

DEFAULT_STORAGE = "sqlite:///organelle.db"  # KernelSettings' default: opened on first use

log = logging.getLogger("organelle.kernel")


class StoreHost:
    """Owns the Store, its per-module views and the state engine of one kernel."""

    def __init__(
        self,
        settings: Callable[[], KernelSettings],
        emit: Callable[[str, Any], Awaitable[None]],
    ) -> None:
        self._settings = settings
        self._emit = emit
        self._store: Store | None = None
        self._states: StateEngine | None = None
        self._views: dict[str, NamespacedStore] = {}
        # Wraps the store when it opens (storage metrics); the kernel never needs it.
        self.wrap: Callable[[Store], Store] | None = None

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
        self._store = store if self.wrap is None else self.wrap(store)

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
