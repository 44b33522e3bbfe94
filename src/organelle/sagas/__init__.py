"""Sagas: ordered steps with compensations, run on the durable job queue and the Store.

Declare a ``Saga`` as a class attribute of the module that owns it, start it
with ``await self.sagas.start("order", params, key=...)``; ``kernel.sagas``
lists, shows, retries and aborts. See docs/sagas.md.
"""

from __future__ import annotations

from organelle.context import current_context
from organelle.errors import SagaNotFoundError
from organelle.sagas._engine import (
    PHASE_META,
    STEP_META,
    Invoke,
    ModuleSagas,
    Sagas,
    step_key_of,
)
from organelle.sagas._model import Action, ParamsFn, Saga, Step
from organelle.sagas._record import ACTIVE, SagaRecord, SagaState, StepError, StepRecord, StepState

__all__ = [
    "ACTIVE",
    "PHASE_META",
    "STEP_META",
    "Action",
    "Invoke",
    "ModuleSagas",
    "ParamsFn",
    "Saga",
    "SagaNotFoundError",
    "SagaRecord",
    "SagaState",
    "Sagas",
    "Step",
    "StepError",
    "StepRecord",
    "StepState",
    "step_key",
    "step_key_of",
    "step_phase",
]


def step_key() -> str | None:
    """The stable key of the saga step being served (``None`` outside a step).

    The same for a step's action and its compensation, across retries and
    restarts: record the action's effect under it, and let the compensation
    undo what is recorded under it, once.
    """
    ctx = current_context()
    value = None if ctx is None else ctx.meta.get(STEP_META)
    return value if isinstance(value, str) else None


def step_phase() -> str | None:
    """``"action"`` or ``"compensate"`` while serving a saga step, else ``None``."""
    ctx = current_context()
    value = None if ctx is None else ctx.meta.get(PHASE_META)
    return value if isinstance(value, str) else None
