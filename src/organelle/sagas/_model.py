"""What a saga is: ordered ``Step``s, each an action and the compensation that undoes it.

Declarations are plain frozen values checked when they are made, so a
misspelt target or a step named twice fails at import, not in a worker.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from organelle.errors import DefinitionError
from organelle.jobs.base import Backoff

__all__ = ["Action", "ParamsFn", "Saga", "Step"]

Action = str | Callable[..., Any]
"""``"<module>.<method>"`` (an RPC target, here or remote) or an ``async def`` of the
declaring module's class, called on its live instance."""

ParamsFn = Callable[[Mapping[str, Any], Mapping[str, Any]], Mapping[str, Any]]
"""``fn(saga_params, results) -> params``: ``results`` maps each done step to its result."""

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_TARGET = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\.[A-Za-z_][A-Za-z0-9_]*")


def _check_action(saga: str, step: str, what: str, action: Action | None) -> None:
    if action is None:
        return
    if isinstance(action, str):
        if not _TARGET.fullmatch(action):
            raise DefinitionError(
                f"saga {saga!r} step {step!r}: {what} {action!r} is not '<module>.<method>'"
            )
    elif not inspect.iscoroutinefunction(action):
        raise DefinitionError(
            f"saga {saga!r} step {step!r}: {what} must be '<module>.<method>' or an async def"
        )


@dataclass(frozen=True, slots=True)
class Step:
    """One step: ``action`` does the work, ``compensate`` undoes it if a later step fails.

    Both are called with the saga's params (or what ``params`` /
    ``compensate_params`` build from them and the results so far) and with the
    step's stable key in the call's context meta (``organelle.sagas.step_key()``),
    or as the keyword ``key_param`` names. Delivery is at-least-once: use the
    key to make the effect happen once.

    Attributes:
        timeout_s: per attempt of the action and of the compensation.
        max_attempts: attempts of the action before the saga compensates.
        compensate_attempts: attempts of the compensation before the saga is ``stuck``.
        backoff: delay between attempts (``organelle.jobs.Backoff``).
        compensate_failed: also compensate this step when its action failed
            (for actions that may have half-applied, e.g. timed out remotely).
    """

    name: str
    _: KW_ONLY
    action: Action
    compensate: Action | None = None
    params: ParamsFn | None = None
    compensate_params: ParamsFn | None = None
    key_param: str | None = None
    timeout_s: float | None = None
    max_attempts: int = 3
    compensate_attempts: int = 10
    backoff: Backoff = field(default_factory=lambda: Backoff(base_s=0.5, max_s=30.0))
    compensate_failed: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise DefinitionError(
                f"a saga step name must be a letter then letters, digits, _ or -: {self.name!r}"
            )
        if self.max_attempts < 1 or self.compensate_attempts < 1:
            raise DefinitionError(f"step {self.name!r}: attempts must be >= 1")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise DefinitionError(f"step {self.name!r}: timeout_s must be > 0")


@dataclass(frozen=True, slots=True, init=False)
class Saga:
    """A named sequence of steps, declared as a class attribute of the module that owns it.

    The owning module runs it (its job type ``_saga.<module>.<name>`` is served
    where the module is) and starts it with ``self.sagas.start(name, params)``.

    Example::

        class Orders(Module):
            name = "orders"
            order = Saga("order", steps=[
                Step("reserve", action="inventory.reserve", compensate="inventory.release"),
                Step("charge", action="payments.charge", compensate="payments.refund"),
                Step("ship", action="shipping.ship"),
            ])

    Attributes:
        lease_s: the job lease of a step's run: a process killed mid-step has its
            step taken over by another (or its restart) after this long.
        retention_s: how long a finished (completed or compensated) saga's record
            is kept, and with it its start key; ``None``: until deleted.
    """

    name: str
    steps: Sequence[Step]
    lease_s: float = 30.0
    retention_s: float | None = 7 * 86400.0

    def __init__(
        self,
        name: str,
        *,
        steps: Sequence[Step],
        lease_s: float = 30.0,
        retention_s: float | None = 7 * 86400.0,
    ) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "steps", tuple(steps))
        object.__setattr__(self, "lease_s", lease_s)
        object.__setattr__(self, "retention_s", retention_s)
        self._check()

    def _check(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise DefinitionError(
                f"a saga name must be a letter then letters, digits, _ or -: {self.name!r}"
            )
        if not self.steps:
            raise DefinitionError(f"saga {self.name!r} has no steps")
        seen: set[str] = set()
        for step in self.steps:
            if not isinstance(step, Step):
                raise DefinitionError(f"saga {self.name!r}: {step!r} is not a Step")
            if step.name in seen:
                raise DefinitionError(f"saga {self.name!r}: two steps are named {step.name!r}")
            seen.add(step.name)
            _check_action(self.name, step.name, "action", step.action)
            _check_action(self.name, step.name, "compensate", step.compensate)
        if self.lease_s <= 0:
            raise DefinitionError(f"saga {self.name!r}: lease_s must be > 0")
        if self.retention_s is not None and self.retention_s <= 0:
            raise DefinitionError(f"saga {self.name!r}: retention_s must be > 0 or None")

    def step(self, name: str) -> Step:
        """The step called ``name``."""
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)
