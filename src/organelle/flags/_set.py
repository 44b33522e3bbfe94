"""``FlagSet``: a module's flags as attributes, evaluated from the local cache.

A flag without rules is a plain instance attribute, so ``self.flags.x`` costs
what any attribute read costs. A flag with rules is taken out of the instance
dict, so the read falls through to ``__getattr__``, which matches the rules
against the principal of the current request context. Nothing here does I/O:
the kernel's flag cache calls ``apply`` when the store changes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from organelle.context import _current
from organelle.errors import DefinitionError, FlagNotFoundError, FlagRuleError
from organelle.flags._rules import UNSET, FlagRecord, Rule

__all__ = ["CURRENT", "FlagSet", "check_value", "flags_model"]

log = logging.getLogger("organelle.flags")

_RESERVED = frozenset({"value"})  # FlagSet's own method
CURRENT: Any = object()
"""``principal=`` default: the principal of the current request context."""


def flags_model(cls: type) -> type[BaseModel] | None:
    """The ``Flags`` model a module class declares, checked; ``None`` when it has none.

    Raises:
        DefinitionError: not a pydantic model, a field without a default, or a
            field named like a ``FlagSet`` method.
    """
    model = getattr(cls, "Flags", None)
    if model is None:
        return None
    name = getattr(cls, "name", "") or cls.__name__
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise DefinitionError(f"module {name!r}: Flags must be a pydantic BaseModel subclass")
    for field, info in model.model_fields.items():
        if info.is_required():
            raise DefinitionError(
                f"module {name!r}: flag {field!r} needs a default (what it reads as until set)"
            )
        if field in _RESERVED:
            raise DefinitionError(f"module {name!r}: a flag cannot be named {field!r}")
    return model


def check_value(model: type[BaseModel], module: str, flag: str, value: Any) -> Any:
    """``value`` as the flag's type makes it (``"3"`` → ``3`` for an int flag).

    Raises:
        FlagNotFoundError: the model has no such flag.
        FlagRuleError: the value does not fit the flag's type or constraints.
    """
    if flag not in model.model_fields:
        raise FlagNotFoundError(
            f"module {module!r} has no flag {flag!r} (it has {', '.join(model.model_fields)})",
            details={"module": module, "flag": flag},
        )
    try:
        return getattr(model.model_validate({flag: value}), flag)
    except PydanticValidationError as exc:
        where = f"{module}.{flag}"
        message = "; ".join(e["msg"] for e in exc.errors())
        raise FlagRuleError(
            f"{where}: {value!r} does not fit the flag: {message}",
            errors=[{"field": where, "message": message}],
        ) from None


@dataclass(frozen=True, slots=True)
class _Ruled:
    """A flag with rules: what ``__getattr__`` evaluates."""

    full: str
    rules: tuple[Rule, ...]
    fallback: Any

    def evaluate(self, principal: Any) -> Any:
        for rule in self.rules:
            if rule.matches(self.full, principal):
                return rule.value
        return self.fallback


class FlagSet:
    """One module's flags, read as ``self.flags.<name>`` from the local cache.

    ``value(name, principal=...)`` evaluates a flag for a given principal
    rather than the current request's.
    """

    def __init__(self, module: str, model: type[BaseModel]) -> None:
        self._module = module
        self._model = model
        self._ruled: dict[str, _Ruled] = {}
        made = model()
        self._defaults: dict[str, Any] = {name: getattr(made, name) for name in model.model_fields}
        self.__dict__.update(self._defaults)

    @property
    def model(self) -> type[BaseModel]:
        """The module's ``Flags`` model."""
        return self._model

    def __getattr__(self, name: str) -> Any:
        # Only reached for flags with rules (the others live in the instance dict).
        ruled = self.__dict__.get("_ruled", {}).get(name)
        if ruled is None:
            raise AttributeError(f"module {self._module!r} has no flag {name!r}")
        ctx = _current.get()
        return ruled.evaluate(None if ctx is None else ctx.principal)

    def value(self, name: str, *, principal: Any = CURRENT) -> Any:
        """The flag ``name`` for ``principal`` (default: the current request's).

        Raises:
            FlagNotFoundError: the module has no such flag.
        """
        if name not in self._defaults:
            raise FlagNotFoundError(
                f"module {self._module!r} has no flag {name!r}",
                details={"module": self._module, "flag": name},
            )
        ruled = self._ruled.get(name)
        if ruled is None:
            return self.__dict__[name]
        if principal is CURRENT:
            ctx = _current.get()
            principal = None if ctx is None else ctx.principal
        return ruled.evaluate(principal)

    def apply(self, flag: str, record: FlagRecord | None) -> None:
        """Take a stored record (``None``: none stored); a record that does not fit is ignored.

        A record written for another version of the model must not take the
        node down: it is logged and the flag keeps its default.
        """
        if flag not in self._defaults:
            return
        fallback = self._defaults[flag]
        rules: tuple[Rule, ...] = ()
        if record is not None:
            try:
                if record.value is not UNSET:
                    fallback = check_value(self._model, self._module, flag, record.value)
                rules = tuple(
                    Rule(
                        value=check_value(self._model, self._module, flag, r.value),
                        ids=r.ids,
                        roles=r.roles,
                        attributes=r.attributes,
                        percent=r.percent,
                    )
                    for r in record.rules
                )
            except (FlagRuleError, FlagNotFoundError) as exc:
                log.warning("stored flag %s.%s ignored: %s", self._module, flag, exc)
                fallback, rules = self._defaults[flag], ()
        if rules:
            self._ruled[flag] = _Ruled(f"{self._module}.{flag}", rules, fallback)
            self.__dict__.pop(flag, None)
        else:
            self._ruled.pop(flag, None)
            self.__dict__[flag] = fallback

    def apply_all(self, records: Mapping[str, FlagRecord]) -> None:
        """Apply every flag of the model from ``records`` (absent: the default)."""
        for flag in self._defaults:
            self.apply(flag, records.get(flag))

    def __repr__(self) -> str:
        shown = {
            name: "<rules>" if name in self._ruled else self.__dict__[name]
            for name in self._defaults
        }
        return f"<FlagSet {self._module} {shown}>"
