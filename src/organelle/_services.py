"""The kernel's durable services as a mixin: jobs, streams and storage.

Thin facades: each opens at start and delegates to its host
(``_jobhost.py``, ``_streamhost.py``) or to the Store chosen by config, so
``kernel.py`` keeps to lifecycle and wiring.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from organelle.errors import ConfigError

if TYPE_CHECKING:
    from datetime import datetime

    from organelle._jobhost import JobHost
    from organelle._streamhost import StreamHost
    from organelle.config.settings import KernelSettings
    from organelle.jobs import JobsService
    from organelle.storage import NamespacedStore, StateEngine, Store
    from organelle.streams.base import StreamLog
    from organelle.streams.consumer import ConsumerStats

__all__ = ["Services"]

log = logging.getLogger("organelle.kernel")


class Services:
    """``jobs``/``enqueue``, ``append``/``streams``, ``store``/``states`` (state on ``Kernel``)."""

    settings: KernelSettings
    _jobhost: JobHost
    _streamhost: StreamHost
    _store: Store | None
    _states: StateEngine | None
    _views: dict[str, NamespacedStore]
    wrap_store: Callable[[Store], Store] | None

    async def emit(
        self, topic: str, payload: Any = None, *, meta: dict[str, Any] | None = None
    ) -> None:
        """Emit an event (defined by ``Kernel``)."""
        raise NotImplementedError

    # jobs ------------------------------------------------------------------
    @property
    def jobs(self) -> JobsService:
        """Durable jobs: ``get(job_id)``, ``dead_letters``, ``enqueue`` (see docs/jobs.md).

        Raises:
            ConfigError: no queue (no module declares a job and ``[kernel] jobs``
                is not set), or the kernel has not started.
        """
        return self._jobhost.jobs()

    async def enqueue(
        self,
        job: str,
        /,
        *,
        delay_s: float | None = None,
        at: datetime | float | None = None,
        priority: int = 0,
        idempotency_key: str | None = None,
        **params: Any,
    ) -> str:
        """Enqueue the durable job ``"<module>.<job>"`` and return its id.

        Params are validated from the handler's type hints now, so a bad call
        is refused here, not found by a worker later. A second enqueue with the
        same ``idempotency_key`` returns the first job's id.

        Raises:
            ValidationError: bad params (each field listed) or options.
            ConfigError: this node has no job queue.
        """
        return await self._jobhost.jobs().enqueue(
            job,
            params,
            delay_s=delay_s,
            at=at,
            priority=priority,
            idempotency_key=idempotency_key,
        )

    async def drain_jobs(self, timeout_s: float = 30.0, horizon_s: float = 1.0) -> None:
        """Wait until this node's worker runs nothing and nothing is due within ``horizon_s``.

        For tests: no sleeps. Raises ``TimeoutError`` after ``timeout_s``.
        """
        await self._jobhost.idle(timeout_s, horizon_s)

    # streams ---------------------------------------------------------------
    async def append(
        self,
        stream: str,
        payload: Any = None,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, int]:
        """Append a record to the durable ``stream``; return ``(partition, offset)``.

        Returns once the record is stored durably (the log's commit / PubAck).
        Records with one ``key`` share a partition and keep their order; the
        stream is created on first use with its ``[kernel.stream_specs]`` layout.

        Raises:
            ConfigError: no stream log (no ``@consume`` here and ``[kernel] streams`` unset).
            ValidationError: a bad stream name or a payload that cannot be encoded.
        """
        return await self._streamhost.append(stream, payload, key, headers)

    @property
    def streams(self) -> StreamLog:
        """The stream log: ``read``, ``seek``, ``info``, ``dead_letters`` (see docs/streams.md)."""
        return self._streamhost._require()

    def consumers(self) -> list[ConsumerStats]:
        """Counters of this node's ``@consume`` group members (done, failed, dead, …)."""
        return self._streamhost.stats()

    async def drain_streams(self, timeout_s: float = 30.0) -> None:
        """Wait until every local consumer group has caught up and nothing runs (for tests).

        Raises:
            TimeoutError: still busy after ``timeout_s``.
        """
        await self._streamhost.idle(timeout_s)

    # storage -------------------------------------------------------------
    @property
    def store(self) -> Store:
        """The shared Store chosen by ``[kernel] storage``, opened when the kernel starts.

        Modules normally use ``self.store``, their own namespace of it.

        Raises:
            ConfigError: the kernel has not started (or has stopped).
        """
        if self._store is None:
            raise ConfigError(
                "kernel.store: the store opens when the kernel starts; use it after start()",
                details={"key": "kernel.storage"},
            )
        return self._store

    async def _open_store(self) -> None:
        """Open ``[kernel] storage`` (``start`` does, before any module loads)."""
        if self._store is None:
            from organelle.storage import open_store

            store = await open_store(self.settings.storage)
            self._store = store if self.wrap_store is None else self.wrap_store(store)

    def store_for(self, namespace: str) -> NamespacedStore:
        """The view of the shared store under ``namespace`` (a module's name)."""
        view = self._views.get(namespace)
        if view is None:
            from organelle.storage import NamespacedStore

            view = self._views[namespace] = NamespacedStore(self.store, namespace)
        return view

    @property
    def states(self) -> StateEngine:
        """Live values shared by modules (``get``/``set``/``subscribe``).

        Every change is also emitted as ``state.changed.<key>``; with
        ``[kernel] persist_state = true`` values live in the Store and are
        restored when the kernel starts.
        """
        if self._states is None:
            from organelle.storage import StateEngine

            store = self.store_for("_state") if self.settings.persist_state else None
            self._states = StateEngine(store=store, emit=self.emit)
        return self._states

    async def _close_store(self) -> None:
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
