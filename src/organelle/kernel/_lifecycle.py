"""The lifecycle: start and stop the kernel, and one module's way in and out.

Rules (nameko's, tightened): every module is loaded before any starts; modules
start level by level in dependency order (a level's modules together) and stop
in reverse; a hook that fails or times out names the module and the hook; a
failed start stops what already started, so nothing is left half-running.

A slot's bindings go in and out in stages (``Binder.stage``): routes and
subscriptions before ``on_start``; the wire, jobs, cron and stream consumers
once the module is active (at kernel start: once every module is). Stopping
walks the same stages backwards. Adding, removing and reloading a module at
run time (``_changes.py``) and restarting a crashed one (``_supervise.py``)
use these same steps, so every kind of binding follows every change.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from organelle.errors import LifecycleError
from organelle.kernel import _states as st
from organelle.kernel._states import ModuleState
from organelle.module._graph import Node, start_levels
from organelle.transport import open_transport

if TYPE_CHECKING:
    from organelle.config.settings import KernelSettings
    from organelle.kernel._bus import EventBus
    from organelle.kernel._calls import Dispatcher
    from organelle.kernel._claims import Claims
    from organelle.kernel._jobhost import JobHost
    from organelle.kernel._router import Router
    from organelle.kernel._slots import Binder, Slot, Slots
    from organelle.kernel._storage import StoreHost
    from organelle.kernel._streamhost import StreamHost
    from organelle.transport import Inbound

__all__ = ["Lifecycle"]

log = logging.getLogger("organelle.kernel")


class Service(Protocol):
    """A kernel-side service on the Store: opened after the ports, closed before the Store."""

    async def open(self) -> None:
        """Get ready before modules load (the Store is open)."""
        ...

    async def close(self) -> None:
        """Stop after modules stopped; never raises."""
        ...


class Lifecycle:
    """Starts and stops the kernel and moves each slot through its states."""

    def __init__(  # noqa: PLR0917 - the parts it orchestrates, named once by the façade
        self,
        slots: Slots,
        dispatcher: Dispatcher,
        router: Router,
        bus: EventBus,
        jobs: JobHost,
        streams: StreamHost,
        storage: StoreHost,
        settings: Callable[[], KernelSettings],
        binders: Sequence[Binder],
        claims: Claims | None = None,
    ) -> None:
        self.slots = slots
        self.dispatcher = dispatcher
        self.router = router
        self.bus = bus
        self.jobs = jobs
        self.streams = streams
        self.storage = storage
        self.settings = settings
        self.binders = tuple(binders)
        self.claims = claims
        self.lock = asyncio.Lock()
        self.started_at: float | None = None
        self.services: list[Service] = []  # e.g. the flag cache; opened in order

    @property
    def running(self) -> bool:
        """Whether the kernel has started and not yet stopped."""
        return self.dispatcher.running

    # the graph ----------------------------------------------------------------
    def check(self) -> list[list[str]]:
        """Start levels of the whole graph; raises ``DependencyError`` (see ``Kernel.check``)."""
        slots = self.slots
        levels = start_levels(
            {n: Node(n, s.spec.version, self.router.local_deps(s)) for n, s in slots.items()}
        )
        # Edge modules (``starts_last = True``: the HTTP gateway) start after all
        # others and stop first, unless another module depends on them.
        needed = {d.name for s in slots.values() for d in s.spec.deps}
        last = [
            n
            for lvl in levels
            for n in lvl
            if getattr(slots[n].instance, "starts_last", False) and n not in needed
        ]
        if not last:
            return levels
        rest = [[n for n in lvl if n not in last] for lvl in levels]
        return [*(lvl for lvl in rest if lvl), last]

    # the kernel ---------------------------------------------------------------
    async def start(self, inbound: Inbound) -> None:
        """Open the ports, load every module, start them level by level, then serve."""
        async with self.lock:
            if self.running:
                return
            levels = self.slots.levels = self.check()
            self.bus.start()
            self.dispatcher.running = self.dispatcher.starting = True
            # What the process held before the start is not rescanned by every full
            # collection the start triggers: with it, the per-module cost of a start
            # grew with the number of modules (5,000 cost 3-5x what 10 did). Only when
            # nothing is frozen yet: the thaw must not undo an earlier gc_freeze.
            thaw = gc.isenabled() and gc.get_freeze_count() == 0
            if thaw:
                gc.freeze()
            try:
                settings = self.settings()
                # fresh at each start
                self.router.transport = open_transport(settings, self.claims)
                self.dispatcher.resync()
                await self.router.transport.connect(inbound)
                await self.router.await_remote_deps()
                await self.storage.open()
                await self.jobs.open()
                await self.streams.open()
                for service in self.services:
                    await service.open()
                await self.load(levels)
                await self.start_levels(levels)
                for name in self.slots.order():
                    await self.serve(self.slots[name])
                await self.jobs.start()
                await self.streams.start()
            except BaseException:
                if thaw:
                    gc.unfreeze()
                self.dispatcher.running = self.dispatcher.starting = False
                await self._unwind(levels)
                raise
            self.dispatcher.accepting = True
            self.dispatcher.starting = False
            self.started_at = time.time()
            if self.settings().gc_freeze:
                gc.freeze()  # what start built lives as long as the process: stop rescanning it
            elif thaw:
                gc.unfreeze()
            log.info("kernel started with %d modules", len(self.slots))

    async def _unwind(self, levels: list[list[str]]) -> None:
        """Undo a start that failed part-way."""
        await self.streams.stop_work(0)
        await self.jobs.stop_work(0)
        for level in reversed(levels):
            await self.stop_many([n for n in level if self.slots.is_active(n)])
        await self.jobs.close()
        await self.streams.close()
        await self._close_transport()
        await self._close_claims()
        await self.bus.stop()
        await self._close_services()
        await self.storage.close()

    async def stop(self, before: Callable[[], object] | None = None) -> None:
        """Refuse new work, let in-flight work finish, stop modules in reverse, close ports."""
        async with self.lock:
            if not self.running:
                return
            self.dispatcher.accepting = False
            if before is not None:
                result = before()
                if asyncio.iscoroutine(result):
                    await result
            drain_s = self.settings().drain_timeout_s
            # Stop being picked first: off the wire, no new jobs or records taken.
            for name in reversed(self.slots.order()):
                slot = self.slots[name]
                if slot.state is ModuleState.ACTIVE:
                    await self.unbind(slot, "serve")
            await self.streams.stop_work(drain_s)
            await self.jobs.stop_work(drain_s)
            if not await self.dispatcher.wait_idle(drain_s):
                log.warning(
                    "drain timeout: %d calls and %d events still in flight",
                    self.dispatcher.inflight,
                    self.bus.pending,
                )
            for level in reversed(self.slots.levels):
                await self.stop_many([n for n in level if self.slots.is_active(n)])
            await self.jobs.close()
            await self.streams.close()
            await self._close_transport()
            await self._close_claims()
            await self.bus.stop()
            await self._close_services()
            await self.storage.close()
            self.dispatcher.running = False
            self.started_at = None
            log.info("kernel stopped")

    async def _close_services(self) -> None:
        for service in reversed(self.services):
            try:
                await service.close()
            except Exception:
                log.exception("closing %r", service)

    async def _close_transport(self) -> None:
        await self.router.routing.close()
        await self.router.transport.close()

    async def _close_claims(self) -> None:
        if self.claims is not None:
            try:
                await self.claims.close()
            except Exception:
                log.exception("closing the claim-check blob store")

    # one slot -----------------------------------------------------------------
    def timeout(self, slot: Slot) -> float:
        """The hook timeout of ``slot``'s module (its own, else the kernel's)."""
        own = type(slot.instance).hook_timeout_s
        return self.settings().hook_timeout_s if own is None else own

    async def set_state(self, slot: Slot, state: ModuleState) -> None:
        """Enter ``state`` and announce it as a ``kernel.module.*`` event."""
        slot.state = state
        payload = {"module": slot.name, "version": str(slot.spec.version), "state": state.value}
        if slot.error is not None and state is ModuleState.FAILED:
            payload["error"] = slot.error
        await self.dispatcher.announce(st.STATE_TOPICS[state], payload)

    async def bind(self, slot: Slot, *stages: str) -> None:
        """Attach the slot's bindings of ``stages`` (in binder order)."""
        for binder in self.binders:
            if binder.stage in stages and binder not in slot.bound:
                await binder.attach(slot)
                slot.bound.append(binder)

    async def unbind(self, slot: Slot, *stages: str) -> None:
        """Detach the slot's bindings of ``stages`` (in reverse binder order)."""
        for binder in reversed(self.binders):
            if binder.stage in stages and binder in slot.bound:
                slot.bound.remove(binder)
                await binder.detach(slot)

    async def add_binder(self, binder: Binder) -> None:
        """Bind a new kind from now on; every active slot gets its bindings at once.

        Takes no lock, so a module's ``on_start`` / ``on_stop`` may call it (the
        gateway adds its HTTP routes there) while a start or change holds it.
        A slot starting meanwhile gets the kind at its own ``serve`` stage.
        """
        if binder in self.binders:
            return
        self.binders = (*self.binders, binder)
        attached: list[Slot] = []
        try:
            for slot in list(self.slots.values()):
                if slot.state is ModuleState.ACTIVE and binder not in slot.bound:
                    await binder.attach(slot)
                    slot.bound.append(binder)
                    attached.append(slot)
        except BaseException:
            self.binders = tuple(b for b in self.binders if b is not binder)
            for slot in reversed(attached):
                slot.bound.remove(binder)
                await binder.detach(slot)
            raise

    async def remove_binder(self, binder: Binder) -> None:
        """Unbind a kind everywhere and stop binding it (no lock: see ``add_binder``)."""
        self.binders = tuple(b for b in self.binders if b is not binder)
        for slot in list(self.slots.values()):
            if binder in slot.bound:
                slot.bound.remove(binder)
                await binder.detach(slot)

    async def serve(self, slot: Slot) -> None:
        """An active slot's outward bindings: the wire, jobs, cron, stream consumers."""
        if slot.state is ModuleState.ACTIVE:
            await self.bind(slot, "serve")

    async def load(self, levels: list[list[str]]) -> None:
        """Run ``on_load`` of every module not yet loaded, in start order."""
        for level in levels:
            for name in level:
                slot = self.slots[name]
                if slot.loaded:
                    continue
                try:
                    await st.run_hook(slot, "on_load", self.timeout(slot))
                except LifecycleError as exc:
                    await self.fail(slot, exc)
                    raise
                slot.loaded = True
                await self.set_state(slot, ModuleState.LOADED)

    async def start_levels(self, levels: list[list[str]], *, serve: bool = False) -> None:
        """Start each level's modules together; on a failure stop what started, in reverse."""
        started: list[str] = []
        for level in levels:
            names = [n for n in level if not self.slots.is_active(n)]
            results = await asyncio.gather(
                *(self.start_one(self.slots[n], serve=serve) for n in names),
                return_exceptions=True,
            )
            errors = [r for r in results if isinstance(r, BaseException)]
            started += [n for n, r in zip(names, results, strict=True) if r is None]
            if errors:
                for level_names in reversed([*levels[: levels.index(level)], names]):
                    await self.stop_many([n for n in level_names if n in started])
                raise errors[0]

    async def start_one(self, slot: Slot, *, serve: bool = False) -> None:
        """Bind routes and subscriptions, run ``on_start``, become active (and serve)."""
        await self.set_state(slot, ModuleState.STARTING)
        await self.bind(slot, "route", "listen")
        try:
            await st.run_hook(slot, "on_start", self.timeout(slot))
        except LifecycleError as exc:
            await self.unbind(slot, "listen", "route")
            await self.fail(slot, exc)
            raise
        slot.error = None
        await self.set_state(slot, ModuleState.ACTIVE)
        if serve:
            await self.serve(slot)

    async def fail(self, slot: Slot, exc: LifecycleError) -> None:
        """A hook of the slot's module failed: abort it and cancel what it spawned."""
        slot.error = str(exc)
        await st.quietly(slot, "on_abort", self.timeout(slot), exc)
        await slot.instance._cancel_background()
        await self.set_state(slot, ModuleState.FAILED)

    async def stop_many(self, names: list[str]) -> None:
        """Stop the named modules together."""
        await asyncio.gather(*(self.stop_one(self.slots[n]) for n in names))

    async def stop_one(self, slot: Slot) -> None:
        """Unbind outward, stop listening, run ``on_stop``, then cancel tasks and unroute."""
        await self.unbind(slot, "serve")
        await self.set_state(slot, ModuleState.STOPPING)
        await self.unbind(slot, "listen")
        error = await st.quietly(slot, "on_stop", self.timeout(slot))
        await self.unbind(slot, "route")
        slot.error = error
        await self.set_state(slot, ModuleState.FAILED if error else ModuleState.STOPPED)
