"""``JobsService``: the facade the kernel exposes as ``kernel.jobs``.

It knows each job type's ``JobSpec`` and optional params validator, turns
``delay_s`` / ``at`` into an absolute ``run_at``, refuses bad params at
enqueue (``ValidationError``) and stores the job through the ``JobQueue``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from organelle.errors import ValidationError
from organelle.jobs.base import JobQueue, JobRecord, JobSpec, NewJob
from organelle.jobs.dead import DeadLetters
from organelle.jobs.worker import JobHandler, JobObserver, Worker, notify

__all__ = ["JobsService", "Validator"]

Validator = Callable[[dict[str, Any]], dict[str, Any]]
"""Checks (and may normalise) a job's params; raises ``ValidationError`` or ``ValueError``."""


@dataclass(frozen=True, slots=True)
class _JobType:
    spec: JobSpec
    validator: Validator | None


class JobsService:
    """Enqueue, inspect and dead-letter jobs of one queue.

    Args:
        queue: the backend.
        strict: refuse names that were never ``register``-ed.
        clock: wall-clock seconds (shared with the queue in tests).
        observer: told of enqueues here and of outcomes by this service's workers;
            at each enqueue it may add to the job's meta, which is stored with the
            job and handed to the handler's run in ``Lease.meta`` (the kernel
            passes the enqueuer's ``traceparent`` this way).

    Example::

        jobs = JobsService(await open_queue("sqlite:///var/jobs.db"))
        jobs.register("send_mail", JobSpec(max_attempts=5))
        job_id = await jobs.enqueue("send_mail", {"to": "a@b.c"}, delay_s=60)
    """

    def __init__(
        self,
        queue: JobQueue,
        *,
        strict: bool = False,
        clock: Callable[[], float] = time.time,
        observer: JobObserver | None = None,
    ) -> None:
        self.queue = queue
        self.strict = strict
        self.clock = clock
        self.observer = observer
        self.dead_letters = DeadLetters(queue)
        self._types: dict[str, _JobType] = {}

    def register(
        self, name: str, spec: JobSpec | None = None, *, validator: Validator | None = None
    ) -> None:
        """Declare a job type: its options and the params check run at enqueue."""
        if not name or not isinstance(name, str):
            raise ValueError("a job name must be a non-empty string")
        self._types[name] = _JobType(spec or JobSpec(), validator)

    def unregister(self, name: str) -> None:
        """Forget job type ``name`` (its module left this node); enqueues of it still queue."""
        self._types.pop(name, None)

    def spec(self, name: str) -> JobSpec:
        """The registered spec of ``name`` (defaults if unregistered)."""
        known = self._types.get(name)
        return known.spec if known else JobSpec()

    @property
    def specs(self) -> dict[str, JobSpec]:
        """Every registered job type's spec."""
        return {name: t.spec for name, t in self._types.items()}

    def _new(
        self,
        name: str,
        params: Mapping[str, Any] | None,
        *,
        delay_s: float | None,
        at: datetime | float | None,
        priority: int,
        idempotency_key: str | None,
        job_id: str | None,
        meta: Mapping[str, str] | None = None,
    ) -> NewJob:
        known = self._types.get(name)
        if known is None and self.strict:
            raise ValidationError(
                f"unknown job {name!r}", errors=[{"field": "name", "message": "not registered"}]
            )
        values = dict(params or {})
        if known is not None and known.validator is not None:
            try:
                values = known.validator(values)
            except ValidationError:
                raise
            except (ValueError, TypeError) as exc:
                raise ValidationError(
                    f"bad params for job {name!r}: {exc}",
                    errors=[{"field": "params", "message": str(exc)}],
                ) from exc
        if delay_s is not None and at is not None:
            raise ValidationError("give delay_s or at, not both")
        run_at = 0.0
        if delay_s is not None:
            run_at = self.clock() + max(0.0, float(delay_s))
        elif at is not None:
            run_at = at.timestamp() if isinstance(at, datetime) else float(at)
        spec = known.spec if known else JobSpec()
        carried = _meta(meta)  # the caller's, then what the observer adds
        notify(self.observer, "enqueued", name, carried)  # accepted: the observer may add meta
        return NewJob(
            name=name,
            params=values,
            id=job_id,
            run_at=run_at,
            priority=priority,
            idempotency_key=idempotency_key,
            max_attempts=spec.max_attempts,
            lease_s=spec.lease_s,
            meta=carried,
        )

    async def enqueue(
        self,
        name: str,
        params: Mapping[str, Any] | None = None,
        *,
        delay_s: float | None = None,
        at: datetime | float | None = None,
        priority: int = 0,
        idempotency_key: str | None = None,
        job_id: str | None = None,
        meta: Mapping[str, str] | None = None,
    ) -> str:
        """Store a job durably and return its id.

        Args:
            name: the job type.
            params: keyword arguments for the handler (JSON-able).
            delay_s: run no earlier than this many seconds from now.
            at: run no earlier than this time (aware ``datetime`` or epoch seconds).
            priority: higher runs first among due jobs.
            idempotency_key: a second enqueue with this key returns the first id.
            job_id: choose the id; enqueueing an existing id is a no-op.
            meta: headers the job carries to its run (``Lease.meta``, the meta of
                the run's context, so what the handler calls and emits carries them).

        Raises:
            ValidationError: params refused by the job's validator or not JSON-able.
                Also meta that is not a mapping of strings to strings.
        """
        job = self._new(
            name,
            params,
            delay_s=delay_s,
            at=at,
            priority=priority,
            idempotency_key=idempotency_key,
            job_id=job_id,
            meta=meta,
        )
        (jid,) = await self.queue.enqueue([job])
        return jid

    async def enqueue_many(
        self, name: str, params_list: Sequence[Mapping[str, Any]], *, priority: int = 0
    ) -> list[str]:
        """Enqueue many jobs of one type in one transaction."""
        jobs = [
            self._new(
                name, p, delay_s=None, at=None, priority=priority, idempotency_key=None, job_id=None
            )
            for p in params_list
        ]
        return await self.queue.enqueue(jobs)

    async def get(self, job_id: str) -> JobRecord:
        """The job's record. Raises ``JobNotFoundError``."""
        return await self.queue.get(job_id)

    async def backlog(self) -> dict[str, int]:
        """Jobs due and waiting for a worker, per job name (metrics, the backlog health check)."""
        return dict(await self.queue.backlog())

    def worker(self, handlers: Mapping[str, JobHandler], **options: Any) -> Worker:
        """A ``Worker`` for ``handlers`` on this queue, with the registered specs."""
        specs = {name: self.spec(name) for name in handlers}
        options.setdefault("clock", self.clock)
        options.setdefault("observer", self.observer)
        return Worker(self.queue, handlers, specs=specs, **options)


def _meta(meta: Mapping[str, str] | None) -> dict[str, str]:
    """A copy of the caller's job meta: text headers only, as every backend carries them.

    Raises:
        ValidationError: not a mapping of strings to strings.
    """
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise ValidationError(
            f"job meta must be a mapping of strings, not {type(meta).__name__}",
            errors=[{"field": "meta", "message": "not a mapping"}],
        )
    bad = [k for k, v in meta.items() if type(k) is not str or type(v) is not str]
    if bad:
        raise ValidationError(
            f"job meta holds text only: {bad[0]!r} is not a string key with a string value",
            errors=[{"field": f"meta.{k}", "message": "not a string"} for k in bad],
        )
    return dict(meta)
