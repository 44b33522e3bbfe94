"""Comparing two snapshots: what would break a caller, emitter or producer of the old version.

Event types (``event_types``) are compared as data that outlives a deploy:
what the old version wrote must still be readable, at the same version or
through upcasters to the new one.

Inputs (RPC and job parameters, event and stream payloads) may accept more
than before, never less; an RPC's result may promise more, never less. Calls
are validated with unknown parameters forbidden, so a removed parameter breaks
the callers that still send it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from packaging.version import Version

from organelle.contracts._format import (
    EventContract,
    EventTypeContract,
    ModuleContract,
    ParamDoc,
    Schema,
    StreamContract,
    parse,
)
from organelle.contracts._keywords import brief
from organelle.contracts._schema_diff import covers
from organelle.contracts._schema_same import same

__all__ = ["ContractChange", "compare"]

_MISSING = "'missing required parameter'"  # the words of ParamsContract's error


@dataclass(frozen=True, slots=True, kw_only=True)
class ContractChange:
    """One difference between two snapshots.

    Attributes:
        kind: ``"breaking"`` when a client of the old version can fail against
            the new one, else ``"compatible"``.
        where: what changed, e.g. ``pricing.quote(qty)`` or ``job pricing.reindex``.
        message: what changed and why it matters, for a person.
        rule: a stable name of the rule, e.g. ``param.added``, ``version``.
    """

    kind: Literal["breaking", "compatible"]
    where: str
    message: str
    rule: str

    @property
    def breaking(self) -> bool:
        """Whether this change can break a client of the old version."""
        return self.kind == "breaking"

    def __str__(self) -> str:
        return f"{self.kind}: {self.where}: {self.message}"


def _bad(where: str, rule: str, message: str) -> ContractChange:
    return ContractChange(kind="breaking", where=where, message=message, rule=rule)


def _ok(where: str, rule: str, message: str) -> ContractChange:
    return ContractChange(kind="compatible", where=where, message=message, rule=rule)


def _phrase(what: str, verb: str, old: Schema, new: Schema) -> str:
    """``type changed from integer to string``, or ``type Line changed`` when the name stays."""
    a, b = brief(old), brief(new)
    text = f"{what} {verb} from {a} to {b}" if a != b else f"{what} {a} {verb}"
    return text.strip()


class _Diff:
    """Comparisons that need both snapshots' named schemas."""

    def __init__(self, old: dict[str, Schema], new: dict[str, Schema]) -> None:
        self.old, self.new = old, new

    def _same(self, old: Schema, new: Schema) -> bool:
        return same(old, new, a_defs=self.old, b_defs=self.new)

    def accepts(
        self, where: str, rule: str, what: str, old: Schema, new: Schema
    ) -> list[ContractChange]:
        """An input: the new schema must accept every value the old one did."""
        reason = covers(old, new, inner_defs=self.old, outer_defs=self.new)
        if reason is not None:
            text = f"{_phrase(what, 'changed', old, new)} and no longer accepts everything it did"
            text += f": {reason}"
            return [_bad(where, rule, text)]
        if self._same(old, new):
            return []
        if covers(new, old, inner_defs=self.new, outer_defs=self.old) is not None:
            return [_ok(where, rule, _phrase(what, "widened", old, new))]
        text = f"{_phrase(what, 'changed', old, new)}, still accepting everything it did"
        return [_ok(where, rule, text)]

    def returns(self, where: str, old: Schema | None, new: Schema | None) -> list[ContractChange]:
        """A result: every value the new type allows must be one the old type allowed."""
        if old is None:
            return [] if new is None else [_ok(where, "rpc.returns", f"now declared: {brief(new)}")]
        if new is None:
            text = f"no longer declared (was {brief(old)}): callers cannot rely on it"
            return [_bad(where, "rpc.returns", text)]
        reason = covers(
            new, old, inner_defs=self.new, outer_defs=self.old, inner_label="new", outer_label="old"
        )
        if reason is not None:
            text = f"{_phrase('', 'changed', old, new)} and may return what callers do not expect"
            text += f": {reason}"
            return [_bad(where, "rpc.returns", text)]
        if self._same(old, new):
            return []
        if covers(old, new, inner_defs=self.old, outer_defs=self.new) is not None:
            return [_ok(where, "rpc.returns", _phrase("", "narrowed", old, new))]
        text = f"{_phrase('', 'changed', old, new)}, returning nothing callers do not expect"
        return [_ok(where, "rpc.returns", text)]

    def params(
        self, where: str, old: dict[str, ParamDoc], new: dict[str, ParamDoc]
    ) -> list[ContractChange]:
        """Parameters of an RPC method or a job; ``where`` is ``"name"`` as in ``name(param)``."""
        out: list[ContractChange] = []
        for name, was in old.items():
            at = f"{where}({name})"
            now = new.get(name)
            if now is None:
                text = (
                    "parameter removed: callers that send it now fail with 'unexpected parameter'"
                )
                out.append(_bad(at, "param.removed", text))
                continue
            if now.required and not was.required:
                text = f"became required: callers that omit it now fail with {_MISSING}"
                out.append(_bad(at, "param.required", text))
            elif was.required and not now.required:
                out.append(_ok(at, "param.optional", "became optional"))
            out += self.accepts(at, "param.type", "type", was.schema, now.schema)
            unset = msgspec.UNSET
            if was.default is not unset and now.default is not unset and was.default != now.default:
                text = f"default changed from {was.default!r} to {now.default!r}"
                out.append(_ok(at, "param.default", text))
        for name, now in new.items():
            if name not in old:
                at = f"{where}({name})"
                if now.required:
                    text = f"new required parameter: callers that omit it fail with {_MISSING}"
                    out.append(_bad(at, "param.added", text))
                else:
                    out.append(_ok(at, "param.added", "new optional parameter"))
        return out

    def payloads(
        self,
        where: str,
        rule: str,
        old: list[EventContract] | list[StreamContract],
        new: list[EventContract] | list[StreamContract],
    ) -> list[ContractChange]:
        """Handlers of one pattern or stream group: each must take what the old ones took."""
        out: list[ContractChange] = []
        for handler in new:
            same = [h for h in old if h.handler == handler.handler] or old
            what = f"payload of {handler.handler}"
            out += self.accepts(where, rule, what, same[0].payload, handler.payload)
        return out


