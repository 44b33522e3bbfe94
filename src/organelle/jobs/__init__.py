"""Durable jobs: queue port and backends, worker, cron scheduler, dead letters, facade.

Delivery is at-least-once: a job runs until an attempt is acked under a live
lease; ids and idempotency keys make the effect exactly-once.
"""

from __future__ import annotations

from organelle.errors import JobNotFoundError, LeaseLostError
from organelle.jobs.api import JobsService, Validator
from organelle.jobs.base import (
    AttemptError,
    Backoff,
    JobQueue,
    JobRecord,
    JobSpec,
    JobState,
    Lease,
    NewJob,
    Retry,
)
from organelle.jobs.dead import DeadLetters
from organelle.jobs.scheduler import Schedule, Scheduler, tick_job_id
from organelle.jobs.url import open_queue
from organelle.jobs.worker import JobHandler, JobObserver, Worker, WorkerStats, current_job

__all__ = [
    "AttemptError",
    "Backoff",
    "DeadLetters",
    "JobHandler",
    "JobNotFoundError",
    "JobObserver",
    "JobQueue",
    "JobRecord",
    "JobSpec",
    "JobState",
    "JobsService",
    "Lease",
    "LeaseLostError",
    "NewJob",
    "Retry",
    "Schedule",
    "Scheduler",
    "Validator",
    "Worker",
    "WorkerStats",
    "current_job",
    "open_queue",
    "tick_job_id",
]
