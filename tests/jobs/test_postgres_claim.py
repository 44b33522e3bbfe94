"""PostgreSQL queue: a claim reads the ready index in order, whatever the planner guesses.

On a table without statistics (every new queue, or one analysed while empty)
the planner guessed one ready row and chose to read and sort the whole
backlog for each claim of ten: the claim's cost grew with the backlog. These
tests pin the plan and the pool's cheap release that keeps the worker path's
session settings.
"""

from __future__ import annotations

import time
import uuid

from organelle.jobs.base import NewJob
from organelle.jobs.postgres import PostgresJobQueue
from organelle.testing.servers import PostgresServer


def _table() -> str:
    return f"claim_{uuid.uuid4().hex[:12]}"


async def test_claim_walks_the_ready_index_without_a_sort(postgres_server: PostgresServer) -> None:
    queue = await PostgresJobQueue(postgres_server.dsn, table=_table()).open()
    try:
        await queue.enqueue([NewJob(name="noop", params={"i": i}) for i in range(3000)])
        async with queue._w().acquire() as conn:  # the worker path's session
            plan = "\n".join(
                r[0]
                for r in await conn.fetch(
                    "EXPLAIN (ANALYZE, COSTS OFF) " + queue._sql_claim,
                    time.time(),
                    ["noop"],
                    10,
                )
            )
        assert f"Index Scan using {queue.table}_ready" in plan, plan
        assert "Sort" not in plan, plan
        assert "Bitmap" not in plan, plan
        # EXPLAIN ANALYZE ran that claim (jobs 0-9); the next takes the next oldest
        leases = await queue.claim(names=["noop"], limit=10)
        assert sorted(lease.params["i"] for lease in leases) == list(range(10, 20))
    finally:
        await queue.close()


async def test_worker_sessions_keep_their_settings_across_releases(
    postgres_server: PostgresServer,
) -> None:
    queue = await PostgresJobQueue(postgres_server.dsn, table=_table()).open()
    try:
        for _ in range(3):  # each call acquires and releases a pooled connection
            await queue.claim(names=["noop"], limit=10)
            settings = await queue._w().fetchrow(
                "SELECT current_setting('synchronous_commit') AS sc,"
                " current_setting('enable_sort') AS sort"
            )
            assert (settings["sc"], settings["sort"]) == ("off", "off")
        # the enqueue path keeps the durable default and the planner's free choice
        settings = await queue._p().fetchrow(
            "SELECT current_setting('synchronous_commit') AS sc,"
            " current_setting('enable_sort') AS sort"
        )
        assert (settings["sc"], settings["sort"]) == ("on", "on")
    finally:
        await queue.close()


async def test_release_rolls_back_an_unfinished_transaction(
    postgres_server: PostgresServer,
) -> None:
    queue = await PostgresJobQueue(postgres_server.dsn, table=_table()).open()
    try:
        conn = await queue._w().acquire()
        await conn.execute("BEGIN")
        await conn.execute(f"LOCK TABLE {queue.table} IN ACCESS EXCLUSIVE MODE")
        await queue._w().release(conn)
        # a lock left behind would block this enqueue and the claim
        ids = await queue.enqueue([NewJob(name="noop", params={})])
        assert [lease.job_id for lease in await queue.claim(names=["noop"], limit=1)] == ids
    finally:
        await queue.close()
