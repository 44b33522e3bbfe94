"""``NatsJobQueue``: jobs on a JetStream work-queue stream, status in a KV bucket.

Each job is one stream message (``Nats-Msg-Id`` = job id, so a re-publish
within the duplicate window is dropped) on subject ``<stream>.<name>``, read by
one durable pull consumer per job type (explicit ack, ``ack_wait`` = the
lease, heartbeats by ``in_progress``). Its record — state, attempts, errors,
result and the fencing token — lives in KV under ``j.<id>`` and every change
is a compare-and-set on the entry's revision. The token is the message's
stream sequence and delivery count, so a redelivery after a lost lease
outranks the stale holder, whose ack is then refused (and never reaches the
stream: a late ``ack`` must not remove someone else's redelivery). Delays and
retries are ``nak(delay=…)``. Priorities are not supported on this backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any, ClassVar, Self

import msgspec

from organelle.jobs._records import encode_params, lease_lost, lost_lease_error, new_id, params_of
from organelle.jobs.base import (
    AttemptError,
    JobNotFoundError,
    JobRecord,
    JobState,
    Lease,
    NewJob,
)

__all__ = ["NatsJobQueue"]

FETCH_S = 0.05
SEQ = 1_000_000  # token = stream sequence * SEQ + delivery count
_enc, _dec = msgspec.json.Encoder(), msgspec.json.Decoder()


class NatsJobQueue:
    """A job queue on NATS JetStream.

    Args:
        servers: NATS URLs.
        stream: stream name (bucket ``<stream>_STATE`` holds the records).
        ack_wait_s: the lease: a job not acked nor heartbeated for this long is redelivered.
        duplicate_window_s: how long the stream drops a re-published job id.
        clock: wall-clock seconds.
    """

    supports_priority: ClassVar[bool] = False

    def __init__(
        self,
        servers: Sequence[str],
        *,
        stream: str = "ORGANELLE_JOBS",
        ack_wait_s: float = 30.0,
        duplicate_window_s: float = 120.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.servers = list(servers)
        self.stream = stream
        self.ack_wait_s = ack_wait_s
        self.duplicate_window_s = duplicate_window_s
        self.clock = clock
        self._nc: Any = None
        self._js: Any = None
        self._kv: Any = None
        self._subs: dict[str, Any] = {}
        self._msgs: dict[tuple[str, int], tuple[Any, int]] = {}  # (id, token) -> (msg, kv rev)
        self._deferred: dict[str, float] = {}
        self._wake = asyncio.Event()

    async def open(self) -> Self:
        """Connect, create the stream and bucket if missing, watch for new jobs."""
        if self._nc is not None:
            return self
        import nats
        from nats.js import api

        self._nc = await nats.connect(servers=self.servers, max_reconnect_attempts=-1)
        self._js = self._nc.jetstream()
        config = api.StreamConfig(
            name=self.stream,
            subjects=[f"{self.stream}.>"],
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=api.StorageType.FILE,
            duplicate_window=self.duplicate_window_s,
        )
        try:
            await self._js.add_stream(config)
        except nats.js.errors.BadRequestError:
            await self._js.update_stream(config)
        self._kv = await self._js.create_key_value(bucket=f"{self.stream}_STATE", history=1)
        await self._nc.subscribe(f"{self.stream}.>", cb=self._on_publish)
        return self

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _on_publish(self, _msg: Any) -> None:
        self._wake.set()

    def _subject(self, name: str) -> str:
        return f"{self.stream}.{_token(name)}"

    def _durable(self, name: str) -> str:
        return f"{self.stream}_{hashlib.sha256(name.encode()).hexdigest()[:16]}"

    async def _sub(self, name: str) -> Any:
        sub = self._subs.get(name)
        if sub is None:
            from nats.js import api

            durable = self._durable(name)
            config = api.ConsumerConfig(
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=self.ack_wait_s,
                max_deliver=-1,  # attempts are counted in the record, which dead-letters
                max_ack_pending=-1,
            )
            sub = await self._js.pull_subscribe(
                self._subject(name), durable=durable, stream=self.stream, config=config
            )
            self._subs[name] = sub
        return sub

    # -- records -----------------------------------------------------------

    async def _load(self, job_id: str) -> tuple[dict[str, Any], int] | None:
        from nats.js.errors import KeyNotFoundError

        try:
            entry = await self._kv.get(f"j.{job_id}")
        except KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        return _dec.decode(entry.value), int(entry.revision)

    async def _save(self, rec: dict[str, Any], rev: int | None) -> int | None:
        """Write ``rec`` if the entry is still at ``rev`` (None: create); None on conflict."""
        from nats.js.errors import KeyWrongLastSequenceError

        rec["updated_at"] = self.clock()
        try:
            if rev is None:
                return int(await self._kv.create(f"j.{rec['id']}", _enc.encode(rec)))
            return int(await self._kv.update(f"j.{rec['id']}", _enc.encode(rec), last=rev))
        except KeyWrongLastSequenceError:
            return None

    # -- worker path -------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[str]:
        """Publish each job (dedup by id) after reserving its idempotency key."""
        return [await self._enqueue_one(job) for job in jobs]

    async def _enqueue_one(self, job: NewJob) -> str:
        from nats.js.errors import KeyWrongLastSequenceError

        params = params_of(encode_params(job.params))  # refuses what JSON cannot hold
        jid = job.id or new_id()
        if job.idempotency_key is not None:
            key = "k." + hashlib.sha256(job.idempotency_key.encode()).hexdigest()
            try:
                await self._kv.create(key, jid.encode())
            except KeyWrongLastSequenceError:
                jid = (await self._kv.get(key)).value.decode()
        if await self._load(jid) is not None:
            return jid
        now = self.clock()
        rec = {
            "id": jid,
            "name": job.name,
            "params": params,
            "state": "queued",
            "attempts": 0,
            "max_attempts": job.max_attempts,
            "priority": job.priority,
            "run_at": job.run_at or now,
            "created_at": now,
            "updated_at": now,
            "idem": job.idempotency_key,
            "result": None,
            "errors": [],
            "token": 0,
        }
        data = _enc.encode(rec)
        await self._js.publish(
            self._subject(job.name), data, headers={"Nats-Msg-Id": jid}, stream=self.stream
        )
        await self._save(rec, None)  # a consumer may have created it from the message first
        return jid

    async def claim(self, *, names: Collection[str], limit: int) -> list[Lease]:
        """Fetch up to ``limit`` messages across ``names`` and take each job's record."""
        if limit <= 0 or not names:
            return []
        self._wake.clear()
        leases: list[Lease] = []
        for name in names:
            for _ in range(20):  # bounded: deferred or stale messages do not count
                want = limit - len(leases)
                if want <= 0:
                    return leases
                msgs = await self._fetch(name, want)
                taken = await asyncio.gather(*(self._take(msg) for msg in msgs))
                leases += [lease for lease in taken if lease is not None]
                if len(msgs) < want:  # drained: do not wait out another fetch
                    break
        return leases

    async def _fetch(self, name: str, n: int) -> list[Any]:
        import nats.errors

        sub = await self._sub(name)
        try:
            return list(await sub.fetch(batch=n, timeout=FETCH_S))
        except (TimeoutError, nats.errors.TimeoutError):
            return []

    async def _take(self, msg: Any) -> Lease | None:
        for _ in range(3):  # a record written meanwhile (enqueue racing us): look again
            try:
                return await self._take_once(msg)
            except _ChangedError:
                continue
        await msg.nak()
        return None

    async def _take_once(self, msg: Any) -> Lease | None:
        meta = msg.metadata
        token = int(meta.sequence.stream) * SEQ + int(meta.num_delivered)
        now = self.clock()
        loaded = await self._load(_dec.decode(msg.data)["id"])
        if loaded is None:  # published, record not written yet: build it from the message
            rec, rev = _dec.decode(msg.data), None
        else:
            rec, rev = loaded
        if rec["state"] in ("succeeded", "dead"):
            await msg.ack()
            return None
        if rec["state"] == "running":
            if rec["token"] // SEQ != token // SEQ:  # a second message for the same job
                await msg.ack()
                return None
            if rec["token"] >= token:  # a stale copy of a delivery someone holds
                return None
            rec["errors"].append(
                _err(lost_lease_error(rec["attempts"], rec.get("started_at"), now))
            )
            if rec["attempts"] >= rec["max_attempts"]:
                rec.update(state="dead", lease_until=None)
                if await self._save(rec, rev) is None:
                    raise _ChangedError
                await msg.ack()
                return None
        if rec["run_at"] > now + 0.001:
            self._deferred[rec["id"]] = rec["run_at"]
            await msg.nak(delay=rec["run_at"] - now)
            return None
        self._deferred.pop(rec["id"], None)
        rec.update(
            state="running",
            attempts=rec["attempts"] + 1,
            token=token,
            started_at=now,
            lease_until=now + self.ack_wait_s,
        )
        new_rev = await self._save(rec, rev)
        if new_rev is None:
            raise _ChangedError
        self._msgs[(rec["id"], token)] = (msg, new_rev)
        return Lease(
            job_id=rec["id"],
            name=rec["name"],
            params=rec["params"],
            attempt=rec["attempts"],
            token=token,
            max_attempts=rec["max_attempts"],
            lease_s=self.ack_wait_s,
            enqueued_at=rec["created_at"],
            claimed_at=now,
        )

    async def _settle(self, lease: Lease, change: Callable[[dict[str, Any]], None]) -> Any:
        """Apply ``change`` to the record under a live lease; return the message."""
        held = self._msgs.get((lease.job_id, lease.token))
        if held is None:
            raise lease_lost(lease)
        for _ in range(5):
            loaded = await self._load(lease.job_id)
            if (
                loaded is None
                or loaded[0]["state"] != "running"
                or loaded[0]["token"] != lease.token
            ):
                self._msgs.pop((lease.job_id, lease.token), None)
                raise lease_lost(lease)
            rec, rev = loaded
            change(rec)
            if await self._save(rec, rev) is not None:
                self._msgs.pop((lease.job_id, lease.token), None)
                return held[0]
        raise lease_lost(lease)

    async def heartbeat(self, leases: Sequence[Lease]) -> list[Lease]:
        """``in_progress`` each held message; report leases no longer live."""
        lost = []
        for lease in leases:
            held = self._msgs.get((lease.job_id, lease.token))
            loaded = await self._load(lease.job_id) if held else None
            if held is None or loaded is None or loaded[0]["token"] != lease.token:
                lost.append(lease)
                continue
            await held[0].in_progress()
        return lost

    async def complete(self, lease: Lease, result: Any = None) -> None:
        """Record success under a live lease, then ack the message."""
        from organelle.codec import to_builtins

        try:
            value = to_builtins(result)
        except (TypeError, ValueError, NotImplementedError):
            value = {"repr": repr(result)}

        def done(rec: dict[str, Any]) -> None:
            rec.update(state="succeeded", result=value, lease_until=None)

        msg = await self._settle(lease, done)
        await msg.ack()

    async def fail(self, lease: Lease, error: AttemptError, *, retry_at: float | None) -> JobState:
        """Record the error; ``nak`` with the backoff delay, or dead-letter and ack."""
        state: JobState = "dead" if retry_at is None else "failed"
        now = self.clock()

        def failed(rec: dict[str, Any]) -> None:
            rec["errors"].append(_err(error))
            rec.update(state=state, run_at=retry_at or now, lease_until=None)

        msg = await self._settle(lease, failed)
        if retry_at is None:
            await msg.ack()
        else:
            await msg.nak(delay=max(0.0, retry_at - now) or None)
        return state

    async def release(self, leases: Sequence[Lease]) -> None:
        """Back to queued without counting the attempt; ``nak`` for immediate redelivery."""

        def back(rec: dict[str, Any]) -> None:
            rec.update(state="queued", attempts=rec["attempts"] - 1, lease_until=None)

        for lease in leases:
            with contextlib.suppress(Exception):
                msg = await self._settle(lease, back)
                await msg.nak()

    async def wait(self, timeout_s: float) -> None:
        """Until a job is published on the stream, or ``timeout_s``."""
        if not self._wake.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, timeout_s))
        self._wake.clear()

    async def next_due(self, names: Collection[str]) -> float | None:  # noqa: ARG002
        """Earliest run time of a delayed job this queue has seen (redeliveries are not known)."""
        now = self.clock()
        for jid in [j for j, t in self._deferred.items() if t < now - 60]:
            del self._deferred[jid]
        return min(self._deferred.values(), default=None)

    # -- admin path --------------------------------------------------------

    def _record(self, rec: dict[str, Any]) -> JobRecord:
        from organelle.jobs._records import make_record

        return make_record(
            id=rec["id"],
            name=rec["name"],
            params=_enc.encode(rec["params"]),
            state=rec["state"],
            attempts=rec["attempts"],
            max_attempts=rec["max_attempts"],
            priority=rec["priority"],
            run_at=rec["run_at"],
            created_at=rec["created_at"],
            updated_at=rec["updated_at"],
            idempotency_key=rec.get("idem"),
            result=None if rec.get("result") is None else _enc.encode(rec["result"]),
            errors=_enc.encode(rec["errors"]),
            now=self.clock(),
        )

    async def get(self, job_id: str) -> JobRecord:
        """The job's record; ``JobNotFoundError`` if none."""
        loaded = await self._load(job_id)
        if loaded is None:
            raise JobNotFoundError(f"no job {job_id!r}", details={"job_id": job_id})
        return self._record(loaded[0])

    async def scan(self, state: JobState, *, limit: int = 100, offset: int = 0) -> list[JobRecord]:
        """Jobs in ``state`` (reads every record: an admin tool, not a hot path)."""
        bucket = f"KV_{self.stream}_STATE"
        prefix = f"$KV.{self.stream}_STATE.j."
        info = await self._js.stream_info(bucket, subjects_filter=f"{prefix}>")
        out = []
        for subject in info.state.subjects or {}:
            loaded = await self._load(subject[len(prefix) :])
            if loaded is not None:
                record = self._record(loaded[0])
                if record.state == state:
                    out.append(record)
        out.sort(key=lambda r: r.created_at)
        return out[offset : offset + limit]

    async def requeue(self, job_id: str) -> None:
        """Run a finished job again: reset attempts and publish a fresh message."""
        loaded = await self._load(job_id)
        if loaded is None or loaded[0]["state"] == "running":
            raise JobNotFoundError(f"no finished job {job_id!r}", details={"job_id": job_id})
        rec, rev = loaded
        rec.update(state="queued", attempts=0, run_at=self.clock(), token=0)
        if await self._save(rec, rev) is None:
            raise JobNotFoundError(f"job {job_id!r} changed meanwhile", details={"job_id": job_id})
        msg_id = f"{job_id}:{rev}"
        await self._js.publish(
            self._subject(rec["name"]), _enc.encode(rec), headers={"Nats-Msg-Id": msg_id}
        )

    async def purge(self, job_ids: Sequence[str]) -> int:
        """Delete records that are not running."""
        n = 0
        for jid in job_ids:
            loaded = await self._load(jid)
            if loaded is not None and loaded[0]["state"] != "running":
                await self._kv.purge(f"j.{jid}")
                n += 1
        return n

    async def close(self) -> None:
        """Drain and close the connection."""
        nc, self._nc = self._nc, None
        self._subs.clear()
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()


class _ChangedError(Exception):
    """The record changed between read and compare-and-set."""


def _token(name: str) -> str:
    """A job name as subject tokens: kept if it is a safe dotted name, else hashed."""
    if re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*", name):
        return name
    return "h" + hashlib.sha256(name.encode()).hexdigest()[:24]


def _err(error: AttemptError) -> dict[str, Any]:
    return {
        "attempt": error.attempt,
        "type": error.type,
        "message": error.message,
        "traceback": error.traceback,
        "started_at": error.started_at,
        "failed_at": error.failed_at,
    }
