"""``NatsJobQueue``: jobs on a JetStream work-queue stream, status in a KV bucket.

Each job is one stream message (``Nats-Msg-Id`` = job id, so a re-publish
within the duplicate window is dropped). Its record — state, attempts,
errors, result and the fencing token — lives in KV under ``j.<id>`` and every
change is a compare-and-set on the entry's revision. The token is the
message's stream sequence and delivery count, so a redelivery after a lost
lease outranks the stale holder, whose ack is then refused (and never reaches
the stream: a late ``ack`` must not remove someone else's redelivery). Delays
and retries are ``nak(delay=…)``.

**Priorities are bands.** A job goes to subject ``<stream>.<name>`` (priority
0) or ``<stream>.~<band>.<name>`` for the bands ``p2`` (priority ≥ 10), ``p1``
(1…9), ``n1`` (-1…-9) and ``n2`` (≤ -10); ``~`` never occurs in a name's
subject tokens, so bands and names cannot collide. Each (name, band) has its
own durable pull consumer. A claim reads the stream's per-subject counts (one
request), then pulls with ``no_wait`` from the non-empty consumers, highest
band first: a lower band is served only when the higher ones have nothing
deliverable. Within a band jobs run in stream order.

**Leases follow the job type.** A consumer's ``ack_wait`` is the ``lease_s``
of its job type, set (created or updated) by the enqueuer, so a dead worker's
job comes back after its own lease; the lease handed to the worker is that
``ack_wait`` (or the job's own ``lease_s`` if shorter), which the worker
heartbeats (``in_progress``) every third of.

**Retention.** A succeeded record is rewritten with a per-message TTL
(``Nats-TTL``, the bucket allows message TTLs) of ``retention_s``, and so is
its idempotency key: the server deletes both, no sweeper runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
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

PULL_TIMEOUT_S = 2.0  # a no_wait pull answers at once; this only bounds a lost reply
BANDS = (2, 1, 0, -1, -2)  # served in this order
_BAND_TOKEN = {2: "~p2", 1: "~p1", -1: "~n1", -2: "~n2"}
_TOKEN_BAND = {v: k for k, v in _BAND_TOKEN.items()}
HIGH_PRIORITY = 10
SEQ = 1_000_000  # token = stream sequence * SEQ + delivery count
_enc, _dec = msgspec.json.Encoder(), msgspec.json.Decoder()


class NatsJobQueue:
    """A job queue on NATS JetStream.

    Args:
        servers: NATS URLs.
        stream: stream name (bucket ``<stream>_STATE`` holds the records).
        ack_wait_s: the lease of a job type whose consumer this queue has to create
            without having seen one of its jobs (normally each consumer's
            ``ack_wait`` is its job type's ``lease_s``).
        duplicate_window_s: how long the stream drops a re-published job id.
        retention_s: how long succeeded records and their idempotency keys stay.
        clock: wall-clock seconds.
    """

    supports_priority: ClassVar[bool] = True

    def __init__(
        self,
        servers: Sequence[str],
        *,
        stream: str = "ORGANELLE_JOBS",
        ack_wait_s: float = 30.0,
        duplicate_window_s: float = 120.0,
        retention_s: float = 86_400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.servers = list(servers)
        self.stream = stream
        self.ack_wait_s = ack_wait_s
        self.duplicate_window_s = duplicate_window_s
        self.retention_s = retention_s
        self.clock = clock
        self.bucket = f"{stream}_STATE"
        self._nc: Any = None
        self._js: Any = None
        self._kv: Any = None
        self._pullers: dict[tuple[str, int], _Puller] = {}
        self._ack_wait: dict[tuple[str, int], float] = {}
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
        self._kv = await self._js.create_key_value(bucket=self.bucket, history=1)
        kv_info = await self._js.stream_info(f"KV_{self.bucket}")
        if not kv_info.config.allow_msg_ttl:  # succeeded records expire by message TTL
            kv_info.config.allow_msg_ttl = True
            await self._js.update_stream(kv_info.config)
        await self._nc.subscribe(f"{self.stream}.>", cb=self._on_publish)
        return self

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _on_publish(self, _msg: Any) -> None:
        self._wake.set()

    def _subject(self, name: str, band: int = 0) -> str:
        if band == 0:
            return f"{self.stream}.{_token(name)}"
        return f"{self.stream}.{_BAND_TOKEN[band]}.{_token(name)}"

    def _durable(self, name: str, band: int = 0) -> str:
        key = name if band == 0 else f"{band}:{name}"
        return f"{self.stream}_{hashlib.sha256(key.encode()).hexdigest()[:16]}"

    async def _consumer(self, name: str, band: int, lease_s: float | None) -> float:
        """Make sure the consumer of (name, band) exists, with ``ack_wait = lease_s`` if given.

        Returns its ``ack_wait``. Creating an existing durable with another
        ``ack_wait`` updates it (an editable field).
        """
        from nats.js import api
        from nats.js.errors import NotFoundError

        known = self._ack_wait.get((name, band))
        if known is not None and (lease_s is None or known == lease_s):
            return known
        durable = self._durable(name, band)
        if lease_s is None:
            with contextlib.suppress(NotFoundError):
                info = await self._js.consumer_info(self.stream, durable)
                self._ack_wait[name, band] = float(info.config.ack_wait)
                return self._ack_wait[name, band]
        wait_s = lease_s or self.ack_wait_s
        config = api.ConsumerConfig(
            durable_name=durable,
            filter_subject=self._subject(name, band),
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=wait_s,
            max_deliver=-1,  # attempts are counted in the record, which dead-letters
            max_ack_pending=-1,
        )
        info = await self._js.add_consumer(self.stream, config)
        self._ack_wait[name, band] = float(info.config.ack_wait)
        return self._ack_wait[name, band]

    async def _puller(self, name: str, band: int) -> _Puller:
        puller = self._pullers.get((name, band))
        if puller is None:
            await self._consumer(name, band, None)
            durable = self._durable(name, band)
            puller = _Puller(self._nc, f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{durable}")
            await puller.open()
            self._pullers[name, band] = puller
        return puller

    async def _present(self) -> dict[str, int]:
        """Messages in the stream per subject (in flight and delayed ones included)."""
        info = await self._js.stream_info(self.stream, subjects_filter=f"{self.stream}.>")
        return dict(info.state.subjects or {})

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

    async def _save(
        self, rec: dict[str, Any], rev: int | None, *, ttl_s: float | None = None
    ) -> int | None:
        """Write ``rec`` if the entry is still at ``rev`` (None: create); None on conflict.

        ``ttl_s``: the server deletes the entry after that long (retention).
        """
        from nats.js.errors import APIError, KeyWrongLastSequenceError

        rec["updated_at"] = self.clock()
        if ttl_s is not None and rev is not None:
            headers = {"Nats-Expected-Last-Subject-Sequence": str(rev), "Nats-TTL": _ttl(ttl_s)}
            try:
                ack = await self._js.publish(
                    f"$KV.{self.bucket}.j.{rec['id']}", _enc.encode(rec), headers=headers
                )
            except APIError as exc:
                if exc.err_code == 10071:  # noqa: PLR2004 - JSStreamWrongLastSequenceErr
                    return None
                raise
            return int(ack.seq)
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
                entry = await self._kv.get(key)
                first = str(entry.value.decode())
                if await self._load(first) is not None:
                    return first
                # The key outlived its record (retention removes both, not at
                # the same instant): it is stale, so this enqueue is a new job.
                # A racing enqueue that took the key first wins.
                try:
                    await self._kv.update(key, jid.encode(), last=entry.revision)
                except KeyWrongLastSequenceError:
                    return str((await self._kv.get(key)).value.decode())
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
            "lease_s": job.lease_s,
            "meta": dict(job.meta),
        }
        data = _enc.encode(rec)
        band = _band(job.priority)
        await self._consumer(job.name, band, job.lease_s)
        await self._js.publish(
            self._subject(job.name, band), data, headers={"Nats-Msg-Id": jid}, stream=self.stream
        )
        await self._save(rec, None)  # a consumer may have created it from the message first
        return jid

    async def claim(self, *, names: Collection[str], limit: int) -> list[Lease]:
        """Pull up to ``limit`` messages across ``names``, highest band first; take each record."""
        if limit <= 0 or not names:
            return []
        self._wake.clear()
        present = await self._present()
        leases: list[Lease] = []
        for band in BANDS:
            for name in names:
                if not present.get(self._subject(name, band)):
                    continue
                puller = await self._puller(name, band)
                for _ in range(20):  # bounded: deferred or stale messages do not count
                    want = limit - len(leases)
                    if want <= 0:
                        return leases
                    msgs = await puller.pull(want)
                    wait_s = self._ack_wait.get((name, band), self.ack_wait_s)
                    taken = await asyncio.gather(*(self._take(msg, wait_s) for msg in msgs))
                    leases += [lease for lease in taken if lease is not None]
                    if len(msgs) < want:  # nothing more deliverable in this band
                        break
        return leases

    async def _take(self, msg: Any, ack_wait_s: float) -> Lease | None:
        for _ in range(3):  # a record written meanwhile (enqueue racing us): look again
            try:
                return await self._take_once(msg, ack_wait_s)
            except _ChangedError:
                continue
        await msg.nak()
        return None

    async def _take_once(self, msg: Any, ack_wait_s: float) -> Lease | None:
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
        # The server redelivers after the consumer's ack_wait: heartbeat at least that often.
        lease_s = min(float(rec.get("lease_s") or ack_wait_s), ack_wait_s)
        rec.update(
            state="running",
            attempts=rec["attempts"] + 1,
            token=token,
            started_at=now,
            lease_until=now + lease_s,
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
            lease_s=lease_s,
            enqueued_at=rec["created_at"],
            claimed_at=now,
            meta=dict(rec.get("meta") or {}),
        )

    async def _settle(
        self,
        lease: Lease,
        change: Callable[[dict[str, Any]], None],
        *,
        ttl_s: float | None = None,
    ) -> Any:
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
            if await self._save(rec, rev, ttl_s=ttl_s) is not None:
                self._msgs.pop((lease.job_id, lease.token), None)
                if ttl_s is not None and rec.get("idem"):
                    key = "k." + hashlib.sha256(rec["idem"].encode()).hexdigest()
                    await self._js.publish(
                        f"$KV.{self.bucket}.{key}",
                        rec["id"].encode(),
                        headers={"Nats-TTL": _ttl(ttl_s)},
                    )
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

        msg = await self._settle(lease, done, ttl_s=self.retention_s)
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
            delay = max(0.0, retry_at - now)
            self._deferred[lease.job_id] = retry_at  # next_due: a drain waits for the retry
            await msg.nak(delay=delay or None)
            if not delay:
                self._wake.set()
        return state

    async def release(self, leases: Sequence[Lease]) -> None:
        """Back to queued without counting the attempt; ``nak`` for immediate redelivery."""

        def back(rec: dict[str, Any]) -> None:
            rec.update(state="queued", attempts=rec["attempts"] - 1, lease_until=None)

        for lease in leases:
            with contextlib.suppress(Exception):
                msg = await self._settle(lease, back)
                self._deferred[lease.job_id] = self.clock()
                await msg.nak()
        if leases:
            self._wake.set()  # redelivered at once, but a nak publishes nothing we would see

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

    async def backlog(self, names: Collection[str] | None = None) -> dict[str, int]:
        """Jobs published and not yet delivered, per name (retries waiting are not counted).

        Names are read back from subjects: a name that is not a safe subject
        token shows as its hashed token unless asked for in ``names``.
        """
        by_subject = {self._subject(n, b): n for n in names or () for b in BANDS}
        out: dict[str, int] = dict.fromkeys(names or (), 0)
        for subject, count in (await self._present()).items():
            if not count:
                continue
            name = by_subject.get(subject)
            rest = subject[len(self.stream) + 1 :]
            band = _TOKEN_BAND.get(rest.split(".", 1)[0], 0)
            if name is None:
                if names is not None:
                    continue
                name = rest.split(".", 1)[1] if band else rest
            from nats.js.errors import NotFoundError

            try:
                info = await self._js.consumer_info(self.stream, self._durable(name, band))
                pending = int(info.num_pending)
            except NotFoundError:
                pending = int(count)
            out[name] = out.get(name, 0) + pending
        return out

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
            meta=_enc.encode(rec.get("meta") or {}),
        )

    async def get(self, job_id: str) -> JobRecord:
        """The job's record; ``JobNotFoundError`` if none."""
        loaded = await self._load(job_id)
        if loaded is None:
            raise JobNotFoundError(f"no job {job_id!r}", details={"job_id": job_id})
        return self._record(loaded[0])

    async def scan(self, state: JobState, *, limit: int = 100, offset: int = 0) -> list[JobRecord]:
        """Jobs in ``state`` (reads every record: an admin tool, not a hot path)."""
        bucket = f"KV_{self.bucket}"
        prefix = f"$KV.{self.bucket}.j."
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
        band = _band(rec["priority"])
        await self._consumer(rec["name"], band, rec.get("lease_s"))
        await self._js.publish(
            self._subject(rec["name"], band), _enc.encode(rec), headers={"Nats-Msg-Id": msg_id}
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
        self._pullers.clear()
        self._ack_wait.clear()
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()


class _ChangedError(Exception):
    """The record changed between read and compare-and-set."""


class _Puller:
    """``no_wait`` pulls from one durable consumer into a private inbox.

    nats-py's ``fetch`` waits out its timeout on an empty consumer; a claim
    that looks at several bands needs an answer at once ("404 No Messages").
    """

    def __init__(self, nc: Any, api_subject: str) -> None:
        self._nc = nc
        self._api = api_subject
        self._inbox = nc.new_inbox()
        self._got: asyncio.Queue[Any] = asyncio.Queue()
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        async def put(msg: Any) -> None:
            self._got.put_nowait(msg)

        await self._nc.subscribe(self._inbox, cb=put)

    async def pull(self, n: int) -> list[Any]:
        """Up to ``n`` messages deliverable now (none: an empty list, at once)."""
        async with self._lock:
            out: list[Any] = []
            while not self._got.empty():  # late replies of a pull that gave up
                msg = self._got.get_nowait()
                if not _is_status(msg):
                    out.append(msg)
            if len(out) >= n:
                return out
            request = _enc.encode({"batch": n - len(out), "no_wait": True})
            await self._nc.publish(self._api, request, reply=self._inbox)
            while len(out) < n:
                try:
                    msg = await asyncio.wait_for(self._got.get(), PULL_TIMEOUT_S)
                except TimeoutError:
                    break
                if _is_status(msg):  # 404 no messages / 408: this pull is over
                    break
                out.append(msg)
            return out


def _is_status(msg: Any) -> bool:
    return bool(msg.headers and msg.headers.get("Status")) and not msg.data


def _band(priority: int) -> int:
    """The priority band: 2 (≥ 10), 1 (1…9), 0, -1 (-1…-9), -2 (≤ -10)."""
    if priority == 0:
        return 0
    size = 2 if abs(priority) >= HIGH_PRIORITY else 1
    return size if priority > 0 else -size


def _ttl(seconds: float) -> str:
    """A ``Nats-TTL`` header value: whole seconds, at least one."""
    return f"{max(1, math.ceil(seconds))}s"


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
