"""Supervision: a module whose background work crashes is restarted with backoff.

Only that module goes down: it is stopped (``on_stop``, its tasks cancelled,
its calls answered with ``UnavailableError``), then a fresh instance with the
same config is started after ``restart_backoff_s``, doubling up to
``restart_backoff_max_s`` while it keeps crashing. The others keep serving.
A module that ran for ``restart_reset_s`` before crashing starts over at the
shortest delay.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from organelle.errors import LifecycleError
from organelle.kernel._lifecycle import ModuleState, Record
from organelle.kernel._runtime import Runtime

if TYPE_CHECKING:
    from organelle.module import Module

__all__ = ["Supervision"]

log = logging.getLogger("organelle.kernel")


class Supervision(Runtime):
    """Restart crashed modules (state lives on ``Kernel``)."""

    _restarting: dict[str, asyncio.Task[None]]
    _crashes: dict[str, tuple[int, float]]  # name -> (consecutive crashes, last start time)

    def module_crashed(self, module: Module, error: BaseException) -> None:
        """Called when a module's background task dies with an exception."""
        rec = self._records.get(module.name)
        if (
            not self._running
            or not self.settings.restart_on_crash
            or rec is None
            or rec.instance is not module
            or module.name in self._restarting
        ):
            return
        task = asyncio.get_running_loop().create_task(
            self._restart(rec, error), name=f"organelle-restart-{module.name}"
        )
        self._restarting[module.name] = task
        task.add_done_callback(lambda _: self._restarting.pop(module.name, None))

    async def _restart(self, rec: Record, error: BaseException) -> None:
        name = rec.name
        count, started = self._crashes.get(name, (0, time.monotonic()))
        if time.monotonic() - started >= self.settings.restart_reset_s:
            count = 0
        log.error("module %r crashed (%s); restarting", name, error, exc_info=error)
        async with self._lock:
            if self._records.get(name) is not rec or rec.state is not ModuleState.ACTIVE:
                return
            await self._stop_one(rec)
            rec.error = f"crashed: {type(error).__name__}: {error}"
            await self._set_state(rec, ModuleState.FAILED)
        while self._running:
            delay = min(
                self.settings.restart_backoff_s * 2**count, self.settings.restart_backoff_max_s
            )
            count += 1
            await asyncio.sleep(delay)
            async with self._lock:
                if not self._running or self._records.get(name) is not rec:
                    return
                fresh = self._fresh(rec)
                self._records[name] = fresh
                try:
                    await self._load([[name]])
                    await self._start_levels([[name]])
                except LifecycleError as exc:
                    log.warning("restart %d of %r failed: %s", count, name, exc)
                    self._records[name] = rec
                    continue
            self._crashes[name] = (count, time.monotonic())
            log.info("module %r restarted (attempt %d)", name, count)
            return

    def _fresh(self, rec: Record) -> Record:
        instance = type(rec.instance)()
        instance._attach(rec.instance.kernel, rec.instance.config)
        return Record(instance=instance, spec=rec.spec, raw_config=rec.raw_config)

    async def _stop_supervision(self) -> None:
        tasks = list(self._restarting.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
