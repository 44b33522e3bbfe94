"""The health-check port: one async method returning a status with detail.

Three levels, as load balancers and Kubernetes read them: ``healthy``;
``degraded`` (serving, but something needs attention: it stays ready);
``unhealthy`` (a *required* check in this state takes the node out of
rotation). A check is anything with a ``name``, a ``required`` flag and an
async ``check()``; a module's own ``health()`` may return less (a bool, a
status name, a dict) and is normalised by ``as_result``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["CheckResult", "HealthCheck", "Status", "as_result"]


class Status(enum.StrEnum):
    """How a check, or the whole node, is doing; ordered from best to worst."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"

    @property
    def rank(self) -> int:
        """0 for healthy, 1 degraded, 2 unhealthy (to take the worst of several)."""
        return (Status.HEALTHY, Status.DEGRADED, Status.UNHEALTHY).index(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckResult:
    """The outcome of one check.

    Attributes:
        status: healthy, degraded or unhealthy.
        detail: a short human reason (empty when healthy).
        data: small JSON-friendly figures (a backlog, a lag).
    """

    status: Status
    detail: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)


class HealthCheck(Protocol):
    """A health check.

    Attributes:
        name: unique, stable; shown in ``/health/ready``.
        required: when unhealthy, the node is not ready (``503``); otherwise
            an unhealthy result only makes the node degraded.
    """

    @property
    def name(self) -> str:
        """Unique and stable."""
        ...

    @property
    def required(self) -> bool:
        """Whether unhealthy here means not ready."""
        ...

    async def check(self) -> CheckResult:
        """Look; never block for long (a timeout applies, and it counts as unhealthy)."""
        ...


def as_result(value: object) -> CheckResult:
    """Normalise what a ``health()`` hook returned.

    ``None``/``True`` are healthy, ``False`` unhealthy; a status name or
    ``Status``; a ``CheckResult``; or a dict with ``status`` and optional
    ``detail`` and other figures.
    """
    if isinstance(value, CheckResult):
        return value
    if value is None or value is True:
        return CheckResult(status=Status.HEALTHY)
    if value is False:
        return CheckResult(status=Status.UNHEALTHY, detail="reported unhealthy")
    if isinstance(value, str):
        return CheckResult(status=_status(value))
    if isinstance(value, Mapping):
        rest = {str(k): v for k, v in value.items() if k not in ("status", "detail")}
        return CheckResult(
            status=_status(value.get("status", Status.HEALTHY)),
            detail=str(value.get("detail", "")),
            data=rest,
        )
    return CheckResult(status=Status.UNHEALTHY, detail=f"health() returned {type(value).__name__}")


def _status(value: object) -> Status:
    try:
        return Status(str(value).lower())
    except ValueError:
        return Status.UNHEALTHY
