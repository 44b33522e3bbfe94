"""``DeadLetters``: jobs that used up their attempts, kept with every attempt's error."""

from __future__ import annotations

from collections.abc import Sequence

from organelle.jobs.base import JobQueue, JobRecord

__all__ = ["DeadLetters"]


class DeadLetters:
    """List, inspect, retry and purge dead jobs of one queue.

    A dead job stays until purged, so nothing that failed for good vanishes
    silently; ``retry`` puts it back from attempt 0 with its history intact.
    """

    def __init__(self, queue: JobQueue) -> None:
        self._queue = queue

    async def list(self, *, limit: int = 100, offset: int = 0) -> list[JobRecord]:
        """Dead jobs, oldest first."""
        return await self._queue.scan("dead", limit=limit, offset=offset)

    async def get(self, job_id: str) -> JobRecord:
        """One job with params and each attempt's error and traceback."""
        return await self._queue.get(job_id)

    async def retry(self, job_id: str) -> None:
        """Queue the job again now, with a fresh set of attempts."""
        await self._queue.requeue(job_id)

    async def purge(self, job_ids: Sequence[str] | None = None) -> int:
        """Delete the given dead jobs, or every dead job; return how many went."""
        if job_ids is None:
            total = 0
            while batch := await self._queue.scan("dead", limit=500):
                total += await self._queue.purge([r.id for r in batch])
            return total
        return await self._queue.purge(list(job_ids))
