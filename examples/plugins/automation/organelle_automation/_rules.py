"""One rule: a topic pattern, a JMESPath condition, one action and its parameters."""

from __future__ import annotations

from typing import Any, Literal

import jmespath
from jmespath.exceptions import JMESPathError
from jmespath.parser import ParsedResult
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from organelle.topics import matches, pattern_error

Action = Literal["call", "emit", "enqueue"]
ENQUEUE_OPTIONS = frozenset({"delay_s", "at", "priority", "idempotency_key"})  # never job params


def _compile(expression: str, where: str) -> ParsedResult:
    try:
        return jmespath.compile(expression)
    except JMESPathError as exc:
        raise ValueError(f"{where}: not a JMESPath expression: {exc}") from None


class Rule(BaseModel):
    """A rule as written in config (validated, its expressions compiled once)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    name: str = Field(min_length=1)
    on: str
    when: str = ""
    call: str = ""
    emit: str = ""
    enqueue: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    """What the target gets: a job's params whole, whatever their names (options are below)."""
    delay_s: float | None = Field(default=None, ge=0)
    """``enqueue`` only: run the job no earlier than this many seconds after the event."""
    priority: int = 0
    """``enqueue`` only: the job's priority (higher runs first among due jobs)."""
    enabled: bool = True
    _condition: ParsedResult | None = PrivateAttr(default=None)
    _params: dict[str, ParsedResult] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Rule:
        reason = pattern_error(self.on)
        if reason is not None:
            raise ValueError(f"rule {self.name!r}: on: {reason}")
        actions = [a for a in ("call", "emit", "enqueue") if getattr(self, a)]
        if len(actions) != 1:
            raise ValueError(f"rule {self.name!r}: set exactly one of call, emit, enqueue")
        target = getattr(self, actions[0])
        if actions[0] != "emit" and target.count(".") != 1:
            raise ValueError(f"rule {self.name!r}: {actions[0]} needs '<module>.<name>'")
        options = sorted({"delay_s", "priority"} & self.model_fields_set)
        if options and actions[0] != "enqueue":
            raise ValueError(f"rule {self.name!r}: {', '.join(options)}: options of enqueue only")
        clash = sorted(ENQUEUE_OPTIONS & self.params.keys()) if actions[0] == "enqueue" else []
        if clash:  # no @job may take such a param: this was meant as an option
            raise ValueError(
                f"rule {self.name!r}: params.{clash[0]}: a job has no param named like an "
                "enqueue option; delay_s and priority are the rule's own keys"
            )
        if self.when:
            self._condition = _compile(self.when, f"rule {self.name!r}: when")
        self._params = {
            key: _compile(value[1:], f"rule {self.name!r}: params.{key}")
            for key, value in self.params.items()
            if isinstance(value, str) and value.startswith("=")
        }
        return self

    @property
    def action(self) -> tuple[Action, str]:
        """What the rule does and to which target."""
        if self.call:
            return "call", self.call
        if self.emit:
            return "emit", self.emit
        return "enqueue", self.enqueue

    def wants(self, topic: str) -> bool:
        """Whether an event on ``topic`` concerns this rule."""
        return self.enabled and matches(self.on, topic)

    def holds(self, event: dict[str, Any]) -> bool:
        """Whether the condition holds for ``event`` (JMESPath truth: not false, null or empty)."""
        if self._condition is None:
            return True
        found = self._condition.search(event)
        return found not in (False, None, "", [], {})

    def arguments(self, event: dict[str, Any]) -> dict[str, Any]:
        """The parameters, ``"=…"`` values taken from the event."""
        return {
            key: self._params[key].search(event) if key in self._params else value
            for key, value in self.params.items()
        }


class RuleStats(BaseModel):
    """What a rule did since the module started (``automation.rules()``)."""

    name: str
    on: str
    action: str
    target: str
    matched: int = 0
    fired: int = 0
    failed: int = 0
    last_error: str = ""
