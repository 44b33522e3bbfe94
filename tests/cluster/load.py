"""A closed-loop load generator that records every call's start, end and outcome."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from organelle import Kernel
from organelle.errors import OrganelleError


@dataclass(slots=True)
class Outcome:
    start: float
    end: float
    error: str | None = None
    pid: int | None = None


@dataclass
class Load:
    """``workers`` callers, each calling ``work.job`` in a loop with ``timeout_s``."""

    kernel: Kernel
    workers: int = 10
    timeout_s: float = 1.0
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: bool = False

    async def _worker(self) -> None:
        i = 0
        while not self._stop:
            start = time.monotonic()
            try:
                out: Any = await self.kernel.call_with(
                    "work.job", {"i": i}, timeout_s=self.timeout_s
                )
            except OrganelleError as exc:
                self.outcomes.append(Outcome(start, time.monotonic(), type(exc).__name__))
            else:
                self.outcomes.append(Outcome(start, time.monotonic(), pid=out["pid"]))
            i += 1

    async def run_while(self, body: Any) -> None:
        """Keep the load on while ``body`` (a coroutine) runs, then let in-flight calls end."""
        tasks = [asyncio.create_task(self._worker()) for _ in range(self.workers)]
        try:
            await body
        finally:
            self._stop = True
            await asyncio.wait_for(asyncio.gather(*tasks), self.timeout_s + 5)

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.error is not None]
