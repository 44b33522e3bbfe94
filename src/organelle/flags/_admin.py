"""``FlagAdmin``: list and change flags in the cluster store (the kernel, the CLI, the dashboard).

Every change is a compare-and-set of the flag's record, which keeps the record
it replaced under ``previous`` (so each node's audit event shows the exact old
state), then a bump of one counter key that polling nodes watch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from organelle.errors import ConflictError, FlagNotFoundError
from organelle.flags._rules import UNSET, FlagRecord, Rule, parse_record, parse_rule
from organelle.flags._set import check_value

if TYPE_CHECKING:
    from pydantic import BaseModel

    from organelle.storage import Store

__all__ = ["PREFIX", "REV_KEY", "FlagAdmin", "FlagInfo", "flag_key", "split_key"]

PREFIX = "_flags."
"""The reserved part of the Store's key space: ``_flags.<module>.<flag>``."""
REV_KEY = "_flags._rev"
"""Bumped by every change: what a node without a cross-process watch polls."""
_CAS_ATTEMPTS = 20


def flag_key(module: str, flag: str) -> str:
    """The Store key of a flag's record."""
    return f"{PREFIX}{module}.{flag}"


def split_key(key: str) -> tuple[str, str] | None:
    """``(module, flag)`` of a record key; ``None`` for the counter or a foreign key."""
    if not key.startswith(PREFIX):
        return None
    module, dot, flag = key[len(PREFIX) :].partition(".")
    return (module, flag) if dot and module and flag else None


@dataclass(frozen=True, slots=True, kw_only=True)
class FlagInfo:
    """One flag as listed: its type, default and what is stored for it.

    Attributes:
        module, name: the flag is ``module.name``.
        type: its annotation, for people (``bool``, ``int``, ``Literal['a', 'b']``).
        default: the model's default.
        value: the stored override, or ``UNSET``.
        rules: the stored rules, as data.
        by, at: who changed it last, and when (Unix time; 0: never).
    """

    module: str
    name: str
    type: str
    default: Any
    value: Any = UNSET
    rules: tuple[dict[str, Any], ...] = ()
    by: str = ""
    at: float = 0.0

    @property
    def effective(self) -> Any:
        """What the flag reads as for a principal no rule matches."""
        return self.default if self.value is UNSET else self.value

    def to_data(self) -> dict[str, Any]:
        """JSON-able form (the dashboard's)."""
        return {
            "module": self.module,
            "name": self.name,
            "type": self.type,
            "default": self.default,
            "effective": self.effective,
            "overridden": self.value is not UNSET,
            "rules": list(self.rules),
            "by": self.by,
            "at": self.at,
        }


def _type_name(annotation: Any) -> str:
    return annotation.__name__ if isinstance(annotation, type) else str(annotation)


