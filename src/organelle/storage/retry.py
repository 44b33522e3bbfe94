"""Bounded retry with jittered exponential backoff for transient backend errors.

A dropped connection, a leader election or ``database is locked`` usually
clears within a second; retrying inside a fixed time budget hides it from the
caller, and past the budget the caller gets one clear
``StorageUnavailableError`` instead of a driver-specific exception.

Retrying is at-least-once: a write whose acknowledgement was lost may be
applied twice (harmless for ``put``; ``compare_and_set`` then reports a
conflict; ``incr`` may count twice on an ambiguous failure).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from organelle.errors import StorageUnavailableError

__all__ = ["RetryPolicy", "retrying"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How long and how often to retry a transient failure.

    Attributes:
        budget_s: total time allowed, first attempt included.
        base_delay_s: first backoff; doubles each attempt, with full jitter.
        max_delay_s: cap on a single backoff.
        max_attempts: cap on attempts, whatever the budget left.
    """

    budget_s: float = 5.0
    base_delay_s: float = 0.02
    max_delay_s: float = 0.5
    max_attempts: int = 20


NO_RETRY = RetryPolicy(budget_s=0.0, max_attempts=1)


async def retrying(
    op: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    is_transient: Callable[[BaseException], bool],
    what: str = "storage",
) -> T:
    """Run ``op`` until it succeeds, fails for good, or the budget runs out.

    Raises:
        StorageUnavailableError: transient failures outlasted the budget; the
            last one is chained as ``__cause__``.
    """
    deadline = time.monotonic() + policy.budget_s
    attempt = 0
    while True:
        attempt += 1
        try:
            return await op()
        except Exception as exc:
            if not is_transient(exc):
                raise
            delay = random.uniform(0, min(policy.max_delay_s, policy.base_delay_s * 2**attempt))  # noqa: S311 - jitter, not crypto
            if attempt >= policy.max_attempts or time.monotonic() + delay > deadline:
                raise StorageUnavailableError(
                    f"{what} unavailable after {attempt} attempt(s): {exc}",
                    details={"attempts": attempt, "error": type(exc).__name__},
                ) from exc
            await asyncio.sleep(delay)
