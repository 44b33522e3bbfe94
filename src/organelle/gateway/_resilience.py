"""Retries with backoff and a circuit breaker, for calls that leave this process.

Only calls to modules on other nodes go through here: a local call cannot be
lost on the way, so retrying it would only repeat work. A retry happens only
for ``UnavailableError`` (nobody took the call, so it did not run); a timeout
may have run and is not retried. After ``failures`` transport errors in a row
a module's breaker opens: calls fail fast with 503 until ``reset_s`` passed,
then one trial call decides (half-open).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from organelle.errors import TransportError, UnavailableError

__all__ = ["CircuitBreaker", "RemoteCaller"]


class CircuitBreaker:
    """Closed, open after ``failures`` in a row, half-open after ``reset_s``, closed on success."""

    def __init__(self, failures: int, reset_s: float) -> None:
        self.failures = failures
        self.reset_s = reset_s
        self.count = 0
        self.opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open``."""
        if self.opened_at is None:
            return "closed"
        return "half-open" if time.monotonic() - self.opened_at >= self.reset_s else "open"

    def allow(self) -> bool:
        """Whether a call may go out now."""
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self._trial:
            self._trial = True
            return True
        return False

    def success(self) -> None:
        """A call got an answer (even an error answer): the module is reachable."""
        self.count = 0
        self.opened_at = None
        self._trial = False

    def failure(self) -> None:
        """A call got no answer."""
        self.count += 1
        self._trial = False
        if self.count >= self.failures or self.opened_at is not None:
            self.opened_at = time.monotonic()


class RemoteCaller:
    """Wraps a call function with a breaker per module and retries of undelivered calls."""

    def __init__(
        self,
        call: Callable[..., Awaitable[Any]],
        *,
        retries: int,
        backoff_s: float,
        max_backoff_s: float,
        breaker_failures: int,
        breaker_reset_s: float,
    ) -> None:
        self._call = call
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._failures = breaker_failures
        self._reset_s = breaker_reset_s
        self.breakers: dict[str, CircuitBreaker] = {}

    def breaker(self, module: str) -> CircuitBreaker:
        """The breaker of ``module`` (created closed)."""
        found = self.breakers.get(module)
        if found is None:
            found = self.breakers[module] = CircuitBreaker(self._failures, self._reset_s)
        return found

    async def call(self, target: str, params: dict[str, Any], **options: Any) -> Any:
        """Call ``target``; same errors as the kernel, plus 503 while the breaker is open."""
        module = target.partition(".")[0]
        breaker = self.breaker(module)
        deadline = time.monotonic() + (options.get("timeout_s") or 30.0)
        attempt = 0
        while True:
            if not breaker.allow():
                raise UnavailableError(
                    f"module {module!r} is failing; circuit open",
                    details={"module": module, "breaker": "open"},
                )
            try:
                result = await self._call(target, params, **options)
            except UnavailableError:
                breaker.failure()
                attempt += 1
                pause = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
                pause *= random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto
                if attempt > self.retries or time.monotonic() + pause >= deadline:
                    raise
                await asyncio.sleep(pause)
                options["timeout_s"] = max(0.001, deadline - time.monotonic())
                continue
            except TransportError:
                breaker.failure()
                raise
            except Exception:  # an answer, even an error one: the module is reachable
                breaker.success()
                raise
            breaker.success()
            return result
