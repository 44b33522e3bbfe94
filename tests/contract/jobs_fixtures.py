"""Factories for isolated job queues on each backend (fresh table / stream per call)."""

from __future__ import annotations

import uuid
from pathlib import Path

from organelle.jobs import JobQueue
from organelle.testing.servers import NatsServer, PostgresServer


async def make_sqlite_queue(path: Path) -> JobQueue:
    from organelle.jobs.sqlite import SqliteJobQueue

    return await SqliteJobQueue(path).open()


async def make_postgres_queue(server: PostgresServer) -> JobQueue:
    from organelle.jobs.postgres import PostgresJobQueue

    table = f"jobs_{uuid.uuid4().hex[:10]}"
    return await PostgresJobQueue(server.dsn, table=table).open()


async def make_nats_queue(server: NatsServer, *, ack_wait_s: float = 30.0) -> JobQueue:
    from organelle.jobs.nats import NatsJobQueue

    stream = f"JOBS_{uuid.uuid4().hex[:10].upper()}"
    return await NatsJobQueue([server.url], stream=stream, ack_wait_s=ack_wait_s).open()
