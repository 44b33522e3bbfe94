"""Durable jobs as the dashboard shows them: job types, backlog, worker counters, dead letters.

Read through ``kernel.jobs`` (the ``JobsService``): ``backlog()`` is one
grouped count, dead jobs are a ``scan``. On NATS a scan reads every job
record, so the page only asks for the dead-letter list when there are some,
and the dead count stops at ``DEAD_CAP``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from organelle.config.secrets import mask
from organelle.dashboard._views import (
    DeadLettersView,
    DeadLetterView,
    JobsView,
    JobTypeView,
    WorkerView,
)
from organelle.errors import ConfigError
from organelle.module import describe

if TYPE_CHECKING:
    from organelle.jobs import JobRecord, JobsService
    from organelle.kernel import Kernel

__all__ = ["DEAD_CAP", "MAX_PAGE", "dead_letters", "jobs_summary"]

DEAD_CAP = 1000
MAX_PAGE = 500


def _service(kernel: Kernel) -> JobsService | str:
    """The jobs service, or why this node has none."""
    try:
        return kernel.jobs
    except ConfigError as exc:
        return exc.message


def _crons(kernel: Kernel) -> dict[str, str]:
    """``"module.job"`` → cron expression, for the local ``@cron`` jobs."""
    out: dict[str, str] = {}
    for info in kernel.modules().values():
        for name, method in describe(type(info.instance)).jobs.items():
            if method.cron is not None:
                out[f"{info.name}.{name}"] = f"{method.cron.expr} ({method.cron.tz})"
    return out


def _worker(kernel: Kernel) -> WorkerView | None:
    worker = kernel.job_worker
    if worker is None:
        return None
    s = worker.stats
    paused = getattr(worker, "paused", None)  # a worker that can pause says what it paused
    return WorkerView(
        paused=None if paused is None else sorted(paused),
        in_flight=worker.in_flight,
        started=s.started,
        succeeded=s.succeeded,
        retried=s.retried,
        dead=s.dead,
        lost=s.lost,
        released=s.released,
    )


async def jobs_summary(kernel: Kernel) -> JobsView:
    """``/api/jobs``: registered job types with their backlog, worker counters, dead count."""
    service = _service(kernel)
    if isinstance(service, str):
        return JobsView(enabled=False, reason=service)
    queue = service.queue
    backlog = {str(k): int(v) for k, v in (await queue.backlog()).items()}
    dead = await queue.scan("dead", limit=DEAD_CAP + 1)
    crons = _crons(kernel)
    types = [
        JobTypeView(
            name=name,
            max_attempts=spec.max_attempts,
            timeout_s=spec.timeout_s,
            concurrency=spec.concurrency,
            rate=spec.rate,
            lease_s=spec.lease_s,
            cron=crons.get(name),
            backlog=backlog.get(name, 0),
        )
        for name, spec in sorted(service.specs.items())
    ]
    return JobsView(
        enabled=True,
        types=types,
        backlog=backlog,
        dead=min(len(dead), DEAD_CAP),
        dead_capped=len(dead) > DEAD_CAP,
        worker=_worker(kernel),
    )


def _dead_view(record: JobRecord) -> DeadLetterView:
    last = record.errors[-1] if record.errors else None
    params: Any = mask(record.params, by_name=True)
    return DeadLetterView(
        id=record.id,
        name=record.name,
        attempts=record.attempts,
        max_attempts=record.max_attempts,
        created_at=record.created_at,
        updated_at=record.updated_at,
        params=params if isinstance(params, dict) else {"value": params},
        error_type=None if last is None else last.type,
        error=None if last is None else last.message,
    )


async def dead_letters(kernel: Kernel, *, limit: int, offset: int) -> DeadLettersView:
    """``/api/jobs/dead``: one page of dead jobs, oldest first (tracebacks left out)."""
    service = _service(kernel)
    if isinstance(service, str):
        return DeadLettersView(enabled=False, limit=limit, offset=offset, items=[])
    records = await service.dead_letters.list(limit=limit, offset=offset)
    return DeadLettersView(
        enabled=True, limit=limit, offset=offset, items=[_dead_view(r) for r in records]
    )
