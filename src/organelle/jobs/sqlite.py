"""``SqliteJobQueue``: the embedded default, one table in a WAL database.

Durable by default: ``synchronous=FULL`` and group commit (see
``storage/_sqlite_thread``), so an acknowledged enqueue survives power loss while
concurrent enqueues, claims and acks share one fsync. A claim is one atomic
``UPDATE … RETURNING`` that moves rows to ``running`` with a lease expiry and
bumps ``attempts`` and the fencing ``token``; the same transaction first
reaps expired leases (re-queue, or dead-letter on the last attempt). Several
processes may share the file: SQLite's write lock orders them and an idle
queue notices their commits through ``PRAGMA data_version`` — and claims for
its waiting worker at once (``_sqlite_prefetch``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from organelle.errors import JobNotFoundError
from organelle.jobs._records import (
    append_error,
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
from organelle.jobs._sqlite_prefetch import Prefetch, Wake
from organelle.jobs.base import AttemptError, JobRecord, JobState, Lease, NewJob
from organelle.storage._sqlite_thread import DURABLE, READ, WRITE, SqliteThread, use_wal

__all__ = ["SqliteJobQueue"]


def _nothing(_conn: sqlite3.Connection) -> None:
    return None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
  seq INTEGER PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL,
  params BLOB NOT NULL,
  state TEXT NOT NULL,
  priority INTEGER NOT NULL,
  run_at REAL NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  max_attempts INTEGER NOT NULL,
  lease_s REAL NOT NULL,
  token INTEGER NOT NULL DEFAULT 0,
  lease_until REAL,
  started_at REAL,
  idem TEXT UNIQUE,
  result BLOB,
  errors BLOB,
  meta BLOB,
  created_at REAL NOT NULL,
  updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs(priority DESC, run_at, seq)
  WHERE state IN ('queued', 'failed');
CREATE INDEX IF NOT EXISTS jobs_lease ON jobs(lease_until) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, updated_at);
"""
_COLS = (
    "id, name, params, state, attempts, max_attempts, priority, run_at, created_at,"
    " updated_at, idem, result, errors, meta"
)
_READY = "state IN ('queued', 'failed')"

Sync = Literal["full", "normal", "off"]
CLOSE_FLUSH_S = 5.0


