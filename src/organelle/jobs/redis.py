"""``RedisJobQueue``: jobs on Redis or Valkey (``redis://host:port/db?prefix=name``).

Each job is a hash; due jobs wait in one sorted set per name (priority, then
FIFO), delayed and retrying ones in another by ``run_at``, running ones in a
lease index by lease end. Every state change — enqueue, claim, heartbeat,
complete, fail, release, requeue, purge — is one Lua script, so it is atomic
and costs one round trip however many jobs it carries; concurrent enqueues
and completions share a script call (group commit, see ``_coalesce``). The
claim script first reaps expired leases (a worker killed holding jobs: they
come back, or go dead on their last attempt) and moves due delayed jobs into
the ready sets. Enqueues and retries publish on ``{prefix}:wake`` so idle
workers wake at once. Fencing tokens grow with each claim, as on every backend.

Durability is the server's: with ``appendonly yes`` and ``appendfsync always``
an acknowledged enqueue is on disk; with ``everysec`` up to a second of
acknowledged writes can be lost on a crash, and with no persistence all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any, ClassVar, Self, cast

from organelle.errors import ConfigError, JobNotFoundError
from organelle.jobs import _redis_lua as lua
from organelle.jobs._coalesce import Coalescer
from organelle.jobs._records import (
    encode_errors,
    encode_meta,
    encode_params,
    encode_result,
    lease_lost,
    make_record,
    meta_of,
    new_id,
    params_of,
    sweep_every_s,
)
from organelle.jobs.base import AttemptError, JobRecord, JobState, Lease, NewJob
from organelle.storage._redis_client import connect, is_transient, split_url
from organelle.storage.retry import RetryPolicy, retrying

__all__ = ["RedisJobQueue"]

SWEEP_BATCH = 5000
SCAN_CHUNK = 500


class RedisJobQueue:
    """A durable job queue under one key prefix of a Redis (or Valkey) server.

    Args:
        url: ``redis://[:password@]host:port/db`` (``rediss://`` for TLS); a
            ``?prefix=`` parameter there overrides ``prefix``.
        prefix: every key of this queue lives under ``{prefix}:``.
        retention_s: how long succeeded jobs (and their idempotency keys) stay;
            claims delete older ones every ``min(60, retention_s / 2)`` seconds.
        clock: wall-clock seconds (keep clocks of all nodes in sync: leases use them).
        retry: budget for a dropped connection or a restarting server; past it
            calls raise ``StorageUnavailableError``.
    """

    supports_priority: ClassVar[bool] = True

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "organelle-jobs",
        retention_s: float = 86_400.0,
        clock: Callable[[], float] = time.time,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.url, self.prefix = split_url(url, default_prefix=prefix)
        self.retry = retry or RetryPolicy()
        self.retention_s = retention_s
        self.clock = clock
        self._t = "{" + self.prefix + "}:"
        self._chan = self._t + "wake"
        self._r: Any = None
        self._sha: dict[str, str] = {}
        self._wake = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        self._last_sweep = 0.0
        self._enqueues: Coalescer[list[list[Any]], list[str]] = Coalescer(self._enqueue_many)
        self._completes: Coalescer[tuple[Lease, bytes | None], None] = Coalescer(
            self._complete_many
        )
        # Every script call goes through here: calls made while others are on
        # the wire share one pipelined round trip (a worker's claim rides with
        # the completions of the jobs that freed its slots).
        self._calls: Coalescer[tuple[str, list[Any]], Any] = Coalescer(self._pipeline)

    async def open(self) -> Self:
        """Connect, load the scripts and subscribe to wake-ups; returns ``self``."""
        if self._r is not None:
            return self
        client = connect(self.url)
        try:
            await retrying(client.ping, policy=self.retry, is_transient=is_transient, what="Redis")
        except BaseException:
            await client.aclose()
            raise
        self._r = client
        await self._load_scripts()
        pubsub = client.pubsub()
        await pubsub.subscribe(self._chan)
        await pubsub.get_message(timeout=5.0)  # the confirmation: wake-ups from here on
        self._listener = asyncio.get_running_loop().create_task(self._listen(pubsub))
        return self

    async def _listen(self, pubsub: Any) -> None:
        """Set the wake event on every publish; after a dropped connection, wake and resubscribe."""
        try:
            while True:
                with contextlib.suppress(Exception):  # workers poll meanwhile; nothing is lost
                    async for msg in pubsub.listen():
                        if msg.get("type") in {"message", b"message"}:
                            self._wake.set()
                # the connection dropped (or the subscription ended): wake, resubscribe
                self._wake.set()
                await asyncio.sleep(0.5)
                with contextlib.suppress(Exception):
                    await pubsub.subscribe(self._chan)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _load_scripts(self) -> None:
        """Load every script (again after a server restart lost them: ``NOSCRIPT``)."""
        pipe = self._r.pipeline(transaction=False)
        for name in lua.__all__:
            pipe.script_load(getattr(lua, name))
        shas = await pipe.execute()
        self._sha = {
            n: s.decode() if isinstance(s, bytes) else s
            for n, s in zip(lua.__all__, shas, strict=True)
        }

    async def _run(self, script: str, args: list[Any]) -> Any:
        if self._r is None:
            raise ConfigError("RedisJobQueue is not open: await queue.open() first")
        return await self._calls.submit((script, args))

    async def _pipeline(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        """Run the calls in one round trip; a dropped connection is retried within ``retry``.

        A retried script may have run already, and every script is safe to run
        twice: enqueue dedupes by id, a lost claim's leases expire and come
        back, a repeated complete or fail reports ``LeaseLostError`` for a job
        whose outcome was in fact recorded.
        """
        return await retrying(
            lambda: self._pipeline_once(calls),
            policy=self.retry,
            is_transient=is_transient,
            what="Redis",
        )

    async def _pipeline_once(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        from redis.exceptions import NoScriptError

        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for _ in range(3):  # bounded: a NOSCRIPT reloads the scripts and reruns only those calls
            pipe = self._r.pipeline(transaction=False)
            for i in todo:
                name, args = calls[i]
                pipe.evalsha(self._sha[name], 0, self._t, *args)
            got = await pipe.execute(raise_on_error=False)
            missing = []
            for i, result in zip(todo, got, strict=True):
                results[i] = result
                if isinstance(result, NoScriptError):
                    missing.append(i)
            if not missing:
                break
            todo = missing
            await self._load_scripts()
        return results

    # -- worker path -------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[str]:
        """Store the jobs and wake workers; duplicates return the first id.

        Concurrent calls share one script call (group commit).
        """
        rows = [
            [
                job.id or new_id(),
                job.name,
                encode_params(job.params),  # bad params fail this call only
                job.priority,
                job.run_at,
                job.max_attempts,
                repr(float(job.lease_s)),
                job.idempotency_key or "",
                encode_meta(job.meta) or "",
            ]
            for job in jobs
        ]
        if not rows:
            return []
        return await self._enqueues.submit(rows)

    async def _enqueue_many(
        self, calls: Sequence[list[list[Any]]]
    ) -> list[list[str] | BaseException]:
        now = self.clock()
        flat: list[Any] = []
        for call in calls:
            for row in call:
                flat += [*row[:4], repr(float(row[4] or now)), *row[5:]]
        ids = [i.decode() for i in await self._run("ENQUEUE", [repr(now), self._chan, *flat])]
        out: list[list[str] | BaseException] = []
        start = 0
        for call in calls:
            out.append(ids[start : start + len(call)])
            start += len(call)
        return out

    async def claim(self, *, names: Collection[str], limit: int) -> list[Lease]:
        """Reap expired leases, then lease up to ``limit`` due jobs among ``names``."""
        if limit <= 0 or not names:
            return []
        self._wake.clear()
        now = self.clock()
        if now - self._last_sweep >= sweep_every_s(self.retention_s):
            self._last_sweep = now
            await self._run("SWEEP", [repr(now - self.retention_s), SWEEP_BATCH])
        flat = await self._run("CLAIM", [repr(now), limit, *names])
        return [
            Lease(
                job_id=flat[i].decode(),
                name=flat[i + 1].decode(),
                params=params_of(flat[i + 2]),
                attempt=int(flat[i + 3]),
                token=int(flat[i + 4]),
                max_attempts=int(flat[i + 5]),
                lease_s=float(flat[i + 6]),
                enqueued_at=float(flat[i + 7]),
                claimed_at=now,
                meta=meta_of(flat[i + 8] or None),
            )
            for i in range(0, len(flat), 9)
        ]

    async def heartbeat(self, leases: Sequence[Lease]) -> list[Lease]:
        """Extend every lease still held; return the lost ones."""
        if not leases:
            return []
        args: list[Any] = [repr(self.clock())]
        for lease in leases:
            args += [lease.job_id, lease.token]
        lost = await self._run("HEARTBEAT", args)
        return [leases[int(i) - 1] for i in lost]

    async def complete(self, lease: Lease, result: Any = None) -> None:
        """Mark succeeded under a live lease; else ``LeaseLostError`` (batched with others)."""
        await self._completes.submit((lease, encode_result(result)))

    async def _complete_many(
        self, items: Sequence[tuple[Lease, bytes | None]]
    ) -> list[BaseException | None]:
        args: list[Any] = [repr(self.clock())]
        for lease, result in items:
            args += [lease.job_id, lease.token, result or ""]
        done = await self._run("COMPLETE", args)
        return [
            None if ok else lease_lost(lease) for (lease, _), ok in zip(items, done, strict=True)
        ]

    async def fail(self, lease: Lease, error: AttemptError, *, retry_at: float | None) -> JobState:
        """Record the error; schedule the retry or dead-letter the job."""
        err = encode_errors([error])[1:-1]  # one object, appended to the stored list
        when = "" if retry_at is None else repr(float(retry_at))
        args = [repr(self.clock()), self._chan, lease.job_id, lease.token, err, when]
        if not await self._run("FAIL", args):
            raise lease_lost(lease)
        return "dead" if retry_at is None else "failed"

    async def release(self, leases: Sequence[Lease]) -> None:
        """Back to the ready set now, attempt not counted."""
        if not leases:
            return
        args: list[Any] = [repr(self.clock()), self._chan]
        for lease in leases:
            args += [lease.job_id, lease.token]
        await self._run("RELEASE", args)

    async def wait(self, timeout_s: float) -> None:
        """Sleep until a wake-up is published or ``timeout_s`` passes."""
        if not self._wake.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, timeout_s))
        self._wake.clear()

    async def next_due(self, names: Collection[str]) -> float | None:
        """Earliest ``run_at`` of a waiting job among ``names``, or lease expiry."""
        value = await self._run("NEXT_DUE", list(names))
        return None if value is None else float(value)

    async def backlog(self, names: Collection[str] | None = None) -> dict[str, int]:
        """Due jobs waiting for a worker, per name."""
        flat = await self._run("BACKLOG", [repr(self.clock()), *(names or [])])
        if names is not None and not names:
            return {}
        return {flat[i].decode(): int(flat[i + 1]) for i in range(0, len(flat), 2)}

    # -- admin path --------------------------------------------------------

    def _record(self, job_id: str, h: dict[bytes, bytes]) -> JobRecord:
        def f(name: str) -> bytes | None:
            return h.get(name.encode()) or None

        return make_record(
            id=job_id,
            name=h[b"name"].decode(),
            params=h[b"params"],
            state=h[b"state"].decode(),
            attempts=int(h[b"att"]),
            max_attempts=int(h[b"max"]),
            priority=int(h[b"pri"]),
            run_at=float(h[b"run_at"]),
            created_at=float(h[b"ca"]),
            updated_at=float(h[b"ua"]),
            idempotency_key=(f("idem") or b"").decode() or None,
            result=f("res"),
            errors=f("err"),
            now=self.clock(),
            meta=f("meta"),
        )

    async def _read(self, op: Callable[[], Any]) -> Any:
        if self._r is None:
            raise ConfigError("RedisJobQueue is not open: await queue.open() first")
        return await retrying(op, policy=self.retry, is_transient=is_transient, what="Redis")

    async def _hashes(self, ids: Sequence[str]) -> list[dict[bytes, bytes]]:
        async def fetch() -> Any:
            pipe = self._r.pipeline(transaction=False)
            for job_id in ids:
                pipe.hgetall(self._t + "j:" + job_id)
            return await pipe.execute()

        return cast("list[dict[bytes, bytes]]", await self._read(fetch))

    async def _ids(self, index: str, start: int, stop: int) -> list[str]:
        key = self._t + index
        return [i.decode() for i in await self._read(lambda: self._r.zrange(key, start, stop))]

    async def get(self, job_id: str) -> JobRecord:
        """The job's record; ``JobNotFoundError`` if none."""
        (h,) = await self._hashes([job_id])
        if not h:
            raise JobNotFoundError(f"no job {job_id!r}", details={"job_id": job_id})
        return self._record(job_id, h)

    async def scan(self, state: JobState, *, limit: int = 100, offset: int = 0) -> list[JobRecord]:
        """Jobs in ``state``, in enqueue order."""
        if state not in ("queued", "scheduled"):
            ids = await self._ids("s:" + state, offset, offset + limit - 1)
            return [
                self._record(i, h) for i, h in zip(ids, await self._hashes(ids), strict=True) if h
            ]
        # queued and scheduled share one index: filter by run_at, page by hand
        out: list[JobRecord] = []
        skip, pos = offset, 0
        while len(out) < limit:
            chunk = await self._ids("s:queued", pos, pos + SCAN_CHUNK - 1)
            if not chunk:
                break
            pos += len(chunk)
            for job_id, h in zip(chunk, await self._hashes(chunk), strict=True):
                if not h:
                    continue
                rec = self._record(job_id, h)
                if rec.state != state:
                    continue
                if skip:
                    skip -= 1
                elif len(out) < limit:
                    out.append(rec)
        return out

    async def requeue(self, job_id: str) -> None:
        """Run a finished job again from attempt 0 (its errors stay on the record)."""
        if not await self._run("REQUEUE", [repr(self.clock()), self._chan, job_id]):
            raise JobNotFoundError(f"no finished job {job_id!r}", details={"job_id": job_id})

    async def purge(self, job_ids: Sequence[str]) -> int:
        """Delete the jobs unless running; return how many went."""
        if not job_ids:
            return 0
        return int(await self._run("PURGE", list(job_ids)))

    async def close(self) -> None:
        """Finish batched writes, stop the wake-up listener, close the pool."""
        await self._enqueues.close()
        await self._completes.close()
        await self._calls.close()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener
        client, self._r = self._r, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()
