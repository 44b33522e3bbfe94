"""Built-in checks: each module, the transport, the store, the job backlog.

They read what the kernel and the blocks already know; none of them touches
a remote service except the store check (one read), which runs only once
the store has been opened: a node that never used storage does not depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from organelle.errors import ConfigError
from organelle.health.base import CheckResult, Status, as_result
from organelle.kernel._states import ModuleState

if TYPE_CHECKING:
    from organelle.kernel import Kernel

__all__ = [
    "JobBacklogCheck",
    "LeaderCheck",
    "ModuleCheck",
    "StorageCheck",
    "StreamLagCheck",
    "TransportCheck",
]

_PROBE_KEY = "__organelle__/health"


@dataclass(slots=True)
class ModuleCheck:
    """A module is active, and its own ``health()`` (if any) says how it is."""

    kernel: Kernel
    module: str
    required: bool = True

    @property
    def name(self) -> str:
        """``module:<name>``."""
        return f"module:{self.module}"

    async def check(self) -> CheckResult:
        """Unhealthy unless active; then whatever ``health()`` says."""
        rec = self.kernel.modules().get(self.module)
        if rec is None:
            return CheckResult(status=Status.UNHEALTHY, detail="not registered")
        if rec.state is not ModuleState.ACTIVE:
            detail = rec.state.value + (f": {rec.error}" if rec.error else "")
            return CheckResult(status=Status.UNHEALTHY, detail=detail)
        hook = getattr(rec.instance, "health", None)
        if hook is None:
            return CheckResult(status=Status.HEALTHY)
        return as_result(await hook())


@dataclass(slots=True)
class TransportCheck:
    """The transport is connected (a transport reports it with a ``connected`` property).

    Degraded while it is dropping incoming events because this node cannot keep
    up (``rejected["overflow"]`` grew since the previous check): the node
    serves, but its events are being lost and counted.
    """

    kernel: Kernel
    name: str = "transport"
    required: bool = True
    overflow_seen: int = 0

    async def check(self) -> CheckResult:
        """Healthy in-process; unhealthy disconnected; degraded while events overflow."""
        transport = self.kernel.transport
        if transport.solo:
            return CheckResult(status=Status.HEALTHY, detail="in-process")
        connected = getattr(transport, "connected", None)
        if connected is False:
            return CheckResult(status=Status.UNHEALTHY, detail="disconnected")
        overflow = transport.rejected.get("overflow", 0)
        grew, self.overflow_seen = overflow - self.overflow_seen, overflow
        if grew > 0:
            detail = f"{grew} incoming events dropped since the last check: the backlog is full"
            return CheckResult(status=Status.DEGRADED, detail=detail)
        return CheckResult(status=Status.HEALTHY)


@dataclass(slots=True)
class StorageCheck:
    """The store answers a read, once it has been opened."""

    kernel: Kernel
    name: str = "storage"
    required: bool = True

    async def check(self) -> CheckResult:
        """One read of an absent key; an error or a timeout is unhealthy."""
        store = self.kernel.store_if_open
        if store is None:
            return CheckResult(status=Status.HEALTHY, detail="not opened")
        await store.get(_PROBE_KEY)
        return CheckResult(status=Status.HEALTHY)


@dataclass(slots=True)
class JobBacklogCheck:
    """Jobs waiting stay under ``limit``; over it the node is degraded (still ready)."""

    kernel: Kernel
    limit: int = 10_000
    name: str = "jobs"
    required: bool = False

    async def check(self) -> CheckResult:
        """Sum of the due jobs waiting, as the job queue reports them."""
        try:
            jobs = self.kernel.jobs
        except ConfigError:  # no job queue on this node (or not started)
            return CheckResult(status=Status.HEALTHY, detail="no jobs engine")
        depths = await jobs.backlog()
        total = sum(depths.values())
        data = {"backlog": total, "limit": self.limit}
        if total > self.limit:
            return CheckResult(
                status=Status.DEGRADED, detail=f"backlog {total} over {self.limit}", data=data
            )
        return CheckResult(status=Status.HEALTHY, data=data)


@dataclass(slots=True)
class StreamLagCheck:
    """This node's consumer groups keep up: total lag under ``limit``, else degraded.

    Unhealthy when the stream log cannot be read at all (the groups are
    stuck, whatever their lag). Only streams a local ``@consume`` reads are
    looked at; a node without any is healthy.
    """

    kernel: Kernel
    limit: int = 10_000
    name: str = "streams"
    required: bool = False

    async def check(self) -> CheckResult:
        """Sum of each local group's lag over the partitions of its stream."""
        members = {(c.stream, c.group) for c in self.kernel.consumers()}
        if not members:
            return CheckResult(status=Status.HEALTHY, detail="no stream consumers")
        lag: dict[str, int] = {}
        try:
            log = self.kernel.streams
            for stream in sorted({s for s, _ in members}):
                info = await log.info(stream)
                for g in info.groups:
                    if (stream, g.group) in members:
                        key = f"{stream}/{g.group}"
                        lag[key] = lag.get(key, 0) + g.lag
        except Exception as exc:  # any failure to read is the finding
            return CheckResult(status=Status.UNHEALTHY, detail=f"stream log: {exc}")
        total = sum(lag.values())
        data: dict[str, Any] = {"lag": total, "limit": self.limit, "groups": lag}
        if total > self.limit:
            return CheckResult(
                status=Status.DEGRADED, detail=f"lag {total} over {self.limit}", data=data
            )
        return CheckResult(status=Status.HEALTHY, data=data)


@dataclass(slots=True)
class LeaderCheck:
    """Which ``@leader`` elections this node leads (always healthy: following is normal).

    Reads the kernel's election state only (no Store read): ``data`` maps each
    election's lock name to ``{"leading", "token", "terms"}``.
    """

    kernel: Kernel
    name: str = "leaders"
    required: bool = False

    async def check(self) -> CheckResult:
        """This node's elections and whether it leads each."""
        elections = self.kernel.leaders()
        if not elections:
            return CheckResult(status=Status.HEALTHY, detail="no elections")
        data: dict[str, Any] = {
            e.name: {"leading": e.leading, "token": e.token, "terms": e.terms} for e in elections
        }
        leading = sorted(e.name for e in elections if e.leading)
        detail = f"leading {', '.join(leading)}" if leading else "following"
        return CheckResult(status=Status.HEALTHY, detail=detail, data=data)