class FlagAdmin:
    """Reads and writes flag records for the modules ``models`` names.

    Args:
        store: the cluster store (the kernel's), asked for on each use.
        models: module name → its ``Flags`` model, asked for on each use.
        by: who a change is attributed to when the caller names no one.
    """

    def __init__(
        self,
        store: Callable[[], Store],
        models: Callable[[], Mapping[str, type[BaseModel]]],
        *,
        by: Callable[[], str],
    ) -> None:
        self._store = store
        self._models = models
        self._by = by

    def _model(self, module: str, flag: str | None = None) -> type[BaseModel]:
        model = self._models().get(module)
        if model is None:
            known = ", ".join(sorted(self._models())) or "none"
            raise FlagNotFoundError(
                f"no module {module!r} with flags here (modules with flags: {known})",
                details={"module": module, "flag": flag},
            )
        if flag is not None and flag not in model.model_fields:
            raise FlagNotFoundError(
                f"module {module!r} has no flag {flag!r} (it has {', '.join(model.model_fields)})",
                details={"module": module, "flag": flag},
            )
        return model

    @staticmethod
    def _split(target: str) -> tuple[str, str]:
        module, dot, flag = target.partition(".")
        if not dot or not module or not flag:
            raise FlagNotFoundError(
                f"name a flag as module.flag, got {target!r}", details={"flag": target}
            )
        return module, flag

    async def list(self, module: str | None = None) -> list[FlagInfo]:
        """Every flag of every module with flags (or of ``module``), with what is stored."""
        models = self._models()
        if module is not None:
            self._model(module)
        names = [m for m in sorted(models) if module is None or m == module]
        keys = [flag_key(m, f) for m in names for f in models[m].model_fields]
        entries = await self._store().get_many(keys) if keys else {}
        found: list[FlagInfo] = []
        for name in names:
            model = models[name]
            for flag, info in model.model_fields.items():
                entry = entries.get(flag_key(name, flag))
                record = FlagRecord() if entry is None else parse_record(entry.value, entry.key)
                found.append(
                    FlagInfo(
                        module=name,
                        name=flag,
                        type=_type_name(info.annotation),
                        default=info.get_default(call_default_factory=True),
                        value=record.value,
                        rules=tuple(r.to_data() for r in record.rules),
                        by=record.by,
                        at=record.at,
                    )
                )
        return found

    async def set(self, target: str, value: Any, *, by: str | None = None) -> FlagRecord:
        """Serve ``value`` to everyone the flag's rules do not match.

        Raises:
            FlagNotFoundError: no such module or flag.
            FlagRuleError: the value does not fit the flag's type.
        """
        module, flag = self._split(target)
        checked = check_value(self._model(module, flag), module, flag, value)
        return await self._change(module, flag, by, lambda old: (checked, old.rules))

    async def rule(
        self,
        target: str,
        rules: Iterable[Mapping[str, Any] | Rule],
        *,
        replace: bool = False,
        by: str | None = None,
    ) -> FlagRecord:
        """Append ``rules`` to the flag's rules (``replace``: instead of them; ``[]`` clears).

        Raises:
            FlagNotFoundError: no such module or flag.
            FlagRuleError: a rule of the wrong shape, or a value that does not fit.
        """
        module, flag = self._split(target)
        model = self._model(module, flag)
        parsed = []
        for i, raw in enumerate(rules):
            rule = parse_rule(raw, f"{target}.rules[{i}]")
            checked = check_value(model, module, flag, rule.value)
            parsed.append(
                Rule(
                    value=checked,
                    ids=rule.ids,
                    roles=rule.roles,
                    attributes=rule.attributes,
                    percent=rule.percent,
                )
            )
        new = tuple(parsed)
        return await self._change(
            module, flag, by, lambda old: (old.value, new if replace else (*old.rules, *new))
        )

    async def reset(self, target: str, *, by: str | None = None) -> FlagRecord:
        """Drop the override and the rules: the flag reads as its default again.

        Raises:
            FlagNotFoundError: no such module or flag.
        """
        module, flag = self._split(target)
        self._model(module, flag)
        return await self._change(module, flag, by, lambda _old: (UNSET, ()))

    async def _change(
        self,
        module: str,
        flag: str,
        by: str | None,
        make: Callable[[FlagRecord], tuple[Any, tuple[Rule, ...]]],
    ) -> FlagRecord:
        store = self._store()
        key = flag_key(module, flag)
        for _ in range(_CAS_ATTEMPTS):
            entry = await store.get(key)
            old = FlagRecord() if entry is None else parse_record(entry.value, key)
            value, rules = make(old)
            new = FlagRecord(
                value=value, rules=rules, by=by or self._by(), at=time.time(), previous=old.state()
            )
            try:
                await store.compare_and_set(
                    key, new.to_data(), revision=None if entry is None else entry.revision
                )
            except ConflictError:
                continue  # someone changed it meanwhile: apply the change to theirs
            await store.incr(REV_KEY)
            return new
        raise ConflictError(f"flag {module}.{flag} kept changing under {_CAS_ATTEMPTS} attempts")
