"""Factories for isolated job queues on each backend (fresh table / stream per call)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from organelle.jobs import JobQueue
from organelle.testing.servers import NatsServer, PostgresServer, RedisServer


async def make_sqlite_queue(path: Path, **options: Any) -> JobQueue:
    from organelle.jobs.sqlite import SqliteJobQueue

    return await SqliteJobQueue(path, **options).open()


async def make_postgres_queue(server: PostgresServer, **options: Any) -> JobQueue:
    from organelle.jobs.postgres import PostgresJobQueue

    options.setdefault("table", f"jobs_{uuid.uuid4().hex[:10]}")
    return await PostgresJobQueue(server.dsn, **options).open()


async def make_nats_queue(server: NatsServer, **options: Any) -> JobQueue:
    from organelle.jobs.nats import NatsJobQueue

    options.setdefault("stream", f"JOBS_{uuid.uuid4().hex[:10].upper()}")
    return await NatsJobQueue([server.url], **options).open()


async def make_redis_queue(server: RedisServer, **options: Any) -> JobQueue:
    from organelle.jobs.redis import RedisJobQueue

    options.setdefault("prefix", f"jobs-{uuid.uuid4().hex[:10]}")
    return await RedisJobQueue(server.url, **options).open()
