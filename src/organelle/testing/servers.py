"""Real servers for tests and benchmarks: NATS (single and 3-node cluster) and PostgreSQL.

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
``_postgres_server`` and ``_shared`` (the per-process registry) — and
re-exported here, the public import path.
"""

# Names that used to be defined here stay importable from here: `x as x` marks
# each as an explicit re-export (for mypy's no_implicit_reexport and ruff F401).
# ruff: noqa: PLC0414

from __future__ import annotations

from organelle.testing._nats_server import NatsCluster, NatsServer
from organelle.testing._postgres_server import PostgresServer
from organelle.testing._postgres_server import _pg_binaries as _pg_binaries
from organelle.testing._postgres_server import _pg_stamp as _pg_stamp
from organelle.testing._process import HOST as HOST
from organelle.testing._process import _ContextManaged as _ContextManaged
from organelle.testing._process import _group_alive as _group_alive
from organelle.testing._process import _Managed as _Managed
from organelle.testing._process import _wait as _wait
from organelle.testing._process import free_port
from organelle.testing._shared import _SHARED as _SHARED
from organelle.testing._shared import _shared as _shared
from organelle.testing._shared import shared_nats, shared_postgres

__all__ = [
    "NatsCluster",
    "NatsServer",
    "PostgresServer",
    "free_port",
    "shared_nats",
    "shared_postgres",
]
