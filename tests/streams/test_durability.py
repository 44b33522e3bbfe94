"""An acknowledged append survives SIGKILL of the appending process (SQLite, FULL sync)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from organelle.streams.sqlite import SqliteStreamLog

pytestmark = pytest.mark.timeout(60)

# Appends from 8 concurrent coroutines forever, printing each record once append returned.
APPENDER = """
import asyncio, sys
from organelle.streams import StreamSpec
from organelle.streams.sqlite import SqliteStreamLog

async def main(path):
    log = await SqliteStreamLog(path).open()
    await log.ensure("s", StreamSpec(partitions=4))

    async def one(w):
        i = 0
        while True:
            body = f"{w}-{i}".encode()
            part, off = await log.append("s", body, key=str(w))
            print(f"{part} {off} {body.decode()}", flush=True)
            i += 1

    await asyncio.gather(*(one(w) for w in range(8)))

asyncio.run(main(sys.argv[1]))
"""


async def test_acknowledged_appends_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", APPENDER, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")},
    )
    acked: list[tuple[int, int, str]] = []
    deadline = time.monotonic() + 30
    try:
        assert proc.stdout is not None
        while len(acked) < 500 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            fields = line.split()
            acked.append((int(fields[0]), int(fields[1]), fields[2]))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        errors = proc.stderr.read() if proc.stderr else ""
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    assert len(acked) >= 500, errors
    log = await SqliteStreamLog(path).open()
    try:
        stored: dict[tuple[int, int], bytes] = {}
        for p in range(4):
            for rec in await log.read("s", p, 0, 100_000):
                stored[(rec.partition, rec.offset)] = rec.data
        for part, off, body in acked:
            assert stored.get((part, off)) == body.encode()
        for p in range(4):  # offsets stay contiguous: nothing half-written
            offsets = sorted(o for q, o in stored if q == p)
            assert offsets == list(range(1, len(offsets) + 1))
    finally:
        await log.close()