class SqliteJobQueue:
    """A durable job queue in one SQLite file.

    Args:
        path: database file (created with its directory), or ``":memory:"``.
        synchronous: ``"full"`` (default: acknowledged = fsynced), ``"normal"``
            (survives process crashes, not power loss) or ``"off"``.
        retention_s: how long succeeded jobs (and their idempotency keys) stay;
            claims delete older ones every ``min(60, retention_s / 2)`` seconds.
        poll_s: how often an idle queue looks for other processes' commits.
        clock: wall-clock seconds; inject a fake one in tests.
    """

    supports_priority: ClassVar[bool] = True

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: Sync = "full",
        retention_s: float = 86_400.0,
        poll_s: float = 0.00025,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = str(path)
        self.synchronous = synchronous
        self.retention_s = retention_s
        self.poll_s = poll_s
        self.clock = clock
        self._thread: SqliteThread | None = None
        self._wake = Wake()
        self._claim_sql: dict[int, str] = {}
        self._last_sweep = 0.0
        self._closed = False
        self._asked: dict[tuple[str, ...], int] = {}  # names claimed since the last wait
        self._prefetch = Prefetch(self._wake)

    async def open(self) -> Self:
        """Create the schema and start the writer thread; returns ``self``."""
        if self._thread is None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._thread = SqliteThread(
                self._connect,
                "organelle-jobs",
                on_external=self._notify,
                on_change=self._prefetch.fire,
                poll_s=self.poll_s,
                full_sync=self.synchronous == "full",
            )
            await self._thread.started()
        return self

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        # Writes wait for the lock in our own short-sleep loop (see _sqlite_thread);
        # in WAL mode nothing else needs to wait once the write lock is held.
        conn.execute("PRAGMA busy_timeout = 0")
        if self.path != ":memory:":
            use_wal(conn)
        conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
        conn.executescript(_SCHEMA)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
        if "meta" not in columns:  # a database made before jobs carried meta
            conn.execute("ALTER TABLE jobs ADD COLUMN meta BLOB")
        return conn

    def _notify(self) -> None:
        self._wake.set()

    async def _run(self, op: Callable[[sqlite3.Connection], Any], *, mode: int = WRITE) -> Any:
        if self._thread is None:
            await self.open()
        assert self._thread is not None  # noqa: S101 - open() set it
        return await self._thread.submit(op, mode=mode)

    # -- worker path -------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[str]:
        """Insert the jobs in one transaction; duplicates (id or key) return the first id."""
        rows = [(job, encode_params(job.params)) for job in jobs]

        def op(c: sqlite3.Connection) -> list[str]:
            now = self.clock()
            ids = []
            for job, params in rows:
                jid = job.id or new_id()
                cur = c.execute(
                    "INSERT INTO jobs (id, name, params, state, priority, run_at, max_attempts,"
                    " lease_s, idem, meta, created_at, updated_at)"
                    " VALUES (?,?,?,'queued',?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                    (
                        jid,
                        job.name,
                        params,
                        job.priority,
                        job.run_at or now,
                        job.max_attempts,
                        job.lease_s,
                        job.idempotency_key,
                        encode_meta(job.meta),
                        now,
                        now,
                    ),
                )
                if cur.rowcount == 0:
                    row = c.execute(
                        "SELECT id FROM jobs WHERE id = ? OR idem = ?", (jid, job.idempotency_key)
                    ).fetchone()
                    jid = row[0]
                ids.append(jid)
            return ids

        ids: list[str] = await self._run(op, mode=DURABLE)
        self._wake.set()
        return ids

    def _claim_stmt(self, n_seqs: int) -> str:
        sql = self._claim_sql.get(n_seqs)
        if sql is None:
            marks = ",".join("?" * n_seqs)
            sql = (
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, token = token + 1,"  # noqa: S608 - placeholders only
                " lease_until = ? + lease_s, started_at = ?, updated_at = ?"
                f" WHERE seq IN ({marks})"
                " RETURNING id, name, params, attempts, token, max_attempts, lease_s,"
                " created_at, priority, run_at, meta"
            )
            self._claim_sql[n_seqs] = sql
        return sql

    @staticmethod
    def _priorities(c: sqlite3.Connection) -> Iterator[int]:
        """The priorities of waiting jobs, highest first: one index seek each.

        Reading due jobs one priority at a time turns ``run_at <= now`` into a
        range of the ``jobs_ready`` index, so jobs waiting for later (delayed,
        backing off) are never scanned: pickup costs the same with a thousand
        of them as with a million.
        """
        row = c.execute(f"SELECT max(priority) FROM jobs INDEXED BY jobs_ready WHERE {_READY}")  # noqa: S608
        prio = row.fetchone()[0]
        while prio is not None:
            yield prio
            prio = c.execute(
                f"SELECT max(priority) FROM jobs INDEXED BY jobs_ready WHERE {_READY}"  # noqa: S608
                " AND priority < ?",
                (prio,),
            ).fetchone()[0]

    async def claim(self, *, names: Collection[str], limit: int) -> list[Lease]:
        """Reap expired leases, then lease up to ``limit`` due jobs among ``names``."""
        if limit <= 0 or not names:
            return []
        self._wake.clear()  # a notification from now on means "look again"
        names = list(names)
        self._asked[tuple(names)] = limit
        early = self._prefetch.take(names, limit)
        if early:
            return early
        leases: list[Lease] = await self._run(self._claim_op(names, limit))
        return leases

    def _claim_op(
        self, names: list[str], limit: int
    ) -> Callable[[sqlite3.Connection], list[Lease]]:
        marks = ",".join("?" * len(names))
        due_sql = (
            f"SELECT seq FROM jobs INDEXED BY jobs_ready WHERE {_READY} AND priority = ?"  # noqa: S608 - placeholders only
            f" AND run_at <= ? AND name IN ({marks}) ORDER BY run_at, seq LIMIT ?"
        )

        def op(c: sqlite3.Connection) -> list[Lease]:
            now = self.clock()
            self._reap(c, now)
            if now - self._last_sweep > sweep_every_s(self.retention_s):
                self._sweep(c, now)
            seqs: list[int] = []
            for prio in self._priorities(c):
                args = (prio, now, *names, limit - len(seqs))
                seqs += [r[0] for r in c.execute(due_sql, args)]
                if len(seqs) >= limit:
                    break
            if not seqs:
                return []
            rows = c.execute(self._claim_stmt(len(seqs)), (now, now, now, *seqs)).fetchall()
            rows.sort(key=lambda r: (-r[8], r[9]))
            return [
                Lease(
                    job_id=r[0],
                    name=r[1],
                    params=params_of(r[2]),
                    attempt=r[3],
                    token=r[4],
                    max_attempts=r[5],
                    lease_s=r[6],
                    enqueued_at=r[7],
                    claimed_at=now,
                    meta=meta_of(r[10]),
                )
                for r in rows
            ]

        return op

    def _reap(self, c: sqlite3.Connection, now: float) -> None:
        expired = c.execute(
            "SELECT seq, attempts, max_attempts, started_at, errors FROM jobs INDEXED BY jobs_lease"
            " WHERE state = 'running' AND lease_until <= ? LIMIT 100",
            (now,),
        ).fetchall()
        for seq, attempts, max_attempts, started_at, errors in expired:
            errs = append_error(errors, lost_lease_error(attempts, started_at, now))
            state = "dead" if attempts >= max_attempts else "failed"
            c.execute(
                "UPDATE jobs SET state = ?, run_at = ?, lease_until = NULL, errors = ?,"
                " updated_at = ? WHERE seq = ?",
                (state, now, errs, now, seq),
            )
        if expired:
            self._post_wake()

    def _post_wake(self) -> None:
        # Called in the writer thread: reaped jobs are runnable again.
        if self._thread is not None:
            self._thread.post(self._notify)

    def _sweep(self, c: sqlite3.Connection, now: float) -> None:
        self._last_sweep = now
        c.execute(
            "DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs WHERE state = 'succeeded'"
            " AND updated_at < ? LIMIT 5000)",
            (now - self.retention_s,),
        )

    async def heartbeat(self, leases: Sequence[Lease]) -> list[Lease]:
        """Push each lease's expiry to now + its ``lease_s``; return the lost ones."""
        if not leases:
            return []

        def op(c: sqlite3.Connection) -> list[Lease]:
            now = self.clock()
            lost = []
            for lease in leases:
                cur = c.execute(
                    "UPDATE jobs SET lease_until = ? WHERE id = ? AND token = ?"
                    " AND state = 'running'",
                    (now + lease.lease_s, lease.job_id, lease.token),
                )
                if cur.rowcount == 0:
                    lost.append(lease)
            return lost

        lost: list[Lease] = await self._run(op)
        return lost

    async def complete(self, lease: Lease, result: Any = None) -> None:
        """Mark succeeded if ``lease`` is still the live claim; else ``LeaseLostError``."""
        data = encode_result(result)

        def op(c: sqlite3.Connection) -> None:
            cur = c.execute(
                "UPDATE jobs SET state = 'succeeded', result = ?, lease_until = NULL,"
                " updated_at = ? WHERE id = ? AND token = ? AND state = 'running'",
                (data, self.clock(), lease.job_id, lease.token),
            )
            if cur.rowcount == 0:
                raise lease_lost(lease)

        await self._run(op)

    async def fail(self, lease: Lease, error: AttemptError, *, retry_at: float | None) -> JobState:
        """Record the attempt's error; schedule the retry or dead-letter the job."""
        state: JobState = "dead" if retry_at is None else "failed"

        def op(c: sqlite3.Connection) -> None:
            row = c.execute(
                "SELECT errors FROM jobs WHERE id = ? AND token = ? AND state = 'running'",
                (lease.job_id, lease.token),
            ).fetchone()
            if row is None:
                raise lease_lost(lease)
            now = self.clock()
            c.execute(
                "UPDATE jobs SET state = ?, run_at = ?, lease_until = NULL, errors = ?,"
                " updated_at = ? WHERE id = ?",
                (state, retry_at or now, append_error(row[0], error), now, lease.job_id),
            )

        await self._run(op)
        if retry_at is not None:
            self._wake.set()
        return state

    async def release(self, leases: Sequence[Lease]) -> None:
        """Put the jobs back as queued, now, without counting the attempt."""
        if not leases:
            return

        def op(c: sqlite3.Connection) -> None:
            now = self.clock()
            c.executemany(
                "UPDATE jobs SET state = 'queued', attempts = attempts - 1, lease_until = NULL,"
                " updated_at = ? WHERE id = ? AND token = ? AND state = 'running'",
                [(now, lease.job_id, lease.token) for lease in leases],
            )

        await self._run(op)
        self._wake.set()

    async def wait(self, timeout_s: float) -> None:
        """Sleep until a local enqueue/release, another process's commit, or the timeout."""
        asked, self._asked = self._asked, {}
        leftover = self._prefetch.drop()  # prefetched for names no claim asked for since
        if leftover:
            with contextlib.suppress(Exception):  # else they return when their lease ends
                await self.release(leftover)
        if self._wake.is_set():
            self._wake.clear()
            return
        thread = self._thread
        if thread is not None:
            if len(asked) == 1:
                # the worker's claim (it came up empty) runs again as soon as
                # the watching thread sees another process commit (_sqlite_prefetch)
                [(names, limit)] = asked.items()
                self._prefetch.arm(thread, self._claim_op(list(names), limit))
            thread.watch(on=True)
        try:
            await self._wake.wait(max(0.0, timeout_s))
        finally:
            self._prefetch.disarm()
            if thread is not None:
                thread.watch(on=False)
        self._wake.clear()

    async def next_due(self, names: Collection[str]) -> float | None:
        """The earliest ``run_at`` of a waiting job among ``names``, or lease expiry."""
        names = list(names)
        marks = ",".join("?" * len(names))

        first = (
            f"SELECT run_at FROM jobs INDEXED BY jobs_ready WHERE {_READY} AND priority = ?"  # noqa: S608
            f" AND name IN ({marks}) ORDER BY run_at LIMIT 1"
        )

        def op(c: sqlite3.Connection) -> float | None:
            # No names: nothing of theirs waits (and ``IN ()`` has no index plan).
            prios = self._priorities(c) if names else ()
            firsts = [c.execute(first, (prio, *names)).fetchone() for prio in prios]
            ready = min((row[0] for row in firsts if row is not None), default=None)
            lease = c.execute(
                "SELECT min(lease_until) FROM jobs WHERE state = 'running'"
            ).fetchone()[0]
            times = [t for t in (ready, lease) if t is not None]
            return min(times) if times else None

        due: float | None = await self._run(op, mode=READ)
        return due

    async def backlog(self, names: Collection[str] | None = None) -> dict[str, int]:
        """Due jobs waiting for a worker, per name."""
        wanted = None if names is None else list(names)

        def op(c: sqlite3.Connection) -> dict[str, int]:
            sql = f"SELECT name, count(*) FROM jobs WHERE {_READY} AND run_at <= ?"  # noqa: S608
            args: list[Any] = [self.clock()]
            if wanted is not None:
                sql += f" AND name IN ({','.join('?' * len(wanted))})"
                args += wanted
            return dict(c.execute(sql + " GROUP BY name", args).fetchall())

        depths: dict[str, int] = await self._run(op, mode=READ)
        return depths

    # -- admin path --------------------------------------------------------

    async def get(self, job_id: str) -> JobRecord:
        """The job's record; ``JobNotFoundError`` if there is none."""

        def op(c: sqlite3.Connection) -> JobRecord:
            sql = f"SELECT {_COLS} FROM jobs WHERE id = ?"  # noqa: S608 - constant columns
            row = c.execute(sql, (job_id,)).fetchone()
            if row is None:
                raise JobNotFoundError(f"no job {job_id!r}", details={"job_id": job_id})
            return self._record(row)

        record: JobRecord = await self._run(op, mode=READ)
        return record

    def _record(self, row: tuple[Any, ...]) -> JobRecord:
        return make_record(
            id=row[0],
            name=row[1],
            params=row[2],
            state=row[3],
            attempts=row[4],
            max_attempts=row[5],
            priority=row[6],
            run_at=row[7],
            created_at=row[8],
            updated_at=row[9],
            idempotency_key=row[10],
            result=row[11],
            errors=row[12],
            now=self.clock(),
            meta=row[13],
        )

    async def scan(self, state: JobState, *, limit: int = 100, offset: int = 0) -> list[JobRecord]:
        """Jobs in ``state``, in enqueue order."""

        def op(c: sqlite3.Connection) -> list[JobRecord]:
            now = self.clock()
            args: list[Any]
            if state in ("queued", "scheduled"):
                cmp = "<=" if state == "queued" else ">"
                where, args = f"state = 'queued' AND run_at {cmp} ?", [now]
            else:
                where, args = "state = ?", [state]
            rows = c.execute(
                f"SELECT {_COLS} FROM jobs WHERE {where} ORDER BY seq LIMIT ? OFFSET ?",  # noqa: S608 - fixed fragments
                (*args, limit, offset),
            ).fetchall()
            return [self._record(r) for r in rows]

        records: list[JobRecord] = await self._run(op, mode=READ)
        return records

    async def requeue(self, job_id: str) -> None:
        """Run a finished job again from attempt 0 (its errors stay on the record)."""

        def op(c: sqlite3.Connection) -> None:
            now = self.clock()
            cur = c.execute(
                "UPDATE jobs SET state = 'queued', attempts = 0, run_at = ?, updated_at = ?"
                " WHERE id = ? AND state != 'running'",
                (now, now, job_id),
            )
            if cur.rowcount == 0:
                raise JobNotFoundError(f"no finished job {job_id!r}", details={"job_id": job_id})

        await self._run(op, mode=DURABLE)
        self._wake.set()

    async def purge(self, job_ids: Sequence[str]) -> int:
        """Delete the given jobs unless running; return the count deleted."""
        ids = list(job_ids)

        def op(c: sqlite3.Connection) -> int:
            cur = c.executemany(
                "DELETE FROM jobs WHERE id = ? AND state != 'running'", ((i,) for i in ids)
            )
            return int(cur.rowcount)

        n: int = await self._run(op)
        return n

    async def close(self) -> None:
        """Hand back prefetched jobs, finish queued work and stop the writer thread."""
        thread = self._thread
        if thread is not None and self._prefetch.used:
            self._prefetch.disarm()
            with contextlib.suppress(Exception):  # else they return when their lease ends
                # a prefetch under way lands first, then its leases go back
                await asyncio.wait_for(thread.submit(_nothing, mode=READ), CLOSE_FLUSH_S)
                await self.release(self._prefetch.drop())
        self._thread = None
        if thread is not None:
            await thread.stop()
