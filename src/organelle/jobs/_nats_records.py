"""The JSON record of a NATS job in KV, and its compare-and-set reads and writes.

Every change to a job is a compare-and-set on its KV entry's revision, and a
succeeded record is rewritten with a per-message TTL; this module holds that
storage layer and the record's codec (to ``JobRecord``, to error entries),
apart from the paths that decide what to write.
"""

from __future__ import annotations

import math
from typing import Any

from organelle.jobs._nats_base import _dec, _enc, _NatsJobsBase
from organelle.jobs.base import AttemptError, JobRecord

_WRONG_LAST = (10071, 10164)  # JSStreamWrongLastSequenceErr(F), ...ConstantErr


class _ChangedError(Exception):
    """The record changed between read and compare-and-set."""


class _NatsRecords(_NatsJobsBase):
    """Load and save job records (``j.<id>`` in the bucket) by revision."""

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
        from nats.js.errors import APIError

        rec["updated_at"] = self.clock()
        headers = {"Nats-Expected-Last-Subject-Sequence": str(rev or 0)}
        if ttl_s is not None and rev is not None:
            headers["Nats-TTL"] = _ttl(ttl_s)
        try:
            return await self._write(f"$KV.{self.bucket}.j.{rec['id']}", _enc.encode(rec), headers)
        except APIError as exc:
            if exc.err_code not in _WRONG_LAST:
                raise
        if rev is not None:
            return None
        # A create whose key has history: a deleted record's tombstone is
        # re-created from its revision; a live one is a conflict (nats-py's own path).
        return await self._create_over(rec)

    async def _create_over(self, rec: dict[str, Any]) -> int | None:
        from nats.js.errors import KeyWrongLastSequenceError

        try:
            return int(await self._kv.create(f"j.{rec['id']}", _enc.encode(rec)))
        except KeyWrongLastSequenceError:
            return None

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


def _ttl(seconds: float) -> str:
    """A ``Nats-TTL`` header value: whole seconds, at least one."""
    return f"{max(1, math.ceil(seconds))}s"


def _err(error: AttemptError) -> dict[str, Any]:
    return {
        "attempt": error.attempt,
        "type": error.type,
        "message": error.message,
        "traceback": error.traceback,
        "started_at": error.started_at,
        "failed_at": error.failed_at,
    }
