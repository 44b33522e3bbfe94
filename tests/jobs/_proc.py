"""A worker process for the reliability tests: ``python _proc.py QUEUE_URL LEDGER SLOTS``.

Handlers append ``start|end <job_id> <attempt> <pid>`` lines to the ledger
(``O_APPEND``: the ledger survives the process being killed). SIGTERM stops
the worker gracefully (drain ``DRAIN_S`` env, default 0.2 s).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from organelle.jobs import JobsService, Worker, current_job, open_queue


def note(fd: int, what: str) -> None:
    lease = current_job.get()
    assert lease is not None
    os.write(fd, f"{what} {lease.job_id} {lease.attempt} {os.getpid()}\n".encode())


async def main(url: str, ledger: str, slots: int) -> None:
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    queue = await open_queue(url)

    async def work(ms: int = 0, poison: bool = False) -> int:
        note(fd, "start")
        if poison:
            os._exit(3)  # a job that crashes its worker process, every time
        await asyncio.sleep(ms / 1000)
        note(fd, "end")
        return os.getpid()

    worker: Worker = JobsService(queue).worker({"work": work}, slots=slots, poll_s=0.2)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await worker.start()
    os.write(fd, f"ready - 0 {os.getpid()}\n".encode())
    await stop.wait()
    await worker.stop(drain_timeout_s=float(os.environ.get("DRAIN_S", "0.2")))
    os.write(
        fd,
        f"stats lost={worker.stats.lost} released={worker.stats.released} 0 {os.getpid()}\n".encode(),
    )
    await queue.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