def _major(old: Version, new: Version) -> tuple[bool, str]:
    """Whether ``new`` is a major bump over ``old`` (for 0.x, a minor one), and the least one."""
    if old.major == 0:
        return (new.major > 0 or new.minor > old.minor, f"0.{old.minor + 1}.0")
    return (new.major > old.major, f"{old.major + 1}.0.0")


def _rpcs(diff: _Diff, name: str, old: ModuleContract, new: ModuleContract) -> list[ContractChange]:
    out: list[ContractChange] = []
    for method in sorted(old.rpc.keys() | new.rpc.keys()):
        where = f"{name}.{method}"
        if method not in new.rpc:
            out.append(_bad(where, "rpc.removed", "RPC method removed: callers get 'not found'"))
        elif method not in old.rpc:
            out.append(_ok(where, "rpc.added", "new RPC method"))
        else:
            was, now = old.rpc[method], new.rpc[method]
            out += diff.params(where, was.params, now.params)
            out += diff.returns(f"{where} -> result", was.returns, now.returns)
    return out


def _jobs(diff: _Diff, name: str, old: ModuleContract, new: ModuleContract) -> list[ContractChange]:
    out: list[ContractChange] = []
    for job in sorted(old.jobs.keys() | new.jobs.keys()):
        where = f"job {name}.{job}"
        if job not in new.jobs:
            text = "job removed: enqueueing it fails and queued runs cannot execute"
            out.append(_bad(where, "job.removed", text))
        elif job not in old.jobs:
            out.append(_ok(where, "job.added", "new job"))
        else:
            out += diff.params(where, old.jobs[job].params, new.jobs[job].params)
    return out


def _handlers(
    diff: _Diff, name: str, old: ModuleContract, new: ModuleContract
) -> list[ContractChange]:
    out: list[ContractChange] = []
    for kind, (olds, news) in (
        ("event", _group(old.events, new.events)),
        ("consumer", _group(old.consumers, new.consumers)),
    ):
        for key in sorted(olds.keys() | news.keys()):
            where = f"{name} @on({key})" if kind == "event" else f"{name} @consume({key})"
            if key not in news:
                text = "no longer handled here: what is published to it is not processed"
                out.append(_bad(where, f"{kind}.removed", text))
            elif key not in olds:
                noun = "subscription" if kind == "event" else "consumer"
                out.append(_ok(where, f"{kind}.added", f"new {noun}"))
            else:
                out += diff.payloads(where, f"{kind}.payload", olds[key], news[key])
    return out


