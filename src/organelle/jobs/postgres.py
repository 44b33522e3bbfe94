"""``PostgresJobQueue``: jobs in one PostgreSQL table, claimed with ``FOR UPDATE SKIP LOCKED``.

Workers on many machines claim concurrently without blocking each other: the
claim locks the rows it takes and skips those locked by a neighbour, and in
the same statement moves them to ``running`` with a lease and a new fencing
token. An enqueue commits with a ``pg_notify`` so idle workers wake at once
(``LISTEN``) instead of polling. Expired leases are reaped by whichever
worker claims next. An acknowledged enqueue is WAL-flushed; claims and acks
skip that wait (a crash of the server can only run their jobs again).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any, ClassVar, Self

from organelle.errors import ConfigError, JobNotFoundError
from organelle.jobs._coalesce import Coalescer
from organelle.jobs._records import (
    encode_errors,
    encode_meta,
    encode_params,
    encode_result,
    lease_lost,
    lost_lease_error,
    make_record,
    meta_of,
    new_id,
    params_of,
    sweep_every_s,
)
from organelle.jobs.base import AttemptError, JobRecord, JobState, Lease, NewJob

__all__ = ["PostgresJobQueue"]

_COLS = (
    "id, name, params, state, attempts, max_attempts, priority, run_at, created_at,"
    " updated_at, idem, result, errors, meta"
)
_READY = "state IN ('queued', 'failed')"
REAP_EVERY_S = 0.1
# The worker path's sessions. synchronous_commit: see ``open``. The planner
# settings keep the claim on the ready index in its own order: with the row
# counts it guesses for a new table, or from statistics taken while the queue
# was empty, it would rather read every ready row and sort them for each claim
# of ten, which costs the whole backlog per claim. No other statement of these
# sessions needs a sort or a bitmap scan.
_WORKER_SETTINGS = {"synchronous_commit": "off", "enable_sort": "off", "enable_bitmapscan": "off"}


async def _keep_session(_conn: Any) -> None:
    """Pool release hook: nothing beyond asyncpg's own rollback (see ``open``)."""


