"""The kernel's side of durable jobs: the queue, a worker for local ``@job``s, cron.

The queue is opened when the kernel starts if any module declares a ``@job``
or ``@cron``, or ``[kernel] jobs`` names a queue (a node that only enqueues).
Each local job type is registered with its options and a validator built from
the handler's type hints, so bad params are refused at enqueue. The worker
runs a job by calling the *current* instance's method (it survives reloads)
in a fresh root context; cron ticks are enqueued with ids derived from the
tick, so several nodes fire each tick once.

The engine (which imports nothing of the kernel) reports to a ``JobObserver``;
the job host's observer turns each report into a ``JobReport`` for the
kernel's listeners (those of the moment, so a listener added at any time
sees what follows). At each enqueue it puts the enqueuer's ``traceparent``
in the job's meta and lets the listeners add to it (tracing: a ``PRODUCER``
span). A run goes through the kernel's one pipeline as a ``"job"``
invocation in a root context whose meta carries that ``traceparent``, so a
tracing middleware makes the run's span a child of the enqueuing span.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TYPE_CHECKING, Any

from organelle.codec import to_builtins
from organelle.context import current_context, root_context
from organelle.errors import ConfigError
from organelle.kernel._dispatch import Invocation, run_invocation
from organelle.kernel._listen import JobReport

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from organelle.config.settings import KernelSettings
    from organelle.jobs import JobQueue, JobSpec, JobsService, Schedule, Scheduler, Worker
    from organelle.kernel._dispatch import CallNext
    from organelle.kernel._listen import Listeners
    from organelle.kernel._slots import Slot, Slots
    from organelle.module._describe import JobMethod

__all__ = ["JobHost"]

DEFAULT_URL = "sqlite:///organelle-jobs.db"
TRACEPARENT = "traceparent"


class JobHost:
    """Owns the job queue, worker and scheduler of one kernel; binds each slot's jobs.

    As a binder (stage ``serve``) it gives the worker a slot's ``@job`` handlers
    and the scheduler its ``@cron`` entries, and takes them back on detach: the
    worker then stops claiming those jobs, which wait in the queue.
    """

    kind = "jobs"
    stage = "serve"

    def __init__(
        self,
        slots: Slots,
        settings: Callable[[], KernelSettings],
        chain: Callable[[], CallNext | None],
        running: Callable[[], bool],
        listeners: Listeners,
    ) -> None:
        self._slots = slots
        self._settings = settings
        self._chain = chain
        self._running = running
        self._listeners = listeners
        self.service: JobsService | None = None
        self.worker: Worker | None = None
        self.scheduler: Scheduler | None = None
        self._queue: JobQueue | None = None
        self._started = False

    @staticmethod
    def _jobs_of(slot: Slot) -> list[tuple[str, JobMethod]]:
        return [(f"{slot.name}.{job}", method) for job, method in slot.spec.jobs.items()]

    async def open(self) -> None:
        """Open the queue if this node has jobs or names a queue; register the job types."""
        settings = self._settings()
        local = [job for slot in self._slots.values() for job in self._jobs_of(slot)]
        if not local and not settings.jobs:
            return
        await self._open_queue()
        for job_name, method in local:
            self._register(job_name, method)

    async def _open_queue(self) -> None:
        from organelle.jobs import JobsService, open_queue

        self._queue = await open_queue(self._settings().jobs or DEFAULT_URL)
        self.service = JobsService(self._queue, observer=_Reporter(self._listeners))

    def _register(self, job_name: str, method: JobMethod) -> None:
        from organelle.jobs import Backoff, JobSpec

        assert self.service is not None  # noqa: S101 - opened first
        o = method.options
        spec = JobSpec(
            max_attempts=o.max_attempts,
            backoff=Backoff(base_s=o.backoff_s, max_s=o.backoff_max_s, jitter=0.2),
            timeout_s=o.timeout_s,
            concurrency=o.concurrency,
            rate=o.rate,
            lease_s=o.lease_s,
        )
        self.service.register(job_name, spec, validator=_validator(method))

    async def attach(self, slot: Slot) -> None:
        """Run the slot's jobs here and fire its cron entries."""
        jobs = self._jobs_of(slot)
        if not jobs:
            return
        if self.service is None:  # the first module with jobs, added at run time
            await self._open_queue()
        assert self.service is not None  # noqa: S101 - opened above
        assert self._queue is not None  # noqa: S101 - opened with the service
        settings = self._settings()
        for job_name, method in jobs:
            self._register(job_name, method)
            if settings.job_worker:
                handler = self._handler(slot.name, job_name, method)
                worker = await self._worker()
                worker.add(job_name, handler, self.service.spec(job_name))
            if method.cron is not None and settings.job_scheduler:
                if self.scheduler is None:
                    from organelle.jobs import Scheduler

                    self.scheduler = Scheduler(self._queue, [])
                    if self._started:
                        await self.scheduler.start()
                self.scheduler.add(_schedule(job_name, method))

    async def _worker(self) -> Worker:
        assert self.service is not None  # noqa: S101 - opened by the caller
        if self.worker is None:
            self.worker = self.service.worker({}, slots=self._settings().job_slots)
            if self._started:
                await self.worker.start()
        return self.worker

    async def serve(
        self, job_name: str, handler: Callable[..., Awaitable[Any]], spec: JobSpec
    ) -> None:
        """Run a kernel-made job type here (a saga's steps), opening the queue if needed."""
        if self.service is None:
            await self._open_queue()
        assert self.service is not None  # noqa: S101 - opened above
        self.service.register(job_name, spec)
        if self._settings().job_worker:
            (await self._worker()).add(job_name, handler, spec)

    def unserve(self, names: list[str]) -> list[asyncio.Task[None]]:
        """Stop running kernel-made job types here; return their runs still in flight."""
        running = self.worker.remove(names) if self.worker is not None else []
        if self.service is not None:
            for name in names:
                self.service.unregister(name)
        return running

    async def detach(self, slot: Slot) -> None:
        """Stop running the slot's jobs here; let the runs in flight finish (bounded)."""
        names = [job_name for job_name, _ in self._jobs_of(slot)]
        if not names:
            return
        if self.scheduler is not None:
            self.scheduler.remove(names)
        running: list[asyncio.Task[None]] = []
        if self.worker is not None:
            running = self.worker.remove(names)
        if self.service is not None:
            for name in names:
                self.service.unregister(name)
        if running:
            await asyncio.wait(running, timeout=self._settings().drain_timeout_s)

    async def switch(self, old: Slot, new: Slot) -> None:  # noqa: ARG002 - the binder's shape
        """A reload: handlers look the live instance up per run; re-register new signatures."""
        if self.service is not None:
            for job_name, method in self._jobs_of(new):
                self._register(job_name, method)

    async def start(self) -> None:
        """Start the worker and the scheduler (once every module is active)."""
        self._started = True
        if self.worker is not None:
            await self.worker.start()
        if self.scheduler is not None:
            await self.scheduler.start()

    def _handler(
        self, module: str, job_name: str, method: JobMethod
    ) -> Callable[..., Awaitable[Any]]:
        from organelle.jobs import current_job

        slots = self._slots
        chain_of = self._chain

        async def run(**params: Any) -> Any:
            # The current instance, so a reloaded module runs its new code.
            fn = getattr(slots.require(module).instance, method.attr)
            args = method.contract.validate(params)
            lease = current_job.get()
            ctx = root_context(None, meta=dict(lease.meta) if lease and lease.meta else None)

            async def call(_: Invocation) -> Any:
                if isinstance(args, tuple):
                    return await fn(*args)
                return await fn(**args)

            # Tracing sees a "job" invocation as a CONSUMER span.
            inv = Invocation("job", job_name, module, params, None, ctx, call)
            return await run_invocation(chain_of(), inv)

        return run

    def pipelined(
        self, module: str, job_name: str, fn: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        """A kernel-made job handler run like a ``@job``: a ``"job"`` invocation, a root context."""
        from organelle.jobs import current_job

        chain_of = self._chain

        async def run(**params: Any) -> Any:
            lease = current_job.get()
            ctx = root_context(None, meta=dict(lease.meta) if lease and lease.meta else None)

            async def call(_: Invocation) -> Any:
                return await fn(**params)

            inv = Invocation("job", job_name, module, params, None, ctx, call)
            return await run_invocation(chain_of(), inv)

        return run

    def jobs(self) -> JobsService:
        """The service behind ``kernel.jobs``."""
        if self.service is None:
            raise ConfigError(
                "no job queue: no module declares @job or @cron and [kernel] jobs is not set"
                if self._running()
                else "the job queue opens when the kernel starts"
            )
        return self.service

    async def idle(self, timeout_s: float = 30.0, horizon_s: float = 1.0) -> None:
        """Wait until the local worker has nothing in flight and nothing due within ``horizon_s``.

        Jobs due later (long delays, backoff) are left for later, so a test of
        a retry with a short backoff still sees it run.
        """
        worker, queue = self.worker, self._queue
        if worker is None or queue is None:
            return
        deadline = time.monotonic() + timeout_s
        names = [n for n in worker.handlers if n not in worker.paused]  # paused jobs wait
        while time.monotonic() < deadline:
            if not worker.busy:
                started = worker.stats.started
                due = await queue.next_due(names)
                # the worker may have claimed the job while the query ran: a
                # running job shows up as its lease, not as due work
                quiet = not worker.busy and worker.stats.started == started
                if quiet and (due is None or due > time.time() + horizon_s):
                    return
            await asyncio.sleep(0.005)
        raise TimeoutError(f"jobs still running after {timeout_s:g}s")

    async def stop_work(self, drain_timeout_s: float) -> None:
        """Stop the scheduler, then let the worker finish in-flight jobs (before modules stop)."""
        scheduler, self.scheduler = self.scheduler, None
        if scheduler is not None:
            await scheduler.stop()
        worker, self.worker = self.worker, None
        self._started = False
        if worker is not None:
            await worker.stop(drain_timeout_s=drain_timeout_s)

    async def close(self) -> None:
        """Close the queue (after modules stopped)."""
        queue, self._queue = self._queue, None
        self.service = None
        if queue is not None:
            await queue.close()


class _Reporter:
    """The jobs engine's observer: each report goes to the kernel's job listeners."""

    def __init__(self, listeners: Listeners) -> None:
        self._listeners = listeners

    def enqueued(self, job: str, meta: dict[str, str]) -> None:
        meta.update(_enqueuer_trace())
        if self._listeners.jobs:
            self._listeners.job(JobReport(stage="enqueued", job=job, meta=meta))

    def succeeded(self, job: str, duration_s: float) -> None:
        if self._listeners.jobs:
            self._listeners.job(JobReport(stage="succeeded", job=job, duration_s=duration_s))

    def failed(self, job: str, duration_s: float) -> None:
        if self._listeners.jobs:
            self._listeners.job(JobReport(stage="failed", job=job, duration_s=duration_s))

    def retried(self, job: str) -> None:
        if self._listeners.jobs:
            self._listeners.job(JobReport(stage="retried", job=job))

    def dead(self, job: str) -> None:
        if self._listeners.jobs:
            self._listeners.job(JobReport(stage="dead", job=job))


def _enqueuer_trace() -> dict[str, str]:
    """The enqueuer's trace context: its ``traceparent``, else the ambient OpenTelemetry span."""
    ctx = current_context()
    value = ctx.meta.get(TRACEPARENT) if ctx is not None else None
    if value is None and "opentelemetry.trace" in sys.modules:  # tracing on: otel is loaded
        from opentelemetry import trace

        sc = trace.get_current_span().get_span_context()
        if sc.is_valid:
            value = f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{int(sc.trace_flags):02x}"
    return {TRACEPARENT: value} if isinstance(value, str) else {}


def _validator(method: JobMethod) -> Callable[[dict[str, Any]], dict[str, Any]]:
    contract = method.contract

    def check(params: dict[str, Any]) -> dict[str, Any]:
        contract.validate(params)  # raises ValidationError listing each bad field
        return to_builtins(params)  # type: ignore[no-any-return]

    return check


def _schedule(job_name: str, method: JobMethod) -> Schedule:
    from organelle.jobs import Schedule

    c = method.cron
    assert c is not None  # noqa: S101 - checked by the caller
    return Schedule(
        job=job_name,
        expr=c.expr,
        tz=c.tz,
        misfire=c.misfire,
        misfire_window_s=c.misfire_window_s,
        max_attempts=method.options.max_attempts,
        lease_s=method.options.lease_s,
    )
