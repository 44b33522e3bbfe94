"""The ``automation`` module: hears events, runs the rules in its config section."""

from __future__ import annotations

from typing import Any, Self

import msgspec
from pydantic import BaseModel, Field, model_validator

from organelle import Module, on, rpc
from organelle.context import current_context
from organelle.plugins import Manifest
from organelle.topics import matches
from organelle_automation._rules import Rule, RuleStats

HOPS = "automation_hops"  # meta key: how many rules led to this event
MAX_HOPS = 8  # a rule whose action triggers rules, and so on: a loop ends here


class Automation(Module):
    """Runs ``[[modules.automation.rules]]`` (see the package docstring)."""

    name = "automation"
    version = "0.1.0"
    # A rules engine reaches whatever its rules name; ``allow`` narrows that per app.
    manifest = Manifest(kernel=">=0.1,<1", subscribe=(">",), rpc=(">",), emit=(">",), jobs=(">",))

    class Config(BaseModel):
        rules: list[Rule] = Field(default_factory=list)
        allow: list[str] = Field(default_factory=list)
        """Patterns the rules' targets must match (empty: any the manifest admits)."""

        @model_validator(mode="after")
        def _check(self) -> Self:
            names = [r.name for r in self.rules]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"two rules are named {twice[0]!r}")
            for rule in self.rules:
                _, target = rule.action
                if self.allow and not any(matches(p, target) for p in self.allow):
                    raise ValueError(f"rule {rule.name!r}: {target!r} is outside allow")
            return self

    config: Config

    async def on_load(self) -> None:
        self._stats: dict[str, RuleStats] = {}
        self._use(self.config)

    async def on_config_changed(self, old: Config, new: Config) -> None:  # noqa: ARG002
        """New rules apply from the next event; counters of rules kept by name stay."""
        self._use(new)

    def _use(self, config: Config) -> None:
        self._rules = list(config.rules)
        self._by_topic: dict[str, list[Rule]] = {}
        stats: dict[str, RuleStats] = {}
        for rule in self._rules:
            action, target = rule.action
            kept = self._stats.get(rule.name)
            if kept is None:
                kept = RuleStats(name=rule.name, on=rule.on, action=action, target=target)
            else:  # the counts stay; what the rule does now is the reloaded one's
                kept.on, kept.action, kept.target = rule.on, action, target
            stats[rule.name] = kept
        self._stats = stats

    def _for(self, topic: str) -> list[Rule]:
        found = self._by_topic.get(topic)
        if found is None:
            found = [r for r in self._rules if r.wants(topic)]
            if len(self._by_topic) < 10_000:
                self._by_topic[topic] = found
        return found

    @on(">")
    async def on_event(self, data: Any) -> None:
        ctx = current_context()
        topic = ctx.topic if ctx is not None else None
        if ctx is None or topic is None or topic.startswith("kernel."):
            return
        rules = self._for(topic)
        if not rules:
            return
        hops = _hops(ctx.meta) + 1
        if hops > MAX_HOPS:
            self.log.warning("automation: %s after %d rules in a row; stopping", topic, hops - 1)
            return
        event = {"topic": topic, "data": _plain(data)}
        table = self._stats  # the one of these rules, should a reload come during an action
        for rule in rules:
            stats = table[rule.name]
            if not rule.holds(event):
                continue
            stats.matched += 1
            try:
                await self._act(rule, event, hops)
            except Exception as exc:  # one rule failing never stops the others
                stats.failed += 1
                stats.last_error = f"{type(exc).__name__}: {exc}"
                self.log.warning("automation rule %s failed: %s", rule.name, stats.last_error)
            else:
                stats.fired += 1

    async def _act(self, rule: Rule, event: dict[str, Any], hops: int) -> None:
        action, target = rule.action
        params = rule.arguments(event)
        if action == "call":
            await self.call_with(target, params, meta={HOPS: hops})
        elif action == "emit":
            await self.emit(target, params, meta={HOPS: hops})
        else:
            # The params go to the job whole (a param named delay_s is the job's, not
            # an option); the job's meta carries the hop count to what its run emits.
            await self.kernel.jobs.enqueue(
                target,
                params,
                delay_s=rule.delay_s,
                priority=rule.priority,
                meta={HOPS: str(hops)},
            )

    @rpc
    async def rules(self) -> list[RuleStats]:
        """Every rule with what it did since the module started."""
        return [self._stats[r.name].model_copy() for r in self._rules]


def _hops(meta: dict[str, Any]) -> int:
    """How many rules led to this event (meta may have come over the wire, as text)."""
    try:
        return max(0, int(meta.get(HOPS, 0)))
    except (TypeError, ValueError):
        return 0


def _plain(data: Any) -> Any:
    """The payload as JSON-like data, whatever type the emitter used (JMESPath reads that)."""
    if hasattr(data, "model_dump"):  # a pydantic model
        return data.model_dump(mode="json")
    return msgspec.to_builtins(data)
