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


# Commits a key, then writes ~3 MB in one transaction (past SQLite's page
# cache, so part of it reaches the WAL file) and waits inside it to be killed.
IN_TX = """
import asyncio, sys
from organelle.storage import open_store

async def main(url, table):
    store = await open_store(url, **({"table": table} if table else {}))
    await store.put("before", "committed")
    async with store.transaction() as tx:
        await tx.put_many({f"tx.{i:05d}": "x" * 1000 for i in range(3000)})
        await tx.put("before", "uncommitted")
        await tx.incr("tx.counter", 7)
        print("in-tx", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def kill_inside_a_transaction(url: str, table: str) -> None:
    """Run ``IN_TX`` until it says it is inside the transaction, then SIGKILL it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", IN_TX, url, table],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # bounded by the test's timeout
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=10)
    assert line.strip() == "in-tx", err
    assert proc.returncode == -signal.SIGKILL, err


async def check_nothing_of_it(url: str, table: str) -> None:
    store = await open_store(url, **({"table": table} if table else {}))
    try:
        assert (await store.get("before")).value == "committed"  # type: ignore[union-attr]
        assert (await store.scan("tx.", limit=10)).items == []
        # no lock outlived the process: the same keys take a write at once
        async with asyncio.timeout(10), store.transaction() as tx:
            await tx.put("tx.00001", "after")
            await tx.put("before", "after")
        assert (await store.get("tx.00001")).value == "after"  # type: ignore[union-attr]
    finally:
        await store.close()


async def test_sqlite_kill_9_inside_a_transaction_leaves_nothing_of_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tx.db'}"
    await asyncio.to_thread(kill_inside_a_transaction, url, "")
    await check_nothing_of_it(url, "")


async def test_postgres_kill_9_inside_a_transaction_leaves_nothing_of_it(
    postgres_server: PostgresServer,
) -> None:
    table = f"tx_{os.getpid()}_{time.monotonic_ns() % 10**9}"
    await asyncio.to_thread(kill_inside_a_transaction, postgres_server.dsn, table)
    await check_nothing_of_it(postgres_server.dsn, table)
