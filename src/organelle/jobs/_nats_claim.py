"""The producer and claim path of ``NatsJobQueue``: enqueue, claim, wait, backlog.

Separate from settling (``_nats_settle``): this is how a job gets onto its
band's subject and how a worker takes it — the fencing token built from the
message's stream sequence and delivery count, lost-lease accounting and
deferral by ``nak(delay=…)`` when a message arrives before its run time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Collection, Sequence
from typing import Any

from organelle.errors import UnavailableError
from organelle.jobs._nats_base import (
    _TOKEN_BAND,
    BANDS,
    SURVEY_S,
    _band,
    _dec,
    _enc,
    _token,
)
from organelle.jobs._nats_records import _ChangedError, _err, _NatsRecords
from organelle.jobs._records import encode_params, lost_lease_error, new_id, params_of
from organelle.jobs.base import Lease, NewJob

SEQ = 1_000_000  # token = stream sequence * SEQ + delivery count
REV_HEADER = "Organelle-Rev"  # the KV revision of the record a job message was published from
RESERVE_GRACE_S = 10.0  # how long a fresh idempotency key may wait for its record
FRESH_S = 10.0  # how long next_due counts a job enqueued here that no claim here took
FRESH_MAX = 10_000  # jobs remembered so; a producer with no worker here never claims them


class _NatsClaims(_NatsRecords):
    """Enqueue jobs and claim them, highest priority band first."""

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[str]:
        """Publish each job (dedup by id) after reserving its idempotency key."""
        return [await self._enqueue_one(job) for job in jobs]

    async def _enqueue_one(self, job: NewJob) -> str:

        params = params_of(encode_params(job.params))  # refuses what JSON cannot hold
        jid = job.id or new_id()
        if job.idempotency_key is not None:
            key = "k." + hashlib.sha256(job.idempotency_key.encode()).hexdigest()
            first = await self._reserve(key, jid)
            if first is not None:
                return first
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
        band = _band(job.priority)
        await self._consumer(job.name, band, job.lease_s)
        rev = await self._save(rec, None)  # the create is the existence check of the id
        if rev is None:
            await self._republish(jid)
            return jid
        await self._publish(rec, rev, jid)
        self._fresh[jid] = (job.name, job.run_at or now)
        if len(self._fresh) > FRESH_MAX:  # dicts keep insertion order: the oldest goes
            del self._fresh[next(iter(self._fresh))]
        return jid

    async def _publish(self, rec: dict[str, Any], rev: int, msg_id: str) -> None:
        """Publish the job's message: the record as written at ``rev``, which it carries.

        A claim of a first delivery compare-and-sets the record from that
        revision without reading it; any change since sends it the long way.
        """
        subject = self._subject(rec["name"], _band(rec["priority"]))
        # No Nats-Expected-Stream: the server keeps every header with the message and
        # each delivery parses them again, while no other stream can hold our subjects.
        await self._write(subject, _enc.encode(rec), {"Nats-Msg-Id": msg_id, REV_HEADER: str(rev)})
        await self._signal(subject)

    async def _republish(self, jid: str) -> None:
        """An existing id is a no-op, unless its job was never claimed: publish it again.

        The record is written before the message, so an enqueue that died in
        between left a queued record without one; its retry heals it. Within
        the duplicate window the server drops the copy; after it, a second
        message of a job is acked away by the claim that finds it taken.
        """
        loaded = await self._load(jid)
        if loaded is None:
            return
        rec, rev = loaded
        if rec["state"] == "queued" and not rec["attempts"] and not rec["token"]:
            await self._publish(rec, rev, jid)

    async def _reserve(self, key: str, jid: str) -> str | None:
        """Take idempotency ``key`` for ``jid``; or return the id of the job that holds it.

        The key's value is ``"<id> <wall time>"``. A key whose record is not
        there yet may belong to an enqueue still on its way (a concurrent one
        with the same key): wait for that record, up to ``RESERVE_GRACE_S``
        after the key was taken. A key older than that without a record is
        stale — retention removed the record first, or its producer died
        before publishing (so that enqueue was never acknowledged) — and this
        enqueue takes it over.
        """
        from nats.js.errors import KeyWrongLastSequenceError

        mine = f"{jid} {self.clock()!r}".encode()
        try:
            await self._kv.create(key, mine)
        except KeyWrongLastSequenceError:
            pass
        else:
            return None
        pause = 0.002
        for _ in range(1000):  # bounded: each pass waits or changes the key
            entry = await self._kv.get(key)
            value: str = entry.value.decode()
            first, _, taken = value.partition(" ")
            if await self._load(first) is not None:
                return first
            age = self.clock() - float(taken) if taken else RESERVE_GRACE_S
            if age < RESERVE_GRACE_S:
                await asyncio.sleep(pause)  # its enqueue is still on the way
                pause = min(pause * 2, 0.1)
                continue
            try:
                await self._kv.update(key, mine, last=entry.revision)
            except KeyWrongLastSequenceError:
                continue  # another enqueue took it over first: look again
            return None
        raise UnavailableError(f"idempotency key {key!r} kept changing; retry the enqueue")

    async def claim(self, *, names: Collection[str], limit: int) -> list[Lease]:
        """Pull up to ``limit`` messages across ``names``, highest band first; take each record."""
        if limit <= 0 or not names:
            return []
        await self._watch()  # before the survey: a band published after it is seen here
        self._wake.clear()
        if len(names) == 1 and time.monotonic() - self._surveyed_at < SURVEY_S:
            (name,) = names
            if _token(name) not in self._banded:  # only band 0 ever held this name
                leases: list[Lease] = []
                await self._claim_from(name, 0, limit, leases)
                return leases
        present = await self._present()
        leases = []
        for band in BANDS:
            for name in names:
                if not present.get(self._subject(name, band)):
                    continue
                if await self._claim_from(name, band, limit, leases):
                    return leases
        return leases

    async def _claim_from(self, name: str, band: int, limit: int, leases: list[Lease]) -> bool:
        """Pull from one (name, band) into ``leases`` up to ``limit``; True once full."""
        puller = await self._puller(name, band)
        wait_s = self._ack_wait.get((name, band), self.ack_wait_s)
        for _ in range(20):  # bounded: deferred or stale messages do not count
            want = limit - len(leases)
            if want <= 0:
                return True
            msgs = await puller.pull(want)
            taken = await asyncio.gather(*(self._take(msg, wait_s) for msg in msgs))
            leases += [lease for lease in taken if lease is not None]
            if len(msgs) < want:  # nothing more deliverable in this band
                break
        return len(leases) >= limit

    async def _take(self, msg: Any, ack_wait_s: float) -> Lease | None:
        # First from the record the message carries (no read); then, as long as
        # the record was written meanwhile (a claim, an outcome, a racing
        # enqueue), from the record as read.
        carried = msg.headers.get(REV_HEADER) if msg.headers else None
        if carried is not None and int(msg.metadata.num_delivered) > 1:
            carried = None  # redelivered: likely written since (an attempt, a retry)
        for i in range(4):
            try:
                if i == 0 and carried is not None:
                    return await self._take_once(
                        msg, ack_wait_s, (_dec.decode(msg.data), int(carried))
                    )
                return await self._take_once(msg, ack_wait_s, await self._load_for(msg))
            except _ChangedError:
                continue
        await msg.nak()
        return None

    async def _load_for(self, msg: Any) -> tuple[dict[str, Any], int | None]:
        """The job's record; built from the message if it has none yet (an older enqueue)."""
        rec: dict[str, Any] = _dec.decode(msg.data)
        loaded = await self._load(rec["id"])
        if loaded is None:
            return rec, None
        return loaded

    async def _take_once(
        self, msg: Any, ack_wait_s: float, current: tuple[dict[str, Any], int | None]
    ) -> Lease | None:
        meta = msg.metadata
        token = int(meta.sequence.stream) * SEQ + int(meta.num_delivered)
        now = self.clock()
        rec, rev = current
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
        self._fresh.pop(rec["id"], None)
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
        self._msgs[(rec["id"], token)] = (msg, new_rev, rec)
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

    async def wait(self, timeout_s: float) -> None:
        """Until a job is published on the stream, or ``timeout_s``."""
        await self._watch()
        if not self._wake.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, timeout_s))
        self._wake.clear()

    async def next_due(self, names: Collection[str]) -> float | None:
        """Earliest run time of a job this queue has seen and not yet claimed.

        Delayed jobs and retries it deferred, and jobs of ``names`` it enqueued
        itself and no claim here took yet (a job another node's worker took is
        forgotten after ``FRESH_S``). Redeliveries are not known.
        """
        now = self.clock()
        for jid in [j for j, t in self._deferred.items() if t < now - 60]:
            del self._deferred[jid]
        for jid in [j for j, (_, t) in self._fresh.items() if t < now - FRESH_S]:
            del self._fresh[jid]
        wanted = set(names)
        fresh = [t for name, t in self._fresh.values() if name in wanted]
        return min([*self._deferred.values(), *fresh], default=None)

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
