"""A saga's durable record: its state, where it is, and each step's attempts and errors.

The record is the saga's single source of truth, rewritten by compare-and-set
after every step; ``version`` counts those rewrites and names the one job
that may make the next (see ``_engine.py``). msgspec Structs, because they are
what the Store encodes.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = ["ACTIVE", "SagaRecord", "SagaState", "StepError", "StepRecord", "StepState"]

SagaState = Literal["running", "compensating", "completed", "compensated", "stuck"]
StepState = Literal["pending", "done", "failed", "compensated"]

ACTIVE: frozenset[str] = frozenset({"running", "compensating"})
"""States in which a job is due or queued to move the saga on."""

MAX_ERRORS = 10
"""Errors kept per step (the latest)."""


class StepError(msgspec.Struct, frozen=True, kw_only=True):
    """Why one attempt of a step's action or compensation failed."""

    phase: Literal["action", "compensate"]
    attempt: int
    type: str
    message: str
    at: float


class StepRecord(msgspec.Struct, kw_only=True):
    """One step as it stands: ``done`` steps are those a failure compensates."""

    name: str
    state: StepState = "pending"
    attempts: int = 0
    compensate_attempts: int = 0
    result: Any = None
    errors: list[StepError] = msgspec.field(default_factory=list)

    def add_error(self, error: StepError) -> None:
        self.errors = [*self.errors, error][-MAX_ERRORS:]


class SagaRecord(msgspec.Struct, kw_only=True):
    """Everything known about one saga.

    Attributes:
        id: stable: derived from ``(name, key)`` when started with a key.
        name: ``"<module>.<saga>"``.
        state: ``running`` → ``completed``, or → ``compensating`` →
            ``compensated``; ``stuck`` when a compensation kept failing
            (``Sagas.retry`` goes on compensating).
        cursor: the step the next job runs (forward) or compensates (backward).
        version: rewrites so far; the job of ``version`` makes the next one.
        error: the failure that made it compensate, or that left it stuck.
        aborted: an abort was asked; it compensates at its next step.
    """

    id: str
    name: str
    key: str | None
    params: dict[str, Any]
    state: SagaState
    cursor: int
    version: int
    steps: list[StepRecord]
    error: str | None = None
    aborted: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def active(self) -> bool:
        """Still moving: a job is due or queued for it."""
        return self.state in ACTIVE

    def results(self) -> dict[str, Any]:
        """Results of the steps that are done, by step name."""
        return {s.name: s.result for s in self.steps if s.state == "done"}

    def to_json(self) -> dict[str, Any]:
        """Plain builtins (for the dashboard and the CLI)."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        return out
