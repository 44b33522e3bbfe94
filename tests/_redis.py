"""The session ``redis_server`` fixture body, shared by the conftests that need Redis.

Debian's ``redis-server`` (``.ci/run`` installs it when absent): without it the
Redis tests skip with the reason, except under ``CI``, where they fail.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from organelle.testing.servers import RedisServer, shared_redis


def require_redis_server() -> None:
    """Skip the test (fail it under CI) when ``redis-server`` is not on PATH."""
    if shutil.which("redis-server") is None:
        reason = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must have it")
        pytest.skip(reason)


def redis_or_skip() -> Iterator[RedisServer]:
    """Yield the process-wide shared ``RedisServer``; skip (or fail under CI) without the binary."""
    require_redis_server()
    with shared_redis() as server:
        yield server
