"""Real servers for tests and benchmarks: NATS (single and 3-node cluster), PostgreSQL, Redis.

Each manager starts its process on loopback, on free ports, in a temporary
directory, waits until it serves, and stops, kills (SIGKILL) or restarts
exactly the processes it started (it keeps their ``Popen`` and process
group), never anything found by name. Use them as sync or async context
managers, or call ``start()`` / ``stop()``::

    async with NatsServer() as nats:
        nc = await nats_py.connect(nats.url)
        nats.kill(); nats.restart()         # same port and store dir

    with PostgresServer() as pg:
        conn = await asyncpg.connect(pg.dsn)

The managers are split by concern into private modules — ``_process``
(process groups, readiness, context managers), ``_nats_server``,
``_postgres_server``, ``_redis_server`` and ``_shared`` (the per-process registry) — and
re-exported here, the public import path.
"""

from __future__ import annotations

from organelle.testing._nats_server import NatsCluster, NatsServer
from organelle.testing._postgres_server import PostgresServer
from organelle.testing._process import free_port
from organelle.testing._redis_server import RedisServer
from organelle.testing._shared import shared_nats, shared_postgres, shared_redis

__all__ = [
    "NatsCluster",
    "NatsServer",
    "PostgresServer",
    "RedisServer",
    "free_port",
    "shared_nats",
    "shared_postgres",
    "shared_redis",
]
