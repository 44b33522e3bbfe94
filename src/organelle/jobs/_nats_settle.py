"""The settling path of ``NatsJobQueue``: heartbeat, complete, fail, release.

Every outcome is written to the record under a live lease (the token must
still match) before the message is acked or nak'ed, so a stale holder never
acks someone else's redelivery; success also starts retention (a ``Nats-TTL``
on the record and its idempotency key). Kept apart from the claim path.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from organelle.jobs._nats_claim import _NatsClaims
from organelle.jobs._nats_records import _err, _ttl
from organelle.jobs._records import lease_lost
from organelle.jobs.base import AttemptError, JobState, Lease


class _NatsSettle(_NatsClaims):
    """Record each attempt's outcome, then ack or ``nak`` its message."""

    async def _settle(
        self,
        lease: Lease,
        change: Callable[[dict[str, Any]], None],
        *,
        ttl_s: float | None = None,
    ) -> Any:
        """Apply ``change`` to the record under a live lease; return the message.

        The first try writes from the record this queue wrote at the claim, by
        compare-and-set on that revision: no read. Nothing else writes a
        running record but a newer claim, so a conflict means the lease is
        probably lost; the record is read to tell for sure.
        """
        key = (lease.job_id, lease.token)
        held = self._msgs.get(key)
        if held is None:
            raise lease_lost(lease)
        msg, rev, claimed = held
        rec: dict[str, Any] | None = dict(claimed, errors=list(claimed["errors"]))
        for _ in range(5):
            if rec is None:
                loaded = await self._load(lease.job_id)
                if (
                    loaded is None
                    or loaded[0]["state"] != "running"
                    or loaded[0]["token"] != lease.token
                ):
                    self._msgs.pop(key, None)
                    raise lease_lost(lease)
                rec, rev = loaded
            change(rec)
            if await self._save(rec, rev, ttl_s=ttl_s) is not None:
                self._msgs.pop(key, None)
                if ttl_s is not None and rec.get("idem"):
                    idem = "k." + hashlib.sha256(rec["idem"].encode()).hexdigest()
                    await self._write(
                        f"$KV.{self.bucket}.{idem}", rec["id"].encode(), {"Nats-TTL": _ttl(ttl_s)}
                    )
                return msg
            rec = None
        raise lease_lost(lease)

    async def heartbeat(self, leases: Sequence[Lease]) -> list[Lease]:
        """``in_progress`` each held message; report leases no longer live."""
        held = [(lease, self._msgs.get((lease.job_id, lease.token))) for lease in leases]
        loaded = await asyncio.gather(
            *(self._load(lease.job_id) for lease, h in held if h is not None)
        )
        records = iter(loaded)
        lost = []
        for lease, h in held:
            current = next(records) if h is not None else None
            if h is None or current is None or current[0]["token"] != lease.token:
                lost.append(lease)
                continue
            await h[0].in_progress()
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
