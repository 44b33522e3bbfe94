"""Across processes: CAS increments lose no update; PostgreSQL watch with notify on."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from organelle.storage import open_store
from organelle.testing.servers import NatsServer, PostgresServer

pytestmark = pytest.mark.timeout(60)

# Each process: 8 tasks, each tries 25 CAS increments; prints how many succeeded.
INCREMENTER = """
import asyncio, sys
from organelle.storage import open_store
from organelle.errors import ConflictError

async def main(url, table):
    store = await open_store(url, **({"table": table} if table else {}))
    wins = 0
    async def worker():
        nonlocal wins
        for _ in range(25):
            entry = await store.get("counter")
            try:
                await store.compare_and_set("counter", entry.value + 1, revision=entry.revision)
            except ConflictError:
                continue
            wins += 1
    await asyncio.gather(*(worker() for _ in range(8)))
    print(wins, flush=True)
    await store.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def run_two(url: str, table: str) -> list[int]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", INCREMENTER, url, table],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    wins = []
    for proc in procs:
        out, err = proc.communicate(timeout=45)
        assert proc.returncode == 0, err
        wins.append(int(out.strip()))
    return wins


async def two_process_cas(url: str, table: str = "") -> None:
    store = await open_store(url, **({"table": table} if table else {}))
    try:
        await store.put("counter", 0)
        wins = await asyncio.to_thread(run_two, url, table)
        assert all(w > 0 for w in wins), wins
        entry = await store.get("counter")
        assert entry is not None
        assert entry.value == sum(wins)
    finally:
        await store.close()


async def test_postgres_cas_across_processes(postgres_server: PostgresServer) -> None:
    await two_process_cas(postgres_server.dsn, f"cas_{uuid.uuid4().hex[:8]}")


async def test_nats_kv_cas_across_processes(nats_server: NatsServer) -> None:
    host_port = nats_server.url.removeprefix("nats://")
    await two_process_cas(f"nats-kv://{host_port}/cas{uuid.uuid4().hex[:8]}")


async def test_sqlite_cas_across_processes(tmp_path: Path) -> None:
    await two_process_cas(f"sqlite:///{tmp_path / 'cas.db'}")


WRITER = """
import asyncio, sys
from organelle.storage import open_store

async def main(url, table):
    store = await open_store(url, table=table)
    await store.put("x.1", {"from": "child"})
    await store.delete("x.1")
    await store.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_postgres_watch_across_processes_with_notify(
    postgres_server: PostgresServer,
) -> None:
    table = f"wx_{uuid.uuid4().hex[:8]}"
    store = await open_store(f"{postgres_server.dsn}?notify=true", table=table)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    try:
        async with store.watch("x.") as changes:
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-c", WRITER, f"{postgres_server.dsn}?notify=true", table, env=env
            )
            assert await asyncio.wait_for(child.wait(), 45) == 0
            got = [await asyncio.wait_for(anext(changes), 10) for _ in range(2)]
        assert [(c.key, c.value, c.op) for c in got] == [
            ("x.1", {"from": "child"}, "put"),
            ("x.1", None, "delete"),
        ]
    finally:
        await store.close()
