"""A saga step beside a plain job, in one kernel on SQLite (queue and Store), same run.

The floor is the job queue a saga runs on: a plain ``@job`` that does
nothing, enqueued and run to the end. A saga step is that job plus the
saga's own work: read the record, call the step (a no-op RPC), write the
record by compare-and-set, enqueue the next step's job. Each round runs
``N`` plain jobs, then ``N / 4`` sagas of four no-op steps (``N`` steps),
with ``K`` enqueues/starts in flight, in interleaved rounds; the figure is
wall time per job or per step, from the first enqueue to the last one done.

Run: ``python bench/sagas.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))
from _common import Row, publish  # noqa: E402

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

from organelle import Kernel, Module, job, rpc  # noqa: E402
from organelle.sagas import Saga, Step  # noqa: E402

K = 32


class Work(Module):
    name = "work"

    def __init__(self) -> None:
        self.done = 0
        self.target = 0
        self.finished = asyncio.Event()

    @job(max_attempts=3)
    async def noop(self) -> None:
        self._count()

    @rpc
    async def step(self) -> None:
        return None

    @rpc
    async def last(self) -> None:
        self._count(4)

    def _count(self, by: int = 1) -> None:
        self.done += by
        if self.done >= self.target:
            self.finished.set()

    four = Saga(
        "four",
        steps=[
            Step("s1", action="work.step"),
            Step("s2", action="work.step"),
            Step("s3", action="work.step"),
            Step("s4", action="work.last"),
        ],
    )


async def _batched(n: int, make: object) -> None:
    assert callable(make)
    for first in range(0, n, K):
        await asyncio.gather(*(make(i) for i in range(first, min(n, first + K))))


async def plain_round(kernel: Kernel, work: Work, n: int) -> float:
    work.done, work.target, work.finished = 0, n, asyncio.Event()
    began = time.perf_counter()
    await _batched(n, lambda _: kernel.enqueue("work.noop"))
    await asyncio.wait_for(work.finished.wait(), 120)
    return (time.perf_counter() - began) / n


async def saga_round(kernel: Kernel, work: Work, n: int) -> float:
    work.done, work.target, work.finished = 0, n, asyncio.Event()
    began = time.perf_counter()
    await _batched(n // 4, lambda _: kernel.sagas.start("work.four"))
    await asyncio.wait_for(work.finished.wait(), 120)
    await kernel.drain_jobs(timeout_s=60)  # the last record writes
    return (time.perf_counter() - began) / n


async def main(quick: bool) -> None:
    n = 200 if quick else 2000
    rounds = 2 if quick else 5
    with tempfile.TemporaryDirectory() as tmp:
        config = {
            "kernel": {
                "jobs": f"sqlite:///{tmp}/jobs.db",
                "storage": f"sqlite:///{tmp}/store.db",
                "job_slots": 10,
            }
        }
        work = Work()
        async with Kernel([work], config) as kernel:
            await plain_round(kernel, work, 50)  # warm-up
            await saga_round(kernel, work, 40)
            plain: list[float] = []
            step: list[float] = []
            for _ in range(rounds):
                plain.append(await plain_round(kernel, work, n))
                step.append(await saga_round(kernel, work, n))
    p, s = statistics.median(plain), statistics.median(step)
    rows = [
        Row(
            case="per job / step (SQLite)",
            subject="plain job",
            value=1 / p,
            unit="jobs/s",
            extra={"us": p * 1e6, "rounds_us": [x * 1e6 for x in plain]},
        ),
        Row(
            case="per job / step (SQLite)",
            subject="saga step",
            value=1 / s,
            unit="steps/s",
            baseline="plain job",
            ratio=p / s,
            extra={
                "us": s * 1e6,
                "overhead_us": (s - p) * 1e6,
                "rounds_us": [x * 1e6 for x in step],
            },
        ),
    ]
    publish(
        "sagas",
        "Sagas: a step beside a plain job",
        rows,
        notes=(
            f"One kernel, SQLite job queue and SQLite Store (WAL, synchronous=FULL for enqueues), "
            f"10 worker slots, {K} enqueues/starts in flight; {n} jobs, then {n} saga steps "
            f"({n // 4} sagas of 4 no-op RPC steps), {rounds} interleaved rounds, medians. "
            f"A step is a job plus a record read, a compare-and-set write and the next job's "
            f"enqueue: {p * 1e6:.0f} µs per plain job, {s * 1e6:.0f} µs per step "
            f"(+{(s - p) * 1e6:.0f} µs). Measured on a shared 2-core machine with other work "
            "running: compare the ratio, not the absolute figures. The plain jobs are "
            f"enqueued {K} at a time (sharing fsyncs); a step's next job is enqueued by the "
            "step that finished, at most 10 at a time, and each step's record write is a "
            "Store commit of its own.\n"
        ),
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    asyncio.run(main(parser.parse_args().quick))
