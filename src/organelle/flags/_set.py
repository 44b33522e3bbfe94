"""``FlagSet``: a module's flags as attributes, evaluated from the local cache.

A flag without rules is a plain instance attribute, so ``self.flags.x`` costs
what any attribute read costs. A flag with rules becomes a property of the
set's own class, which matches the rules against the principal of the
current request context (a rollout's hash is remembered per principal). Nothing here does I/O:
the kernel's flag cache calls ``apply`` when the store changes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Self

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from organelle.context import _current
from organelle.errors import DefinitionError, FlagNotFoundError, FlagRuleError
from organelle.flags._rules import UNSET, FlagRecord, Rule, bucket, principal_parts

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


_BUCKETS_MAX = 65_536  # per ruled flag: principals whose rollout bucket is remembered
_NO_HIT: tuple[Any, Any] = (object(), None)


class _Ruled:
    """A flag with rules, compiled for its property: evaluated on each read.

    Two caches keep a read near an attribute read, and both die with this
    object when the flag's record changes (``FlagSet._apply`` compiles anew):

    * the last principal read and its value, by identity — the checks of one
      request share their context's principal object (a ``Principal`` is frozen);
    * the value per what the rules can see of a principal — id, roles and the
      claims some rule names, a list claim as a tuple (the rules read them
      alike) — so the first read of a new principal object of a known user
      costs one dict lookup (``miss``). A claim that cannot be hashed even so
      (tables in a list) keeps its principal out: the rules are matched on
      every miss. Bounded like the rollout buckets.
    """

    __slots__ = (
        "anonymous",
        "buckets",
        "by_key",
        "checks",
        "claim",
        "claims",
        "fallback",
        "full",
        "hit",
    )

    def __init__(self, full: str, rules: tuple[Rule, ...], fallback: Any) -> None:
        self.full = full
        self.fallback = fallback
        self.buckets: dict[str, float] = {}
        # Per rule: ids, roles (None: any), claims (name, accepted), percent, value.
        self.checks = tuple(
            (
                frozenset(r.ids) or None,
                frozenset(r.roles) or None,
                tuple((k, frozenset(v)) for k, v in r.attributes.items()),
                r.percent,
                r.value,
            )
            for r in rules
        )
        self.claims = tuple(dict.fromkeys(k for r in rules for k in r.attributes))  # read by a rule
        self.claim = self.claims[0] if len(self.claims) == 1 else None  # the common case, unrolled
        self.by_key: dict[tuple[Any, ...], Any] = {}
        self.hit = _NO_HIT  # (principal, value), swapped whole: no torn read across threads
        self.anonymous = self.match(*principal_parts(None))  # no principal: known in advance

    def bucket_of(self, pid: str) -> float:
        found = self.buckets.get(pid)
        if found is None:
            if len(self.buckets) >= _BUCKETS_MAX:
                self.buckets.clear()
            found = self.buckets[pid] = bucket(self.full, pid)
        return found

    def evaluate(self, principal: Any) -> Any:
        """The first matching rule's value for ``principal``, else the fallback."""
        if principal is None:
            return self.anonymous
        hit = self.hit
        if hit[0] is principal:
            return hit[1]
        return self.miss(principal)

    def miss(self, principal: Any) -> Any:
        """A principal object not read last: its value by key, matched once per key.

        The hot path of a new request: ``principal_parts`` is inlined for a
        ``Principal`` of the usual types, and the key is one tuple of what the
        rules read.
        """
        try:
            pid, roles, claims = principal.id, principal.roles, principal.claims
        except AttributeError:  # a dict (off the wire) or a partial object
            pid, roles, claims = principal_parts(principal)
        else:  # odd types (an int id, a list of roles): principal_parts makes them right
            if type(pid) is not str or type(roles) is not frozenset or type(claims) is not dict:
                pid, roles, claims = principal_parts(principal)
        # Unrolled for none and one claim: a comprehension costs more than the dict lookup.
        if not self.claims:
            key: tuple[Any, ...] = (pid, roles)
        elif (claim := self.claim) is not None:
            have = claims.get(claim)
            key = (pid, roles, tuple(have) if type(have) is list else have)
        else:
            key = (pid, roles, *[_hashable(claims.get(name)) for name in self.claims])
        try:
            value = self.by_key[key]
        except KeyError:
            value = self._remember(key, pid, roles, claims)
        except TypeError:  # a set claim, or tables in a list claim
            value = self._unhashable(pid, roles, claims)
        self.hit = (principal, value)
        return value

    def _remember(
        self,
        key: tuple[Any, ...],
        pid: str | None,
        roles: frozenset[str],
        claims: Mapping[str, Any],
    ) -> Any:
        """Match a key seen for the first time and keep its value (bounded)."""
        if len(self.by_key) >= _BUCKETS_MAX:
            self.by_key.clear()
        value = self.by_key[key] = self.match(pid, roles, claims)
        return value

    def _unhashable(self, pid: str | None, roles: frozenset[str], claims: Mapping[str, Any]) -> Any:
        """Key lists as tuples and sets as frozensets (the rules treat them alike), else match."""
        key = (pid, roles, *(_hashable(claims.get(name)) for name in self.claims))
        try:
            return self.by_key[key]
        except KeyError:
            return self._remember(key, pid, roles, claims)
        except TypeError:  # still unhashable (a list of tables): match every time
            return self.match(pid, roles, claims)

    def match(self, pid: str | None, roles: frozenset[str], claims: Mapping[str, Any]) -> Any:
        """``Rule.matches`` over the rules in order, inlined: what a cache miss runs."""
        for ids, any_roles, attributes, percent, value in self.checks:
            if ids is not None and pid not in ids:
                continue
            if any_roles is not None and roles.isdisjoint(any_roles):
                continue
            if attributes and not _claims_in(claims, attributes):
                continue
            if percent is not None:
                if pid is None:
                    continue
                place = self.buckets.get(pid)
                if place is None:
                    place = self.bucket_of(pid)
                if place >= percent:
                    continue
            return value
        return self.fallback

    def read(self, _flags: FlagSet) -> Any:
        """The property's getter: the flag for the current request's principal."""
        ctx = _current.get()
        if ctx is None:
            return self.anonymous
        principal = ctx.principal
        hit = self.hit
        if hit[0] is principal:
            return hit[1]
        if principal is None:
            return self.anonymous
        return self.miss(principal)


