"""Sagas as the dashboard shows them: the unfinished ones, with their steps and errors.

Read through ``kernel.sagas``: only the unfinished sagas (running,
compensating, stuck) are listed, which reads their markers, never every
finished record. Params are masked like job params; step results are left
out (they are the services' answers, not the operator's business here).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from organelle.config.secrets import mask

if TYPE_CHECKING:
    from organelle.kernel import Kernel
    from organelle.sagas import SagaRecord, StepError

__all__ = ["MAX_SAGAS", "sagas_summary"]

MAX_SAGAS = 200


def _error(err: StepError) -> str:
    """The step's last error; a compensation's says so (its step itself may be ``done``)."""
    text = f"{err.type}: {err.message}"
    return f"compensation: {text}" if err.phase == "compensate" else text


def _saga(rec: SagaRecord) -> dict[str, Any]:
    params: Any = mask(rec.params, by_name=True)
    return {
        "id": rec.id,
        "name": rec.name,
        "key": rec.key,
        "state": rec.state,
        "aborted": rec.aborted,
        "error": rec.error,
        "created_at": rec.created_at,
        "updated_at": rec.updated_at,
        "params": params if isinstance(params, dict) else {"value": params},
        "steps": [
            {
                "name": s.name,
                "state": s.state,
                "attempts": s.attempts,
                "compensate_attempts": s.compensate_attempts,
                "error": None if not s.errors else _error(s.errors[-1]),
            }
            for s in rec.steps
        ],
    }


async def sagas_summary(kernel: Kernel) -> dict[str, Any]:
    """``/api/sagas``: the sagas declared here and the unfinished ones (up to ``MAX_SAGAS``)."""
    sagas = kernel.sagas
    declared = sorted(sagas.declared)
    if not declared:
        return {"enabled": False, "declared": [], "sagas": [], "capped": False}
    found = await sagas.list(state="unfinished", limit=MAX_SAGAS + 1)
    return {
        "enabled": True,
        "declared": declared,
        "sagas": [_saga(r) for r in found[:MAX_SAGAS]],
        "capped": len(found) > MAX_SAGAS,
    }
