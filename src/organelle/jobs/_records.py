"""Row encoding shared by the SQL backends: params, results and attempt errors as JSON."""

from __future__ import annotations

import uuid
from typing import Any, cast

import msgspec

from organelle.codec import to_builtins
from organelle.errors import LeaseLostError, ValidationError
from organelle.jobs.base import AttemptError, JobRecord, JobState, Lease

__all__ = [
    "append_error",
    "decode_errors",
    "decode_json",
    "encode_errors",
    "encode_meta",
    "encode_params",
    "encode_result",
    "lease_lost",
    "lost_lease_error",
    "make_record",
    "meta_of",
    "new_id",
    "params_of",
    "sweep_every_s",
]

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()


def new_id() -> str:
    """A fresh random job id (32 hex characters)."""
    return uuid.uuid4().hex


def encode_params(params: dict[str, Any]) -> bytes:
    """Params as JSON; what cannot be stored is refused at enqueue, not at run time."""
    try:
        return _enc.encode(params)
    except (TypeError, ValueError, OverflowError):
        pass
    try:
        return _enc.encode(to_builtins(params))
    except (TypeError, ValueError, NotImplementedError, OverflowError) as exc:
        raise ValidationError(
            f"job params are not JSON-serializable: {exc}",
            errors=[{"field": "params", "message": str(exc)}],
        ) from exc


def encode_result(result: Any) -> bytes | None:
    """A handler's return value as JSON; what JSON cannot hold is kept as its repr."""
    if result is None:
        return None
    try:
        return _enc.encode(to_builtins(result))
    except (TypeError, ValueError, NotImplementedError, OverflowError):
        return _enc.encode({"repr": repr(result)})


def decode_json(data: bytes | str | None) -> Any:
    """JSON column back to builtins (``None`` stays ``None``)."""
    if data is None:
        return None
    return _dec.decode(data)


def encode_errors(errors: list[AttemptError]) -> bytes:
    """The attempt-error list as JSON."""
    return _enc.encode([_err_dict(e) for e in errors])


def _err_dict(e: AttemptError) -> dict[str, Any]:
    return {
        "attempt": e.attempt,
        "type": e.type,
        "message": e.message,
        "traceback": e.traceback,
        "started_at": e.started_at,
        "failed_at": e.failed_at,
    }


def decode_errors(data: bytes | str | None) -> list[AttemptError]:
    """The attempt-error list from JSON."""
    if not data:
        return []
    return [AttemptError(**item) for item in _dec.decode(data)]


def append_error(data: bytes | str | None, error: AttemptError) -> bytes:
    """Add one attempt's error to the stored list."""
    errors = decode_errors(data)
    errors.append(error)
    return encode_errors(errors)


def lost_lease_error(attempt: int, started_at: float | None, now: float) -> AttemptError:
    """The error recorded for an attempt whose worker vanished (crash, kill, stall)."""
    return AttemptError(
        attempt=attempt,
        type="LeaseExpired",
        message=f"attempt {attempt} lost its lease: the worker died or stalled",
        started_at=started_at or 0.0,
        failed_at=now,
    )


def make_record(
    *,
    id: str,  # noqa: A002 - the record's field name
    name: str,
    params: bytes | str,
    state: str,
    attempts: int,
    max_attempts: int,
    priority: int,
    run_at: float,
    created_at: float,
    updated_at: float,
    idempotency_key: str | None,
    result: bytes | str | None,
    errors: bytes | str | None,
    now: float,
    meta: bytes | str | None = None,
) -> JobRecord:
    """Build a ``JobRecord``; a queued job not yet due reads as ``scheduled``."""
    shown = "scheduled" if state == "queued" and run_at > now else state
    return JobRecord(
        id=id,
        name=name,
        params=decode_json(params),
        state=cast("JobState", shown),
        attempts=attempts,
        max_attempts=max_attempts,
        priority=priority,
        run_at=run_at,
        created_at=created_at,
        updated_at=updated_at,
        idempotency_key=idempotency_key,
        result=decode_json(result),
        errors=tuple(decode_errors(errors)),
        meta=meta_of(meta),
    )


def encode_meta(meta: dict[str, str]) -> bytes | None:
    """A job's meta as JSON (``None`` when empty: nothing stored)."""
    return _enc.encode(meta) if meta else None


def meta_of(data: bytes | str | None) -> dict[str, str]:
    """Stored meta back to a dict (empty when none)."""
    value = decode_json(data) if data else None
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def sweep_every_s(retention_s: float) -> float:
    """How often a backend deletes succeeded jobs past ``retention_s``: a minute at most."""
    return max(0.05, min(60.0, retention_s / 2))


def params_of(data: bytes | str) -> dict[str, Any]:
    """Stored params back to the handler's keyword arguments."""
    value = decode_json(data)
    return value if isinstance(value, dict) else {}


def lease_lost(lease: Lease) -> LeaseLostError:
    """The refusal of an ack, fail or heartbeat under a lease that is no longer live."""
    return LeaseLostError(
        f"job {lease.job_id!r}: lease of attempt {lease.attempt} is no longer held",
        details={"job_id": lease.job_id, "attempt": lease.attempt, "token": lease.token},
    )
