"""``MemoryJobQueue``: the SQLite queue on a private in-memory database.

Same code path, same semantics as ``SqliteJobQueue`` (so the contract suite
holds for it by construction), nothing on disk: for unit tests and demos.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from organelle.jobs.sqlite import SqliteJobQueue

__all__ = ["MemoryJobQueue"]


class MemoryJobQueue(SqliteJobQueue):
    """A job queue that lives and dies with the process.

    Args:
        retention_s: how long succeeded jobs stay.
        clock: wall-clock seconds; inject a fake one in tests.
    """

    def __init__(
        self, *, retention_s: float = 86_400.0, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(
            ":memory:", synchronous="off", retention_s=retention_s, poll_s=3600.0, clock=clock
        )
