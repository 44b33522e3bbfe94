"""A NATS worker process that also records acknowledged completions.

``python _nats_worker.py QUEUE_URL LEDGER SLOTS``, a drop-in for ``_proc.py``
(``Procs.spawn`` runs either): the same ``ready`` and ``start|end <job_id>
<attempt> <pid>`` ledger lines, plus ``acked <job_id> <attempt> <pid>`` once
``complete`` returned, i.e. once the queue had recorded the job as succeeded.
SIGTERM stops it gracefully.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any
from urllib.parse import parse_qs, urlsplit

from organelle.jobs import JobsService, Lease, current_job
from organelle.jobs.nats import NatsJobQueue


class RecordingQueue(NatsJobQueue):
    """``NatsJobQueue`` that appends an ``acked`` ledger line after each ``complete``."""

    ledger_fd = -1

    async def complete(self, lease: Lease, result: Any = None) -> None:
        await super().complete(lease, result)
        line = f"acked {lease.job_id} {lease.attempt} {os.getpid()}\n"
        os.write(self.ledger_fd, line.encode())


async def main(url: str, ledger: str, slots: int) -> None:
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    parts = urlsplit(url)
    stream = parse_qs(parts.query)["stream"][-1]
    queue = await RecordingQueue([f"nats://{parts.netloc}"], stream=stream).open()
    queue.ledger_fd = fd

    def note(what: str) -> None:
        lease = current_job.get()
        assert lease is not None
        os.write(fd, f"{what} {lease.job_id} {lease.attempt} {os.getpid()}\n".encode())

    async def work(ms: int = 0) -> int:
        note("start")
        await asyncio.sleep(ms / 1000)
        note("end")
        return os.getpid()

    worker = JobsService(queue).worker({"work": work}, slots=slots, poll_s=0.2)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await worker.start()
    os.write(fd, f"ready - 0 {os.getpid()}\n".encode())
    await stop.wait()
    await worker.stop(drain_timeout_s=0.2)
    await queue.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
