"""An acknowledged write survives SIGKILL of the writer (and of the PostgreSQL server)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from organelle.storage import open_store
from organelle.testing.servers import PostgresServer

pytestmark = pytest.mark.timeout(60)

# Writes single keys and batches forever, printing each key once its write returned.
WRITER = """
import asyncio, sys
from organelle.storage import open_store

async def main(url, table):
    opts = {"table": table} if table else {}
    store = await open_store(url, **opts)
    i = 0
    while True:
        await store.put(f"k{i:06d}", {"i": i})
        print(f"k{i:06d}", flush=True)
        i += 1
        if i % 10 == 0:
            batch = {f"b{i:06d}.{j}": j for j in range(20)}
            await store.put_many(batch)
            print("\\n".join(batch), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def run_and_kill(url: str, table: str, *, min_acked: int = 400) -> list[str]:
    """Start the writer, let it acknowledge ``min_acked`` keys, then SIGKILL it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, url, table],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")},
    )
    acked: list[str] = []
    deadline = time.monotonic() + 30
    try:
        assert proc.stdout is not None
        while len(acked) < min_acked and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acked.append(line.strip())
    finally:
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
    acked += [line for line in out.splitlines() if line.strip()]  # printed before the kill
    assert proc.returncode == -signal.SIGKILL, err
    assert len(acked) >= min_acked, err
    return acked


async def check(url: str, table: str, acked: list[str]) -> None:
    store = await open_store(url, **({"table": table} if table else {}))
    try:
        found = {}
        for i in range(0, len(acked), 500):
            found.update(await store.get_many(acked[i : i + 500]))
        missing = [k for k in acked if k not in found]
        assert not missing, f"{len(missing)} acknowledged keys lost, e.g. {missing[:5]}"
        for key in acked[:50]:
            entry = found[key]
            if key.startswith("k"):
                assert entry.value == {"i": int(key[1:])}
    finally:
        await store.close()


async def test_sqlite_put_survives_kill_9(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'durable.db'}"
    acked = await asyncio.to_thread(run_and_kill, url, "")
    await check(url, "", acked)


async def test_postgres_put_survives_kill_9_of_writer_and_server() -> None:
    server = await asyncio.to_thread(PostgresServer().start)
    try:
        acked = await asyncio.to_thread(run_and_kill, server.dsn, "durable")
        server.kill()  # crash the database too: only what was committed may come back
        await asyncio.to_thread(server.restart)
        await check(server.dsn, "durable", acked)
    finally:
        await asyncio.to_thread(server.close)
