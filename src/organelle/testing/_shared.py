"""One server of each kind per process, shared by every fixture that enters it.

Kept apart from the servers themselves: a small reference-counted registry
so session fixtures in several ``conftest.py`` files start a server once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from organelle.testing._nats_server import NatsServer
from organelle.testing._postgres_server import PostgresServer
from organelle.testing._redis_server import RedisServer

_SHARED: dict[str, tuple[Any, int]] = {}


@contextlib.contextmanager
def _shared(kind: str, factory: Any) -> Iterator[Any]:
    server, users = _SHARED.get(kind, (None, 0))
    if server is None:
        server = factory().start()
    _SHARED[kind] = (server, users + 1)
    try:
        yield server
    finally:
        server, users = _SHARED[kind]
        if users <= 1:
            del _SHARED[kind]
            server.close()
        else:
            _SHARED[kind] = (server, users - 1)


def shared_nats() -> contextlib.AbstractContextManager[NatsServer]:
    """One ``NatsServer`` per process, shared by every fixture that enters this.

    Session fixtures in several ``conftest.py`` files can each wrap it and the
    server still starts once; it stops when the last user exits. Tests must
    isolate themselves (a fresh bucket, stream or subject prefix each).
    """
    return _shared("nats", NatsServer)


def shared_postgres() -> contextlib.AbstractContextManager[PostgresServer]:
    """One ``PostgresServer`` per process, shared like ``shared_nats``."""
    return _shared("postgres", PostgresServer)


def shared_redis() -> contextlib.AbstractContextManager[RedisServer]:
    """One ``RedisServer`` per process, shared like ``shared_nats`` (isolate by key prefix)."""
    return _shared("redis", RedisServer)
