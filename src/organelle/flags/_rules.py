"""The stored form of a flag: an override value and rules matched against a principal.

A record is plain data (JSON-able, kept in the Store) so that the CLI, the
dashboard and every node read the same thing. A rule serves its ``value`` to
a principal when every condition it names holds; within one condition any of
the listed values is enough::

    {"value": true, "roles": ["beta"], "attributes": {"tenant": ["acme"]}, "percent": 25}

``percent`` keeps a stable share of the principals that pass the other
conditions: the bucket of a principal is a hash of the flag's full name and
the principal's id, so raising 10 → 20 keeps the first 10 % in.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from organelle.errors import FlagRuleError

__all__ = [
    "UNSET",
    "FlagRecord",
    "Rule",
    "bucket",
    "parse_record",
    "parse_rule",
    "principal_parts",
]

_RULE_KEYS = frozenset({"value", "ids", "roles", "attributes", "percent"})
_SCALARS = (str, int, float, bool)


class _Unset:
    """No stored override: the model's default holds."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


def bucket(flag: str, principal_id: str) -> float:
    """The principal's place in ``[0, 100)`` for ``flag``: stable across processes and runs."""
    digest = hashlib.blake2b(f"{flag}\x00{principal_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") * 100.0 / 2**64


_NOBODY: tuple[str | None, frozenset[str], Mapping[str, Any]] = (None, frozenset(), {})


def principal_parts(principal: Any) -> tuple[str | None, frozenset[str], Mapping[str, Any]]:
    """Id, roles and claims of a ``Principal`` or of its dict form (as it crosses the wire)."""
    if principal is None:
        return _NOBODY
    try:  # a Principal (or alike): plain attribute reads, the common case
        pid, roles, claims = principal.id, principal.roles, principal.claims
    except AttributeError:
        if isinstance(principal, Mapping):
            pid, roles = principal.get("id"), principal.get("roles")
            claims = principal.get("claims")
        else:
            pid = getattr(principal, "id", None)
            roles = getattr(principal, "roles", None)
            claims = getattr(principal, "claims", None)
    if pid is not None and type(pid) is not str:
        pid = str(pid)
    if type(roles) is not frozenset:
        roles = frozenset(roles or ())
    if type(claims) is not dict and not isinstance(claims, Mapping):
        claims = {}
    return pid, roles, claims


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """Serve ``value`` to the principals that meet every condition given.

    Attributes:
        value: what the flag reads as for a matching principal.
        ids: principal ids (any one); empty: any id.
        roles: roles (the principal has any one); empty: any roles.
        attributes: claim name → accepted values (a list claim matches on overlap).
        percent: keep this share (0 to 100) of the principals that pass the rest,
            by a stable hash of flag name and principal id; ``None``: all of them.
    """

    value: Any
    ids: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    attributes: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    percent: float | None = None

    def matches(self, flag: str, principal: Any) -> bool:
        """Whether this rule applies to ``principal`` for the flag named ``flag``."""
        pid, roles, claims = principal_parts(principal)
        return self.matches_parts(pid, roles, claims, lambda p: bucket(flag, p))

    def matches_parts(
        self,
        pid: str | None,
        roles: frozenset[str],
        claims: Mapping[str, Any],
        bucket_of: Callable[[str], float],
    ) -> bool:
        """``matches`` on a principal already taken apart (the hot path: once per check)."""
        if self.ids and pid not in self.ids:
            return False
        if self.roles and roles.isdisjoint(self.roles):
            return False
        for name, accepted in self.attributes.items():
            have = claims.get(name)
            values = have if isinstance(have, (list, tuple, set, frozenset)) else (have,)
            if not any(v in accepted for v in values if v is not None):
                return False
        if self.percent is None:
            return True
        return pid is not None and bucket_of(pid) < self.percent

    def to_data(self) -> dict[str, Any]:
        """The rule as stored: only the conditions it has."""
        data: dict[str, Any] = {"value": self.value}
        if self.ids:
            data["ids"] = list(self.ids)
        if self.roles:
            data["roles"] = list(self.roles)
        if self.attributes:
            data["attributes"] = {k: list(v) for k, v in self.attributes.items()}
        if self.percent is not None:
            data["percent"] = self.percent
        return data


