"""Supervision: a module whose background work crashes is restarted with backoff.

Only that module goes down: it is stopped (``on_stop``, every binding taken
down, its calls answered with ``UnavailableError``), then a fresh instance
with the same config is started after ``restart_backoff_s``, doubling up to
``restart_backoff_max_s`` while it keeps crashing. The others keep serving.
A module that ran for ``restart_reset_s`` before crashing starts over at the
shortest delay.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from organelle.errors import LifecycleError
from organelle.kernel._slots import Slot
from organelle.kernel._states import ModuleState

if TYPE_CHECKING:
    from organelle.kernel._lifecycle import Lifecycle
    from organelle.module import Module

__all__ = ["Supervisor"]

log = logging.getLogger("organelle.kernel")


class Supervisor:
    """Restarts crashed modules of one kernel."""

    def __init__(self, life: Lifecycle, attach: Callable[[Module, Any], None]) -> None:
        self._life = life
        self._attach = attach
        self._restarting: dict[str, asyncio.Task[None]] = {}
        self._crashes: dict[str, tuple[int, float]] = {}  # name -> (crashes in a row, last start)

    def crashed(self, module: Module, error: BaseException) -> None:
        """A module's background task died with an exception: restart it, unless stopping."""
        life = self._life
        slot = life.slots.get(module.name)
        if (
            not life.running
            or not life.settings().restart_on_crash
            or slot is None
            or slot.instance is not module
            or module.name in self._restarting
        ):
            return
        task = asyncio.get_running_loop().create_task(
            self._restart(slot, error), name=f"organelle-restart-{module.name}"
        )
        self._restarting[module.name] = task
        task.add_done_callback(lambda _: self._restarting.pop(module.name, None))

    async def _restart(self, slot: Slot, error: BaseException) -> None:
        life = self._life
        name = slot.name
        settings = life.settings()
        count, started = self._crashes.get(name, (0, time.monotonic()))
        if time.monotonic() - started >= settings.restart_reset_s:
            count = 0
        log.error("module %r crashed (%s); restarting", name, error, exc_info=error)
        async with life.lock:
            if life.slots.get(name) is not slot or slot.state is not ModuleState.ACTIVE:
                return
            await life.stop_one(slot)
            slot.error = f"crashed: {type(error).__name__}: {error}"
            await life.set_state(slot, ModuleState.FAILED)
        while life.running:
            settings = life.settings()
            delay = min(settings.restart_backoff_s * 2**count, settings.restart_backoff_max_s)
            count += 1
            await asyncio.sleep(delay)
            async with life.lock:
                if not life.running or life.slots.get(name) is not slot:
                    return
                fresh = self._fresh(slot)
                life.slots.put(fresh)
                try:
                    await life.load([[name]])
                    await life.start_levels([[name]], serve=True)
                except LifecycleError as exc:
                    log.warning("restart %d of %r failed: %s", count, name, exc)
                    life.slots.put(slot)
                    continue
            self._crashes[name] = (count, time.monotonic())
            log.info("module %r restarted (attempt %d)", name, count)
            return

    def _fresh(self, slot: Slot) -> Slot:
        instance = type(slot.instance)()
        self._attach(instance, slot.instance.config)
        return Slot(instance=instance, spec=slot.spec, raw_config=slot.raw_config)

    async def stop(self) -> None:
        """Cancel every pending restart (the kernel is stopping)."""
        tasks = list(self._restarting.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
