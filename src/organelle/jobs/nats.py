"""``NatsJobQueue``: jobs on a JetStream work-queue stream, status in a KV bucket.

Each job is one stream message (``Nats-Msg-Id`` = job id, so a re-publish
within the duplicate window is dropped). Its record — state, attempts,
errors, result and the fencing token — lives in KV under ``j.<id>`` and every
change is a compare-and-set on the entry's revision. The token is the
message's stream sequence and delivery count, so a redelivery after a lost
lease outranks the stale holder, whose ack is then refused (and never reaches
the stream: a late ``ack`` must not remove someone else's redelivery). Delays
and retries are ``nak(delay=…)``.

**Round trips.** An enqueue creates the record (the create is the check that
the id is new), then publishes the message, which carries the record's KV
revision (header ``Organelle-Rev``). A first delivery is claimed by one
compare-and-set from that revision, with no read; a settle writes from the
record this queue wrote at the claim, again with no read. A conflict (the
record changed: a retry, a lost lease, a duplicate message) falls back to read
and compare-and-set. A worker whose pull came back full fetches the next batch
ahead (``_nats_pull``). So a job costs two round trips to enqueue, one to claim
(plus one pull per batch, none when fetched ahead), one to settle; acks expect
no reply.

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

The queue is assembled from private modules, one concern each, stacked by
inheritance: ``_nats_base`` (connection, stream/consumer layout, pulls),
``_nats_records`` (the KV record and its compare-and-set), ``_nats_claim``
(enqueue and claim) and ``_nats_settle`` (heartbeat, complete, fail,
release); the admin path is here.
"""

# Names that used to be defined here stay importable from here: `x as x` marks
# each as an explicit re-export (for mypy's no_implicit_reexport and ruff F401).
# ruff: noqa: PLC0414

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from organelle.errors import JobNotFoundError
from organelle.jobs._nats_base import _BAND_TOKEN as _BAND_TOKEN
from organelle.jobs._nats_base import _TOKEN_BAND as _TOKEN_BAND
from organelle.jobs._nats_base import BANDS as BANDS
from organelle.jobs._nats_base import HIGH_PRIORITY as HIGH_PRIORITY
from organelle.jobs._nats_base import _band as _band
from organelle.jobs._nats_base import _dec as _dec
from organelle.jobs._nats_base import _enc as _enc
from organelle.jobs._nats_base import _token as _token
from organelle.jobs._nats_claim import SEQ as SEQ
from organelle.jobs._nats_pull import PULL_TIMEOUT_S as PULL_TIMEOUT_S
from organelle.jobs._nats_pull import _is_status as _is_status
from organelle.jobs._nats_pull import _Puller as _Puller
from organelle.jobs._nats_records import _ChangedError as _ChangedError
from organelle.jobs._nats_records import _err as _err
from organelle.jobs._nats_records import _ttl as _ttl
from organelle.jobs._nats_settle import _NatsSettle
from organelle.jobs.base import JobRecord, JobState

__all__ = ["NatsJobQueue"]


class NatsJobQueue(_NatsSettle):
    """A job queue on NATS JetStream.

    Args:
        servers: a ``NatsConnectOptions`` (servers, credentials, TLS) or NATS URLs.
        stream: stream name (bucket ``<stream>_STATE`` holds the records).
        ack_wait_s: the lease of a job type whose consumer this queue has to create
            without having seen one of its jobs (normally each consumer's
            ``ack_wait`` is its job type's ``lease_s``).
        duplicate_window_s: how long the stream drops a re-published job id.
        retention_s: how long succeeded records and their idempotency keys stay.
        clock: wall-clock seconds.
    """

    purge_cancels: ClassVar[bool] = False
    """``purge`` drops a waiting job's record, not its queued message (it would still run)."""

    supports_priority: ClassVar[bool] = True

    # -- admin path --------------------------------------------------------

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
        new_rev = await self._save(rec, rev)
        if new_rev is None:
            raise JobNotFoundError(f"job {job_id!r} changed meanwhile", details={"job_id": job_id})
        await self._consumer(rec["name"], _band(rec["priority"]), rec.get("lease_s"))
        await self._publish(rec, new_rev, f"{job_id}:{rev}")

    async def purge(self, job_ids: Sequence[str]) -> int:
        """Delete records that are not running."""
        n = 0
        for jid in job_ids:
            loaded = await self._load(jid)
            if loaded is not None and loaded[0]["state"] != "running":
                await self._kv.purge(f"j.{jid}")
                n += 1
        return n
