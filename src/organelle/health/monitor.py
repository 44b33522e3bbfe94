"""Aggregated health, liveness and readiness of one kernel.

Liveness answers "is the process working": it never consults a dependency,
or one database blip would restart every replica (Kubernetes' own advice).
Readiness answers "send me traffic": false while the kernel starts or drains,
and while a required check is unhealthy. Checks run concurrently, each under
its own timeout (a check that hangs is unhealthy, it does not hang the probe);
concurrent probes share one run, and a result is reused for ``cache_s``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from organelle.health.base import CheckResult, HealthCheck, Status
from organelle.health.checks import (
    JobBacklogCheck,
    LeaderCheck,
    ModuleCheck,
    StorageCheck,
    StreamLagCheck,
    TransportCheck,
)

if TYPE_CHECKING:
    from organelle.kernel import Kernel

__all__ = ["Health", "HealthReport"]


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthReport:
    """The outcome of one round of checks.

    Attributes:
        status: the worst of the checks (an unhealthy optional check counts as degraded).
        ready: accepting work and no required check unhealthy.
        reason: why not ready (empty when ready).
        checks: per check: status, detail, required, duration_ms and data.
    """

    status: Status
    ready: bool
    reason: str = ""
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The body of ``/health/ready``."""
        return {
            "status": self.status.value,
            "ready": self.ready,
            "reason": self.reason,
            "checks": self.checks,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class _Round:
    status: Status
    failing: list[str]
    checks: dict[str, dict[str, Any]]
    accepting: bool  # a round from before start (or drain) is never reused after it


class Health:
    """Health of one kernel: built-in checks plus those added with ``add``.

    Args:
        kernel: the kernel to watch.
        timeout_s: timeout of each check (default ``[kernel] health_timeout_s``).
        cache_s: reuse a result this long (probes may come from many places).
        backlog_limit: jobs waiting before the node reports degraded.
    """

    def __init__(
        self,
        kernel: Kernel,
        *,
        timeout_s: float | None = None,
        cache_s: float = 0.25,
        backlog_limit: int = 10_000,
    ) -> None:
        self.kernel = kernel
        self._timeout_s = timeout_s
        self.cache_s = cache_s
        self._custom: list[HealthCheck] = []
        self._fixed: list[HealthCheck] = [
            TransportCheck(kernel),
            StorageCheck(kernel),
            JobBacklogCheck(kernel, backlog_limit),
            StreamLagCheck(kernel, backlog_limit),
            LeaderCheck(kernel),
        ]
        self._started = time.monotonic()
        self._was_accepting = False
        self._last: tuple[float, _Round] | None = None
        self._running: asyncio.Future[_Round] | None = None

    @property
    def timeout_s(self) -> float:
        """Each check's timeout (read from the settings, so a reload applies it)."""
        return self._timeout_s or self.kernel.settings.health_timeout_s

    def add(self, check: HealthCheck) -> None:
        """Add a check; a name already taken is refused.

        Raises:
            ValueError: two checks with one name.
        """
        if any(c.name == check.name for c in self.checks()):
            raise ValueError(f"a health check named {check.name!r} exists")
        self._custom.append(check)

    def checks(self) -> list[HealthCheck]:
        """Every check of this round: one per module (as registered now), built-ins, added."""
        modules: list[HealthCheck] = [ModuleCheck(self.kernel, n) for n in self.kernel.modules()]
        return [*modules, *self._fixed, *self._custom]

    def live(self) -> dict[str, Any]:
        """Liveness: answering at all proves the loop runs; no dependency is consulted."""
        return {"status": "alive", "uptime_s": round(time.monotonic() - self._started, 3)}

    async def report(self) -> HealthReport:
        """Run every check (or reuse a fresh result) and aggregate; readiness is always current."""
        last = self._last
        fresh = last is not None and time.monotonic() - last[0] < self.cache_s
        if last is not None and fresh and last[1].accepting == self.kernel.accepting:
            done = last[1]
        else:
            if self._running is None:
                self._running = asyncio.ensure_future(self._run())
                self._running.add_done_callback(self._finished)
            done = await asyncio.shield(self._running)
        reason = self._not_accepting()
        if not reason and done.failing:
            reason = "required check failing: " + ", ".join(done.failing)
        return HealthReport(status=done.status, ready=not reason, reason=reason, checks=done.checks)

    def _finished(self, fut: asyncio.Future[_Round]) -> None:
        self._running = None
        if not fut.cancelled() and fut.exception() is None:
            self._last = (time.monotonic(), fut.result())

    async def _run(self) -> _Round:
        accepting = self.kernel.accepting
        checks = self.checks()
        results = await asyncio.gather(*(self._one(c) for c in checks))
        detail: dict[str, dict[str, Any]] = {}
        worst = Status.HEALTHY
        failing: list[str] = []
        for check, (result, took) in zip(checks, results, strict=True):
            status = result.status
            if check.required and status is Status.UNHEALTHY:
                failing.append(check.name)
            elif status is Status.UNHEALTHY:
                status = Status.DEGRADED
            worst = max(worst, status, key=lambda s: s.rank)
            detail[check.name] = {
                "status": result.status.value,
                "required": check.required,
                "detail": result.detail,
                "duration_ms": round(took * 1000, 3),
                **({"data": dict(result.data)} if result.data else {}),
            }
        return _Round(status=worst, failing=failing, checks=detail, accepting=accepting)

    def _not_accepting(self) -> str:
        kernel = self.kernel
        if kernel.accepting:
            self._was_accepting = True
            return ""
        if not kernel.running:
            return "stopped" if self._was_accepting else "not started"
        return "draining" if self._was_accepting else "starting"

    async def _one(self, check: HealthCheck) -> tuple[CheckResult, float]:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await check.check()
        except TimeoutError:
            result = CheckResult(
                status=Status.UNHEALTHY, detail=f"timed out after {self.timeout_s:g}s"
            )
        except Exception as exc:
            result = CheckResult(status=Status.UNHEALTHY, detail=f"{type(exc).__name__}: {exc}")
        return result, time.perf_counter() - started