def _hashable(have: Any) -> Any:
    """A claim as a key: a list as a tuple, a set as a frozenset (the rules read them alike)."""
    if type(have) is list:
        return tuple(have)
    if type(have) is set:
        return frozenset(have)
    return have


def _claims_in(claims: Mapping[str, Any], wanted: tuple[tuple[str, frozenset[Any]], ...]) -> bool:
    """Every claim condition holds (a loop, not ``all()`` over a generator: half the cost)."""
    for name, accepted in wanted:  # noqa: SIM110 - all() over a generator costs more here
        if not _claim_in(claims.get(name), accepted):
            return False
    return True


def _claim_in(have: Any, accepted: frozenset[Any]) -> bool:
    """``have`` (a value, or any of a list's) is accepted; a table equals no accepted scalar."""
    if not isinstance(have, (list, tuple, set, frozenset)):
        try:
            return have is not None and have in accepted
        except TypeError:  # a table
            return False
    try:
        return any(v in accepted for v in have if v is not None)
    except TypeError:  # a table in the list: as in Rule.matches, equal to none
        return any(v in accepted for v in have if v is not None and _hashes(v))


def _hashes(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


class FlagSet:
    """One module's flags, read as ``self.flags.<name>`` from the local cache.

    ``value(name, principal=...)`` evaluates a flag for a given principal
    rather than the current request's.

    Each set gets a class of its own: a flag with rules is a property on it
    (evaluated per read), a flag without rules an instance attribute.
    """

    _module: str
    _model: type[BaseModel]
    _ruled: dict[str, _Ruled]
    _reads: dict[str, _Ruled | None]  # every flag: its rules, or None (an instance attribute)
    _defaults: dict[str, Any]

    def __new__(cls, module: str, model: type[BaseModel]) -> Self:  # noqa: ARG004 - see __init__
        own = type(f"FlagSet[{module}]", (cls,), {"__module__": cls.__module__})
        return object.__new__(own)

    def __init__(self, module: str, model: type[BaseModel]) -> None:
        self._module = module
        self._model = model
        self._ruled = {}
        made = model()
        self._defaults = {name: getattr(made, name) for name in model.model_fields}
        self.__dict__.update(self._defaults)
        self._reads = dict.fromkeys(self._defaults)

    def value(self, name: str, *, principal: Any = CURRENT) -> Any:
        """The flag ``name`` for ``principal`` (default: the current request's).

        Raises:
            FlagNotFoundError: the module has no such flag.
        """
        try:  # one lookup tells an unknown flag, a plain one and a ruled one apart
            ruled = self._reads[name]
        except KeyError:
            raise FlagNotFoundError(
                f"module {self._module!r} has no flag {name!r}",
                details={"module": self._module, "flag": name},
            ) from None
        if ruled is None:
            return self.__dict__[name]
        if principal is CURRENT:
            return ruled.read(self)
        hit = ruled.hit  # evaluate() inlined: one call less per check
        if hit[0] is principal:
            return hit[1]
        return ruled.anonymous if principal is None else ruled.miss(principal)

    def _apply(self, flag: str, record: FlagRecord | None) -> None:
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
        own = type(self)
        if rules:
            ruled = self._ruled[flag] = self._reads[flag] = _Ruled(
                f"{self._module}.{flag}", rules, fallback
            )
            setattr(own, flag, property(ruled.read, doc=f"flag {flag} (ruled)"))
            self.__dict__.pop(flag, None)
        else:
            if self._ruled.pop(flag, None) is not None:
                delattr(own, flag)
            self._reads[flag] = None
            self.__dict__[flag] = fallback

    def _apply_all(self, records: Mapping[str, FlagRecord]) -> None:
        """Apply every flag of the model from ``records`` (absent: the default)."""
        for flag in self._defaults:
            self._apply(flag, records.get(flag))

    def __repr__(self) -> str:
        shown = {
            name: "<rules>" if name in self._ruled else self.__dict__[name]
            for name in self._defaults
        }
        return f"<FlagSet {self._module} {shown}>"
