"""A producer process for the crash tests: ``python _producer.py QUEUE_URL ACKED LEASE_S``.

Enqueues ``work`` jobs (``{"ms": 5…30}``) one at a time until killed and
appends each job's id to ACKED only after ``enqueue`` returned (``O_APPEND``,
one ``write`` per id: what is in the file was acknowledged before the
process died). An enqueue that raises (the server is down) is retried with the
same job id after a short pause, so a job stored by the failed attempt is not
doubled; each failure is one line on stderr.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import uuid

from organelle.jobs import JobSpec, JobsService, open_queue

RETRY_PAUSE_S = 0.1


async def main(url: str, acked: str, lease_s: float) -> None:
    fd = os.open(acked, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    jobs = JobsService(await open_queue(url))
    jobs.register("work", JobSpec(lease_s=lease_s, max_attempts=25))
    rng = random.Random()
    while True:
        jid = uuid.uuid4().hex
        params = {"ms": rng.randint(5, 30)}
        while True:
            try:
                await jobs.enqueue("work", params, job_id=jid)
                break
            except Exception as exc:  # any failure: not acknowledged, retry the same id
                print(f"enqueue {jid} failed: {exc!r}", file=sys.stderr, flush=True)
                await asyncio.sleep(RETRY_PAUSE_S)
        os.write(fd, f"{jid}\n".encode())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
