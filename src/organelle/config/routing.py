"""The ``[routing]`` section: which version of a module a call to it goes to.

One table per called module (``[routing.pricing]``), read by the calling
node::

    [routing.pricing]
    weights = { "1.0.0" = 90, "2.0.0" = 10 }   # or ranges: { ">=2,<3" = 10 }
    sticky = "principal"                        # or "param:user_id", "meta:tenant"
    mirror = { version = "2.0.0", percent = 5 } # a shadow copy, its result dropped

    [[routing.pricing.rules]]                   # A/B: the first matching rule wins
    when = { "meta.tenant" = "acme" }
    version = "2.0.0"

Everything is validated here, at load and at reload, so a bad table is a
``ConfigError`` naming its key before any call is routed by it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import msgspec
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from organelle.errors import ConfigError

__all__ = [
    "MirrorSpec",
    "RouteRule",
    "RouteTable",
    "VersionSelector",
    "criterion_text",
    "parse_routing",
]

_MODULE = re.compile(r"^[A-Za-z0-9_\-]+$")
_CRITERIA = ("principal", "role", "meta.", "param.")
_MAX_PERCENT = 100.0


class _MirrorRaw(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    version: str
    percent: float
    max_in_flight: int = 32


class _RuleRaw(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    when: dict[str, Any]
    version: str


class _TableRaw(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    weights: dict[str, float] = msgspec.field(default_factory=dict)
    sticky: str = ""
    mirror: _MirrorRaw | None = None
    rules: list[_RuleRaw] = msgspec.field(default_factory=list)


@dataclass(frozen=True, slots=True)
class VersionSelector:
    """One version (``"2.0.0"``, compared as a version) or a PEP 440 range (``">=2,<3"``)."""

    text: str
    exact: Version | None
    spec: SpecifierSet | None

    @classmethod
    def parse(cls, text: str, key: str) -> VersionSelector:
        """Parse a version or a range; raise ``ConfigError`` naming ``key`` otherwise."""
        try:
            return cls(text, Version(text), None)
        except InvalidVersion:
            pass
        try:
            spec = SpecifierSet(text)
        except InvalidSpecifier:
            spec = None
        if spec is None or not str(spec):
            raise _bad(key, f"{text!r} is neither a version nor a version range (PEP 440)")
        return cls(text, None, spec)

    def matches(self, version: str) -> bool:
        """Whether a served version is this one, or in this range."""
        try:
            parsed = Version(version)
        except InvalidVersion:
            return False
        if self.exact is not None:
            return parsed == self.exact
        assert self.spec is not None  # noqa: S101 - one of the two is always set
        return self.spec.contains(parsed, prereleases=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class MirrorSpec:
    """A shadow copy of ``percent`` % of the calls to the ``version`` nodes, results dropped."""

    version: VersionSelector
    percent: float
    max_in_flight: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteRule:
    """An A/B rule: calls whose context or params match every criterion go to ``version``.

    ``criteria`` are ``(kind, name, accepted values)``; kind is ``principal``
    (its id), ``role`` (one of its roles), ``meta`` or ``param`` (by name).
    """

    criteria: tuple[tuple[str, str, frozenset[str]], ...]
    version: VersionSelector


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteTable:
    """The compiled ``[routing.<module>]`` table.

    Attributes:
        module: the called module.
        weights: ``(version selector, weight)`` in table order; empty: spread over
            every served version but the mirror's.
        sticky: ``(kind, name)`` of the key a caller sticks to a version by
            (``principal``, ``param`` or ``meta``), or ``None`` (random by weight).
        mirror: the shadow copy, if any.
        rules: A/B rules, tried in order before the weights.
    """

    module: str
    weights: tuple[tuple[VersionSelector, float], ...] = ()
    sticky: tuple[str, str] | None = None
    mirror: MirrorSpec | None = None
    rules: tuple[RouteRule, ...] = ()


def _bad(key: str, reason: str) -> ConfigError:
    return ConfigError(f"{key}: {reason}", details={"key": key})


def parse_routing(section: Any) -> dict[str, RouteTable]:
    """Validate the ``[routing]`` section into one table per module.

    Raises:
        ConfigError: naming the key (``routing.<module>.<key>``) and the reason.
    """
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise _bad("routing", "the [routing] section must be a table of tables")
    tables: dict[str, RouteTable] = {}
    for module, raw in section.items():
        key = f"routing.{module}"
        if not isinstance(module, str) or not _MODULE.match(module):
            raise _bad(key, "a routing table is named after a module")
        if not isinstance(raw, dict):
            raise _bad(key, "expected a table")
        try:
            parsed = msgspec.convert(raw, _TableRaw, strict=False)
        except msgspec.ValidationError as exc:
            text = str(exc)
            reason, _, where = text.partition(" - at `$.")
            label = f"{key}.{where.rstrip('`')}" if where else key
            raise _bad(label, reason) from None
        tables[module] = _compile(module, parsed, key)
    return tables


def _compile(module: str, raw: _TableRaw, key: str) -> RouteTable:
    weights = []
    for text, weight in raw.weights.items():
        if not math.isfinite(weight) or weight < 0:
            raise _bad(f"{key}.weights", f"weight of {text!r} must be a number >= 0")
        weights.append((VersionSelector.parse(text, f"{key}.weights"), float(weight)))
    if weights and sum(w for _, w in weights) <= 0:
        raise _bad(f"{key}.weights", "at least one weight must be > 0")
    mirror = None
    if raw.mirror is not None:
        m = raw.mirror
        if not 0 < m.percent <= _MAX_PERCENT:
            raise _bad(f"{key}.mirror.percent", "must be > 0 and <= 100")
        if m.max_in_flight < 1:
            raise _bad(f"{key}.mirror.max_in_flight", "must be >= 1")
        mirror = MirrorSpec(
            version=VersionSelector.parse(m.version, f"{key}.mirror.version"),
            percent=m.percent,
            max_in_flight=m.max_in_flight,
        )
    rules = tuple(_rule(r, f"{key}.rules[{i}]") for i, r in enumerate(raw.rules))
    return RouteTable(
        module=module,
        weights=tuple(weights),
        sticky=_sticky(raw.sticky, f"{key}.sticky"),
        mirror=mirror,
        rules=rules,
    )


def _sticky(text: str, key: str) -> tuple[str, str] | None:
    if not text:
        return None
    if text == "principal":
        return ("principal", "")
    kind, sep, name = text.partition(":")
    if sep and kind in ("param", "meta") and name:
        return (kind, name)
    raise _bad(key, f"{text!r}: expected 'principal', 'param:<name>' or 'meta:<key>'")


def _flatten(when: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"meta": {"tenant": "x"}}`` (TOML's dotted keys) as ``{"meta.tenant": "x"}``."""
    out: dict[str, Any] = {}
    for name, value in when.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{path}."))
        else:
            out[path] = value
    return out


def _rule(raw: _RuleRaw, key: str) -> RouteRule:
    when = _flatten(raw.when)
    if not when:
        raise _bad(f"{key}.when", "a rule needs at least one criterion")
    criteria = []
    for name, value in when.items():
        kind, _, field = name.partition(".")
        if not name.startswith(_CRITERIA) or (kind in ("meta", "param") and not field):
            raise _bad(
                f"{key}.when.{name}",
                "expected 'principal', 'role', 'meta.<key>' or 'param.<name>'",
            )
        if kind in ("principal", "role") and field:
            raise _bad(f"{key}.when.{name}", f"{kind!r} takes no sub-key")
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, str | int | bool) for v in values):
            raise _bad(f"{key}.when.{name}", "expected a string, number or list of them")
        criteria.append((kind, field, frozenset(criterion_text(v) for v in values)))
    return RouteRule(
        criteria=tuple(criteria), version=VersionSelector.parse(raw.version, f"{key}.version")
    )


def criterion_text(value: object) -> str:
    """How a criterion's value and a call's value are compared: as text (JSON's for booleans)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