class PostgresJobQueue:
    """A durable job queue in table ``table`` of the database at ``dsn``.

    Args:
        dsn: ``postgresql://user@host:port/db``.
        table: table name (an identifier); one table per queue.
        pool_size: the most connections of each of the queue's two pools (one
            for enqueues and admin calls, one for the worker path).
        retention_s: how long succeeded jobs (and their idempotency keys) stay;
            claims delete older ones every ``min(60, retention_s / 2)`` seconds.
        clock: wall-clock seconds (keep clocks of all nodes in sync: leases use them).
    """

    supports_priority: ClassVar[bool] = True

    def __init__(
        self,
        dsn: str,
        *,
        table: str = "organelle_jobs",
        pool_size: int = 10,
        retention_s: float = 86_400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,50}", table):
            raise ConfigError(f"job table name {table!r} must be a lowercase identifier")
        self.dsn = dsn
        self.table = table
        self.channel = f"{table}_wake"
        self.pool_size = pool_size
        self.retention_s = retention_s
        self.clock = clock
        self._pool: Any = None
        self._wpool: Any = None
        self._listener: Any = None
        self._wake = asyncio.Event()
        self._last_reap = 0.0
        self._last_sweep = 0.0
        self._enqueues: Coalescer[list[tuple[NewJob, bytes]], list[str]] = Coalescer(
            self._insert_many
        )
        self._completes: Coalescer[tuple[Lease, Any], None] = Coalescer(self._complete_many)
        t = table
        self._sql_claim = (
            f"UPDATE {t} SET state = 'running', attempts = attempts + 1, token = token + 1,"  # noqa: S608 - identifier checked
            " lease_until = $1 + lease_s, started_at = $1, updated_at = $1"
            f" WHERE seq IN (SELECT seq FROM {t} WHERE {_READY} AND run_at <= $1"
            " AND name = ANY($2::text[]) ORDER BY priority DESC, run_at, seq LIMIT $3"
            " FOR UPDATE SKIP LOCKED)"
            " RETURNING id, name, params, attempts, token, max_attempts, lease_s, created_at,"
            " priority, run_at, meta"
        )
        # array_agg makes one row whatever was inserted, so pg_notify runs once
        self._sql_insert = (
            f"WITH ins AS (INSERT INTO {t} (id, name, params, state, priority, run_at,"  # noqa: S608
            " max_attempts, lease_s, idem, created_at, updated_at, meta)"
            " SELECT id, name, params, 'queued', pr, ra, ma, ls, idem, $9, $9, meta"
            " FROM unnest($1::text[], $2::text[], $3::bytea[], $4::int[], $5::float8[],"
            " $6::int[], $7::float8[], $8::text[], $10::bytea[])"
            " AS u(id, name, params, pr, ra, ma, ls, idem, meta)"
            " ON CONFLICT DO NOTHING RETURNING id)"
            " SELECT array_agg(id) FROM ins, pg_notify($11, '') AS n"
        )

    async def open(self) -> Self:
        """Create the table if needed, open the pool and the LISTEN connection."""
        if self._pool is not None:
            return self
        import asyncpg

        # Two pools: the worker path's sessions (claims, acks, heartbeats) run
        # with synchronous_commit = off. A claim or an ack is visible to everyone
        # at once but does not wait for its WAL flush, which the next enqueue's
        # (or the WAL writer, within 0.6 s) makes for it. Waiting for that
        # flush, twice per batch of jobs, cost most of a job's time and set its
        # run-to-run spread on a busy disk; losing the last acks to a server
        # crash only runs those jobs again, as a lost lease does. Enqueues and
        # admin writes keep the flush: an acknowledged enqueue is durable.
        # A pool's default release runs a reset query (ROLLBACK if needed, then
        # CLOSE ALL, UNLISTEN *, RESET ALL, advisory unlocks): one more round
        # trip and parse after every claim, ack and enqueue batch. These pools
        # only run this class's statements, which leave no session state
        # (transaction-scoped locks, no SET, LISTEN on its own connection), so
        # release only rolls back an unfinished transaction (asyncpg does that
        # before a custom reset).
        self._pool, self._wpool = await asyncio.gather(
            asyncpg.create_pool(self.dsn, min_size=1, max_size=self.pool_size, reset=_keep_session),
            asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self.pool_size,
                server_settings=_WORKER_SETTINGS,
                reset=_keep_session,
            ),
        )
        t = self.table
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", t)
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {t} ("
                " seq BIGSERIAL PRIMARY KEY, id TEXT NOT NULL UNIQUE, name TEXT NOT NULL,"
                " params BYTEA NOT NULL, state TEXT NOT NULL, priority INT NOT NULL,"
                " run_at DOUBLE PRECISION NOT NULL, attempts INT NOT NULL DEFAULT 0,"
                " max_attempts INT NOT NULL, lease_s DOUBLE PRECISION NOT NULL,"
                " token BIGINT NOT NULL DEFAULT 0, lease_until DOUBLE PRECISION,"
                " started_at DOUBLE PRECISION, idem TEXT UNIQUE, result BYTEA,"
                " errors JSONB NOT NULL DEFAULT '[]'::jsonb,"
                " created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL);"
                f" CREATE INDEX IF NOT EXISTS {t}_ready ON {t} (priority DESC, run_at, seq)"
                f" WHERE {_READY};"
                f" CREATE INDEX IF NOT EXISTS {t}_lease ON {t} (lease_until)"
                " WHERE state = 'running';"
                f" CREATE INDEX IF NOT EXISTS {t}_state ON {t} (state, updated_at);"
                f" ALTER TABLE {t} ADD COLUMN IF NOT EXISTS meta BYTEA;"
            )
        self._listener = await asyncpg.connect(self.dsn)
        await self._listener.add_listener(self.channel, self._on_notify)
        return self

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _on_notify(self, *_: Any) -> None:
        self._wake.set()

    def _p(self) -> Any:
        if self._pool is None:
            raise ConfigError("PostgresJobQueue is not open: await queue.open() first")
        return self._pool

    def _w(self) -> Any:
        if self._wpool is None:
            raise ConfigError("PostgresJobQueue is not open: await queue.open() first")
        return self._wpool

    # -- worker path -------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[str]:
        """Insert the jobs durably and notify listeners; duplicates return the first id.

        Concurrent calls share one transaction (group commit, see ``_coalesce``),
        so many producers cost one round trip per batch, not per job.
        """
        rows = [(job, encode_params(job.params)) for job in jobs]  # bad params fail this call only
        if not rows:
            return []
        return await self._enqueues.submit(rows)

    async def _insert_many(
        self, calls: Sequence[list[tuple[NewJob, bytes]]]
    ) -> list[list[str] | BaseException]:
        flat = [row for call in calls for row in call]
        now = self.clock()
        ids = [job.id or new_id() for job, _ in flat]
        # One statement, one round trip: the insert and its NOTIFY commit together.
        fresh_ids = await self._p().fetchval(
            self._sql_insert,
            ids,
            [job.name for job, _ in flat],
            [params for _, params in flat],
            [job.priority for job, _ in flat],
            [job.run_at or now for job, _ in flat],
            [job.max_attempts for job, _ in flat],
            [job.lease_s for job, _ in flat],
            [job.idempotency_key for job, _ in flat],
            now,
            [encode_meta(job.meta) for job, _ in flat],
            self.channel,
        )
        fresh = set(fresh_ids or ())
        dupes = [i for i, jid in enumerate(ids) if jid not in fresh]
        if dupes:  # an id or idempotency key seen before: the first job's id
            keys = [flat[i][0].idempotency_key for i in dupes]
            found = await self._p().fetch(
                f"SELECT id, idem FROM {self.table} WHERE id = ANY($1::text[])"  # noqa: S608
                " OR idem = ANY($2::text[])",
                [ids[i] for i in dupes],
                [k for k in keys if k is not None],
            )
            by_id = {r["id"] for r in found}
            by_key = {r["idem"]: r["id"] for r in found if r["idem"] is not None}
            for i, key in zip(dupes, keys, strict=True):
                if ids[i] not in by_id and key is not None and key in by_key:
                    ids[i] = by_key[key]
        out: list[list[str] | BaseException] = []
        start = 0
        for call in calls:
            out.append(ids[start : start + len(call)])
            start += len(call)
        return out

    async def claim(self, *, names: Collection[str], limit: int) -> list[Lease]:
        """Reap expired leases (at most every 0.1 s), then lease due jobs among ``names``."""
        if limit <= 0 or not names:
            return []
        self._wake.clear()
        now = self.clock()
        if now - self._last_reap >= REAP_EVERY_S:
            self._last_reap = now
            await self._reap(now)
        if now - self._last_sweep >= sweep_every_s(self.retention_s):
            self._last_sweep = now
            await self._sweep(now)
        rows = await self._w().fetch(self._sql_claim, now, list(names), limit)
        rows.sort(key=lambda r: (-r["priority"], r["run_at"]))
        return [
            Lease(
                job_id=r["id"],
                name=r["name"],
                params=params_of(r["params"]),
                attempt=r["attempts"],
                token=r["token"],
                max_attempts=r["max_attempts"],
                lease_s=r["lease_s"],
                enqueued_at=r["created_at"],
                claimed_at=now,
                meta=meta_of(r["meta"]),
            )
            for r in rows
        ]

    async def _reap(self, now: float) -> None:
        t = self.table
        pool = self._w()
        expired = await pool.fetchval(
            f"SELECT EXISTS (SELECT 1 FROM {t} WHERE state = 'running' AND lease_until <= $1)",  # noqa: S608
            now,
        )
        if not expired:  # the usual case: one indexed read, no transaction
            return
        async with self._w().acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f"SELECT seq, attempts, max_attempts, started_at FROM {t}"  # noqa: S608
                " WHERE state = 'running' AND lease_until <= $1 LIMIT 100 FOR UPDATE SKIP LOCKED",
                now,
            )
            for r in rows:
                error = lost_lease_error(r["attempts"], r["started_at"], now)
                state = "dead" if r["attempts"] >= r["max_attempts"] else "failed"
                await conn.execute(
                    f"UPDATE {t} SET state = $1, run_at = $2, lease_until = NULL,"  # noqa: S608
                    " errors = errors || $3::jsonb, updated_at = $2 WHERE seq = $4",
                    state,
                    now,
                    encode_errors([error]).decode(),
                    r["seq"],
                )

    async def _sweep(self, now: float) -> None:
        t = self.table
        await self._w().execute(
            f"DELETE FROM {t} WHERE seq IN (SELECT seq FROM {t} WHERE state = 'succeeded'"  # noqa: S608
            " AND updated_at < $1 LIMIT 5000 FOR UPDATE SKIP LOCKED)",
            now - self.retention_s,
        )

    async def heartbeat(self, leases: Sequence[Lease]) -> list[Lease]:
        """Extend every lease still held; return the lost ones."""
        if not leases:
            return []
        kept = await self._w().fetch(
            f"UPDATE {self.table} AS j SET lease_until = $1 + j.lease_s"  # noqa: S608
            " FROM unnest($2::text[], $3::bigint[]) AS l(id, token)"
            " WHERE j.id = l.id AND j.token = l.token AND j.state = 'running' RETURNING j.id",
            self.clock(),
            [lease.job_id for lease in leases],
            [lease.token for lease in leases],
        )
        alive = {r["id"] for r in kept}
        return [lease for lease in leases if lease.job_id not in alive]

    async def complete(self, lease: Lease, result: Any = None) -> None:
        """Mark succeeded under a live lease; else ``LeaseLostError``.

        Concurrent completions share one statement (group commit).
        """
        await self._completes.submit((lease, encode_result(result)))

    async def _complete_many(
        self, items: Sequence[tuple[Lease, Any]]
    ) -> list[BaseException | None]:
        done = await self._w().fetch(
            f"UPDATE {self.table} AS j SET state = 'succeeded', result = l.result,"  # noqa: S608
            " lease_until = NULL, updated_at = $1"
            " FROM unnest($2::text[], $3::bigint[], $4::bytea[]) AS l(id, token, result)"
            " WHERE j.id = l.id AND j.token = l.token AND j.state = 'running' RETURNING j.id",
            self.clock(),
            [lease.job_id for lease, _ in items],
            [lease.token for lease, _ in items],
            [result for _, result in items],
        )
        ok = {r["id"] for r in done}
        return [None if lease.job_id in ok else lease_lost(lease) for lease, _ in items]

    async def fail(self, lease: Lease, error: AttemptError, *, retry_at: float | None) -> JobState:
        """Record the error; schedule the retry or dead-letter the job."""
        state: JobState = "dead" if retry_at is None else "failed"
        now = self.clock()
        status = await self._w().execute(
            f"UPDATE {self.table} SET state = $1, run_at = $2, lease_until = NULL,"  # noqa: S608
            " errors = errors || $3::jsonb, updated_at = $4"
            " WHERE id = $5 AND token = $6 AND state = 'running'",
            state,
            retry_at or now,
            encode_errors([error]).decode(),
            now,
            lease.job_id,
            lease.token,
        )
        if status.endswith(" 0"):
            raise lease_lost(lease)
        if retry_at is not None:
            await self._w().execute("SELECT pg_notify($1, '')", self.channel)
        return state

    async def release(self, leases: Sequence[Lease]) -> None:
        """Back to queued now, attempt not counted."""
        if not leases:
            return
        async with self._w().acquire() as conn, conn.transaction():
            await conn.execute(
                f"UPDATE {self.table} AS j SET state = 'queued', attempts = j.attempts - 1,"  # noqa: S608
                " lease_until = NULL, updated_at = $1"
                " FROM unnest($2::text[], $3::bigint[]) AS l(id, token)"
                " WHERE j.id = l.id AND j.token = l.token AND j.state = 'running'",
                self.clock(),
                [lease.job_id for lease in leases],
                [lease.token for lease in leases],
            )
            await conn.execute("SELECT pg_notify($1, '')", self.channel)

    async def wait(self, timeout_s: float) -> None:
        """Sleep until a NOTIFY arrives or ``timeout_s`` passes."""
        if not self._wake.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, timeout_s))
        self._wake.clear()

    async def next_due(self, names: Collection[str]) -> float | None:
        """Earliest ``run_at`` of a waiting job among ``names``, or lease expiry."""
        t = self.table
        value = await self._w().fetchval(
            f"SELECT least((SELECT min(run_at) FROM {t} WHERE {_READY} AND name = ANY($1::text[])),"  # noqa: S608
            f" (SELECT min(lease_until) FROM {t} WHERE state = 'running'))",
            list(names),
        )
        return None if value is None else float(value)

    async def backlog(self, names: Collection[str] | None = None) -> dict[str, int]:
        """Due jobs waiting for a worker, per name."""
        t = self.table
        rows = await self._p().fetch(
            f"SELECT name, count(*) AS n FROM {t} WHERE {_READY} AND run_at <= $1"  # noqa: S608
            " AND ($2::text[] IS NULL OR name = ANY($2::text[])) GROUP BY name",
            self.clock(),
            None if names is None else list(names),
        )
        return {r["name"]: r["n"] for r in rows}

    # -- admin path --------------------------------------------------------

    def _record(self, r: Any) -> JobRecord:
        return make_record(
            id=r["id"],
            name=r["name"],
            params=r["params"],
            state=r["state"],
            attempts=r["attempts"],
            max_attempts=r["max_attempts"],
            priority=r["priority"],
            run_at=r["run_at"],
            created_at=r["created_at"],
            updated_at=r["updated_at"],
            idempotency_key=r["idem"],
            result=r["result"],
            errors=r["errors"],
            now=self.clock(),
            meta=r["meta"],
        )

    async def get(self, job_id: str) -> JobRecord:
        """The job's record; ``JobNotFoundError`` if none."""
        row = await self._p().fetchrow(
            f"SELECT {_COLS} FROM {self.table} WHERE id = $1",  # noqa: S608
            job_id,
        )
        if row is None:
            raise JobNotFoundError(f"no job {job_id!r}", details={"job_id": job_id})
        return self._record(row)

    async def scan(self, state: JobState, *, limit: int = 100, offset: int = 0) -> list[JobRecord]:
        """Jobs in ``state``, in enqueue order."""
        arg: Any
        if state in ("queued", "scheduled"):
            cmp = "<=" if state == "queued" else ">"
            where, arg = f"state = 'queued' AND run_at {cmp} $1", self.clock()
        else:
            where, arg = "state = $1", state
        rows = await self._p().fetch(
            f"SELECT {_COLS} FROM {self.table} WHERE {where} ORDER BY seq LIMIT $2 OFFSET $3",  # noqa: S608
            arg,
            limit,
            offset,
        )
        return [self._record(r) for r in rows]

    async def requeue(self, job_id: str) -> None:
        """Run a finished job again from attempt 0."""
        now = self.clock()
        status = await self._p().execute(
            f"UPDATE {self.table} SET state = 'queued', attempts = 0, run_at = $1,"  # noqa: S608
            " updated_at = $1 WHERE id = $2 AND state != 'running'",
            now,
            job_id,
        )
        if status.endswith(" 0"):
            raise JobNotFoundError(f"no finished job {job_id!r}", details={"job_id": job_id})
        await self._p().execute("SELECT pg_notify($1, '')", self.channel)

    async def purge(self, job_ids: Sequence[str]) -> int:
        """Delete the jobs unless running; return how many went."""
        status = await self._p().execute(
            f"DELETE FROM {self.table} WHERE id = ANY($1::text[]) AND state != 'running'",  # noqa: S608
            list(job_ids),
        )
        return int(status.split()[-1])

    async def close(self) -> None:
        """Finish batched writes, close the LISTEN connection and the pool."""
        await self._enqueues.close()
        await self._completes.close()
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(Exception):
                await listener.close(timeout=5)
        for pool in (self._wpool, self._pool):
            if pool is not None:
                await pool.close()
        self._wpool = self._pool = None