def _group(
    old: list[EventContract] | list[StreamContract],
    new: list[EventContract] | list[StreamContract],
) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    def key(h: EventContract | StreamContract) -> str:
        if isinstance(h, EventContract):
            return h.pattern
        return f"{h.stream}, group={h.group}"

    groups: tuple[dict[str, list[Any]], dict[str, list[Any]]] = ({}, {})
    for side, handlers in zip(groups, (old, new), strict=True):
        for h in handlers:
            side.setdefault(key(h), []).append(h)
    return groups


def _event_types(
    diff: _Diff, old: dict[str, EventTypeContract], new: dict[str, EventTypeContract]
) -> list[ContractChange]:
    """The app's event types: data that outlives a deploy must stay readable."""
    out: list[ContractChange] = []
    for name in sorted(old.keys() | new.keys()):
        where = f"event {name}"
        was, now = old.get(name), new.get(name)
        if now is None:
            out.append(_ok(where, "event_type.removed", "no longer an event type of the app"))
        elif was is None:
            out.append(_ok(where, "event_type.added", f"new event type (version {now.version})"))
        elif now.version == was.version:
            for change in diff.accepts(where, "event_type.data", "data", was.data, now.data):
                if change.breaking:  # the fix: a new version and an upcaster to it
                    text = f"{change.message}; bump the version (now {now.version}) and upcast"
                    change = _bad(where, change.rule, text)  # noqa: PLW2901 - reworded
                out.append(change)
            if now.key != was.key:
                text = (
                    f"key changed from {was.key} to {now.key} at version {now.version}: the "
                    "same event gets another id, so idempotent consumers handle repeats again"
                )
                out.append(_bad(where, "event_type.key", text))
        elif now.version < was.version:
            text = (
                f"version went down from {was.version} to {now.version}: events written at "
                f"version {was.version} cannot be read (downcasting is not supported)"
            )
            out.append(_bad(where, "event_type.version", text))
        else:
            missing = [v for v in range(was.version, now.version) if v not in now.upcasters]
            if missing:
                steps = ", ".join(f"{v} -> {v + 1}" for v in missing)
                text = (
                    f"version {was.version} -> {now.version} without an upcaster {steps}: "
                    f"version {was.version} events and records can no longer be read "
                    f"(register @upcaster({name!r}, {missing[0]}, {missing[0] + 1}))"
                )
                out.append(_bad(where, "event_type.upcaster", text))
            else:
                text = f"version {was.version} -> {now.version}, older data upcast"
                out.append(_ok(where, "event_type.version", text))
    return out


def compare(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[ContractChange]:
    r"""Every change from ``old`` to ``new`` (two ``snapshot()`` results), breaking or not.

    A module with breaking changes whose version is not a major bump (a minor
    one for 0.x) gets one more breaking change, rule ``version``. The app's
    event types come last (rules ``event_type.*``): data that changed
    incompatibly at the same version, and a new version with no upcaster from
    the old one, are breaking.

    Raises:
        ConfigError: either argument is not a snapshot.

    Example::

        changes = compare(json.loads(Path("contract.json").read_text()), snapshot(kernel))
        assert not [c for c in changes if c.breaking], "\n".join(map(str, changes))
    """
    was, now = parse(old, source="the old snapshot"), parse(new, source="the new snapshot")
    diff = _Diff(was.schemas, now.schemas)
    out: list[ContractChange] = []
    for name in sorted(was.modules.keys() | now.modules.keys()):
        if name not in now.modules:
            text = "module removed: its RPC methods, jobs and subscriptions are gone"
            out.append(_bad(name, "module.removed", text))
            continue
        if name not in was.modules:
            out.append(_ok(name, "module.added", f"new module ({now.modules[name].version})"))
            continue
        old_mod, new_mod = was.modules[name], now.modules[name]
        changes = [
            *_rpcs(diff, name, old_mod, new_mod),
            *_jobs(diff, name, old_mod, new_mod),
            *_handlers(diff, name, old_mod, new_mod),
        ]
        out += changes
        breaking = sum(c.breaking for c in changes)
        bumped, least = _major(Version(old_mod.version), Version(new_mod.version))
        if breaking and not bumped:
            count = f"{breaking} breaking change{'s' if breaking > 1 else ''}"
            text = (
                f"{count} but version {old_mod.version} -> {new_mod.version} is not a major "
                f"bump (expected {least} or later)"
            )
            out.append(_bad(name, "version", text))
    out += _event_types(diff, was.event_types, now.event_types)
    return out