def _strings(raw: Any, where: str) -> tuple[str, ...]:
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) and i for i in items):
        raise _bad(where, "must be a list of non-empty strings")
    return tuple(items)


def _bad(where: str, message: str) -> FlagRuleError:
    return FlagRuleError(f"{where}: {message}", errors=[{"field": where, "message": message}])


def parse_rule(raw: Any, where: str = "rule") -> Rule:
    """Check one rule given as data; the value is checked by the caller, who knows its type.

    Raises:
        FlagRuleError: not a table, an unknown key, a condition of the wrong shape,
            ``percent`` outside 0 to 100.
    """
    if isinstance(raw, Rule):
        return raw
    if not isinstance(raw, Mapping):
        raise _bad(where, f"a rule is a table, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _RULE_KEYS)
    if unknown:
        raise _bad(where, f"unknown keys {unknown}; a rule has {sorted(_RULE_KEYS)}")
    if "value" not in raw:
        raise _bad(f"{where}.value", "a rule needs the value it serves")
    attributes: dict[str, tuple[Any, ...]] = {}
    raw_attrs = raw.get("attributes") or {}
    if not isinstance(raw_attrs, Mapping):
        raise _bad(f"{where}.attributes", "must be a table of claim name to values")
    for name, accepted in raw_attrs.items():
        values = accepted if isinstance(accepted, (list, tuple)) else [accepted]
        if (
            not isinstance(name, str)
            or not values
            or not all(isinstance(v, _SCALARS) for v in values)
        ):
            raise _bad(
                f"{where}.attributes.{name}", "must be a value or a non-empty list of values"
            )
        attributes[name] = tuple(values)
    percent = raw.get("percent")
    if percent is not None:
        ok = isinstance(percent, (int, float)) and not isinstance(percent, bool)
        if not ok or not (0 <= percent <= 100) or math.isnan(percent):  # noqa: PLR2004
            raise _bad(f"{where}.percent", f"must be a number from 0 to 100, got {percent!r}")
        percent = float(percent)
    return Rule(
        value=raw["value"],
        ids=_strings(raw.get("ids", ()), f"{where}.ids"),
        roles=_strings(raw.get("roles", ()), f"{where}.roles"),
        attributes=attributes,
        percent=percent,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class FlagRecord:
    """What the cluster store holds for one flag.

    Attributes:
        value: the override for everyone the rules do not match (``UNSET``: the default).
        rules: checked in order; the first that matches gives the value.
        by: who made the last change; ``at``: when (Unix time).
        previous: the record this one replaced (value and rules), for the audit event.
    """

    value: Any = UNSET
    rules: tuple[Rule, ...] = ()
    by: str = ""
    at: float = 0.0
    previous: dict[str, Any] | None = None

    def state(self) -> dict[str, Any]:
        """Value and rules as data (what an audit event's ``old`` and ``new`` show)."""
        data: dict[str, Any] = {"rules": [r.to_data() for r in self.rules]}
        if self.value is not UNSET:
            data["value"] = self.value
        return data

    def to_data(self) -> dict[str, Any]:
        """The record as stored."""
        return {**self.state(), "by": self.by, "at": self.at, "previous": self.previous}


def parse_record(raw: Any, where: str) -> FlagRecord:
    """Read a stored record back (shape only; values are checked against the model later).

    Raises:
        FlagRuleError: the stored data is not a record.
    """
    if not isinstance(raw, Mapping):
        raise _bad(where, f"a stored flag is a table, got {type(raw).__name__}")
    rules = raw.get("rules") or []
    if not isinstance(rules, list):
        raise _bad(f"{where}.rules", "must be a list")
    previous = raw.get("previous")
    return FlagRecord(
        value=raw.get("value", UNSET),
        rules=tuple(parse_rule(r, f"{where}.rules[{i}]") for i, r in enumerate(rules)),
        by=str(raw.get("by", "")),
        at=float(raw.get("at", 0.0)),
        previous=previous if isinstance(previous, dict) else None,
    )
