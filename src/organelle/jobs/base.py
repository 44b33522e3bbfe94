"""The ``JobQueue`` port, its value types, the ``Retry`` signal and the jobs errors.

A job moves through these states::

    queued ──claim──▶ running ──complete──▶ succeeded
      ▲  (scheduled:    │  │
      │   run_at later) │  └──fail, attempts left──▶ failed (retry at run_at) ──▶ claim again
      └──release────────┘  └──fail, no attempts left / lease lost on the last attempt──▶ dead

A claim hands out a ``Lease`` carrying a fencing ``token`` that grows with
every claim of the job; ``complete`` / ``fail`` / ``heartbeat`` present it and
are refused (``LeaseLostError``) once somebody else holds a newer one, so a
worker that stalled past its lease cannot overwrite the live attempt.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, Self, runtime_checkable

__all__ = [
    "AttemptError",
    "Backoff",
    "JobQueue",
    "JobRecord",
    "JobSpec",
    "JobState",
    "Lease",
    "NewJob",
    "Retry",
]

JobState = Literal["queued", "scheduled", "running", "succeeded", "failed", "dead"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "dead"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Exponential retry delay: ``base_s * 2**(attempt-1)``, capped, with relative jitter.

    Jitter spreads retries of jobs that failed together (a dependency outage)
    so they do not come back as one thundering herd.
    """

    base_s: float = 1.0
    max_s: float = 300.0
    jitter: float = 0.2

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before the retry that follows failed attempt number ``attempt`` (1-based)."""
        raw = float(min(self.max_s, self.base_s * (2 ** max(0, attempt - 1))))
        if self.jitter <= 0 or raw <= 0:
            return raw
        spread = raw * self.jitter
        return max(0.0, raw + float((rng or random).uniform(0, spread)))


@dataclass(frozen=True, slots=True, kw_only=True)
class JobSpec:
    """How one job type runs: attempts, backoff, limits and lease.

    ``max_attempts`` and ``lease_s`` are stored with each job at enqueue, so a
    queue can dead-letter a job whose worker keeps dying without any worker's
    help; the rest is applied by the ``Worker``.
    """

    max_attempts: int = 3
    backoff: Backoff = field(default_factory=Backoff)
    timeout_s: float | None = None
    concurrency: int | None = None
    rate: float | None = None
    lease_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.lease_s <= 0:
            raise ValueError("lease_s must be > 0")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be > 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptError:
    """Why one attempt failed; every attempt's error is kept on the record."""

    attempt: int
    type: str
    message: str
    traceback: str = ""
    started_at: float = 0.0
    failed_at: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class NewJob:
    """A job to enqueue, already validated and resolved to absolute times.

    ``id`` given: a second enqueue of the same id is a no-op that returns it
    (what the cron scheduler relies on). ``idempotency_key`` given: a second
    enqueue with the key returns the first job's id. ``meta`` is carried to the
    lease untouched (the kernel puts the enqueuer's ``traceparent`` there).
    """

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    id: str | None = None
    run_at: float = 0.0
    priority: int = 0
    idempotency_key: str | None = None
    max_attempts: int = 3
    lease_s: float = 30.0
    meta: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
    """A claimed job: what to run, and the token that proves the claim is still ours."""

    job_id: str
    name: str
    params: dict[str, Any]
    attempt: int
    token: int
    max_attempts: int
    lease_s: float
    enqueued_at: float
    claimed_at: float
    meta: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobRecord:
    """Everything known about one job."""

    id: str
    name: str
    params: dict[str, Any]
    state: JobState
    attempts: int
    max_attempts: int
    priority: int
    run_at: float
    created_at: float
    updated_at: float
    idempotency_key: str | None = None
    result: Any = None
    errors: tuple[AttemptError, ...] = ()
    meta: dict[str, str] = field(default_factory=dict)


class Retry(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raise from a handler to run the job again after ``delay_s``.

    It still counts as an attempt (so a job cannot retry forever), but it is
    not recorded as an error of the handler.
    """

    def __init__(self, delay_s: float | None = None, reason: str = "") -> None:
        super().__init__(reason or "retry requested")
        self.delay_s = delay_s
        self.reason = reason


@runtime_checkable
class JobQueue(Protocol):
    """Where jobs wait, are claimed under a lease, and end.

    The worker path is ``claim`` → ``heartbeat``* → ``complete`` | ``fail`` |
    ``release``; ``wait`` and ``next_due`` let it sleep without polling hard.
    The admin path (``get``, ``scan``, ``requeue``, ``purge``) backs the jobs
    API and the dead letters. Delivery is at-least-once. Every backend keeps a
    succeeded job ``retention_s`` (24 h by default) and then deletes it; dead
    jobs stay until purged.
    """

    supports_priority: ClassVar[bool]

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[str]:
        """Store jobs durably; return their ids (an existing id for a duplicate)."""
        ...

    async def claim(self, *, names: Collection[str], limit: int) -> list[Lease]:
        """Lease up to ``limit`` runnable jobs among ``names``, highest priority first."""
        ...

    async def heartbeat(self, leases: Sequence[Lease]) -> list[Lease]:
        """Extend each lease by its ``lease_s``; return the leases that were lost."""
        ...

    async def complete(self, lease: Lease, result: Any = None) -> None:
        """Mark the job succeeded. Raises ``LeaseLostError`` if the lease is stale."""
        ...

    async def fail(self, lease: Lease, error: AttemptError, *, retry_at: float | None) -> JobState:
        """Record a failed attempt; retry at ``retry_at`` or, if None, dead-letter it."""
        ...

    async def release(self, leases: Sequence[Lease]) -> None:
        """Give jobs back at once without counting the attempt (graceful stop)."""
        ...

    async def wait(self, timeout_s: float) -> None:
        """Return when new work may be runnable, or after ``timeout_s``."""
        ...

    async def next_due(self, names: Collection[str]) -> float | None:
        """Earliest time a waiting job of ``names`` becomes claimable (or a lease ends)."""
        ...

    async def backlog(self, names: Collection[str] | None = None) -> dict[str, int]:
        """Jobs due and waiting for a worker, per job name (``names``: only those)."""
        ...

    async def get(self, job_id: str) -> JobRecord:
        """Return the record. Raises ``JobNotFoundError``."""
        ...

    async def scan(self, state: JobState, *, limit: int = 100, offset: int = 0) -> list[JobRecord]:
        """Records in ``state``, oldest first."""
        ...

    async def requeue(self, job_id: str) -> None:
        """Run a dead (or finished) job again from attempt 0, keeping its error history."""
        ...

    async def purge(self, job_ids: Sequence[str]) -> int:
        """Delete jobs that are not running; return how many went."""
        ...

    async def close(self) -> None:
        """Release connections and threads; safe to call twice."""
        ...

    async def __aenter__(self) -> Self:
        """Open if needed; ``async with await open_queue(url) as queue:``."""
        ...

    async def __aexit__(self, *exc: object) -> None:
        """Close."""
        ...
