"""The kernel's side of sagas: each module's ``Saga`` declarations, served on the job queue.

As a binder (stage ``serve``) it registers an active module's sagas with
the ``Sagas`` engine, gives the job worker a handler for each saga's job type
and re-enqueues what a crash left without a job; on detach the saga jobs wait
in the queue for a node that serves the module. Steps run through the
kernel: each step's job is a ``"job"`` invocation through the middleware
(as a ``@job`` run is); a ``"module.method"`` action is a call (local or
remote) with the step's key in the context meta; a method of the owner's
class runs on its live instance (so a reloaded module runs its new code) in
a child of the job's context carrying the same meta.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any

from organelle.context import _current, current_context, root_context
from organelle.module import Module

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from organelle.kernel._jobhost import JobHost
    from organelle.kernel._slots import Slot, Slots
    from organelle.sagas import Action, Saga, Sagas
    from organelle.storage import Store

__all__ = ["SagaHost", "sagas_of"]

NAMESPACE = "_sagas"
"""The Store namespace of saga records."""


def sagas_of(cls: type) -> list[Saga]:
    """The ``Saga`` class attributes of a module class (its bases' too), by name."""
    if "organelle.sagas" not in sys.modules:  # nothing declared one: keep the kernel's import light
        return []
    cached = cls.__dict__.get("__organelle_sagas__")
    if cached is None:  # found once per class: the scan reads every attribute of Module too
        from organelle.sagas import Saga

        found: dict[str, Saga] = {}
        base = set(Module.__mro__)
        for klass in reversed(cls.__mro__):
            if klass in base:
                continue
            for value in vars(klass).values():
                if isinstance(value, Saga):
                    found[value.name] = value
        cached = tuple(found.values())
        setattr(cls, "__organelle_sagas__", cached)  # noqa: B010 - a dunder name on purpose
    return list(cached)


class SagaHost:
    """Binds each module's sagas to the engine and the job worker."""

    kind = "sagas"
    stage = "serve"

    def __init__(
        self,
        slots: Slots,
        jobs: JobHost,
        store: Callable[[], Store],
        call_with: Callable[..., Any],
        drain_timeout_s: Callable[[], float],
    ) -> None:
        self._slots = slots
        self._jobs = jobs
        self._call_with = call_with
        self._drain_timeout_s = drain_timeout_s
        self._store = store
        self._engine: Sagas | None = None

    @property
    def engine(self) -> Sagas:
        """The engine (made on first use: most kernels run no saga)."""
        if self._engine is None:
            from organelle.sagas import Sagas

            self._engine = Sagas(self._store, self._jobs.jobs, self._invoke)
        return self._engine

    async def attach(self, slot: Slot) -> None:
        """Serve the slot's sagas: register them, run their jobs here, recover stalled ones."""
        engine = self.engine
        for saga in sagas_of(type(slot.instance)):
            name = engine.register(slot.name, saga)

            async def run(saga_id: str, version: int) -> None:
                await engine.run(saga_id, version)

            job = engine.job_name(name)
            handler = self._jobs.pipelined(slot.name, job, run)  # middleware sees a "job"
            await self._jobs.serve(job, handler, engine.job_spec(name))
            await engine.recover(name)

    async def detach(self, slot: Slot) -> None:
        """Stop running the slot's saga jobs here; let the steps in flight finish (bounded)."""
        names = [f"{slot.name}.{saga.name}" for saga in sagas_of(type(slot.instance))]
        if not names:
            return
        running = self._jobs.unserve([self.engine.job_name(n) for n in names])
        for name in names:
            self.engine.unregister(name)
        if running:
            await asyncio.wait(running, timeout=self._drain_timeout_s())

    async def switch(self, old: Slot, new: Slot) -> None:  # noqa: ARG002 - the binder's shape
        """A reload: the new class's declarations replace the old ones."""
        for saga in sagas_of(type(new.instance)):
            self.engine.register(new.name, saga)

    async def _invoke(
        self,
        owner: str,
        action: Action,
        params: dict[str, Any],
        meta: Mapping[str, Any],
        timeout_s: float | None,
    ) -> Any:
        if isinstance(action, str):
            return await self._call_with(
                action, params, timeout_s=timeout_s, meta=dict(meta), caller=owner
            )
        instance = self._slots.require(owner).instance
        ctx = current_context()  # the step's job: keep its trace, add the step's keys
        token = _current.set(
            root_context(None, meta=dict(meta)) if ctx is None else ctx.child(None, meta=dict(meta))
        )
        try:
            return await action(instance, **params)
        finally:
            _current.reset(token)
