"""Does one JSON Schema accept every value another accepts? Proven, or refused with a reason.

The check is conservative: it proves what the schemas msgspec and pydantic
write can express (types, unions, enums, bounds, arrays, tuples, objects,
named and recursive types) and refuses anything it cannot prove, naming it.
A false "breaking" costs a look; a false "compatible" costs an outage.

One rule is deliberately not JSON Schema's: an object that declares its
``properties`` and says nothing about others is taken to hold only those
(values built from a Struct, dataclass or model carry no undeclared field),
so adding an optional field stays compatible.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

from organelle.contracts._keywords import (
    ALL_TYPES,
    MAX_DEPTH,
    TYPED,
    admits,
    bound,
    brief,
    is_any,
    json_text,
    json_type,
    lower,
    strip,
    upper,
    within_lower,
    within_upper,
)
from organelle.contracts._render import OPAQUE, REF_PREFIX

__all__ = ["covers"]


# Types with so few values that an enum can list them all.
_SAMPLES: dict[str, list[Any]] = {"boolean": [True, False], "null": [None]}


def _path(path: str, text: str) -> str:
    return f"at {path}: {text}" if path else text


class _Covers:
    """One check: ``outer`` accepts every value of ``inner``; refs resolve per side."""

    def __init__(
        self,
        inner_defs: dict[str, Any],
        outer_defs: dict[str, Any],
        inner_label: str,
        outer_label: str,
    ) -> None:
        self.defs = (inner_defs, outer_defs)
        self.labels = (inner_label, outer_label)
        self.assumed: set[tuple[object, object]] = set()

    # references ---------------------------------------------------------------
    def _resolve(self, node: dict[str, Any], side: int) -> Any:
        ref = node["$ref"]
        name = (
            ref[len(REF_PREFIX) :] if isinstance(ref, str) and ref.startswith(REF_PREFIX) else None
        )
        if name is None or name not in self.defs[side]:
            return None
        target = self.defs[side][name]
        siblings = strip({k: v for k, v in node.items() if k not in ("$ref", "title")})
        # Extra constraints beside a $ref narrow it: kept on the outer side,
        # dropped on the inner side (which only makes the inner side wider).
        if siblings and side == 1:
            return {"allOf": [target, siblings]}
        return target

    def _outer_ref(self, node: dict[str, Any]) -> Any:
        return self._resolve(node, 1)

    def _attempt(self, inner: Any, outer: Any, path: str, depth: int) -> str | None:
        """A trial (a union branch): its assumptions are undone when it fails."""
        saved = set(self.assumed)
        reason = self.check(inner, outer, path, depth)
        if reason is not None:
            self.assumed = saved
        return reason

    # the check ------------------------------------------------------------------
    def check(self, inner: Any, outer: Any, path: str, depth: int = 0) -> str | None:  # noqa: C901, PLR0911, PLR0912 - one case per schema form
        """None when proven, else why not."""
        o_label = self.labels[1]
        if depth > MAX_DEPTH:
            return _path(path, "nested too deeply to compare")
        if inner is False or outer is True:
            return None
        if outer is False:
            return _path(path, f"{o_label} accepts no value here")
        if inner is True:
            inner = {}
        if not isinstance(inner, dict) or not isinstance(outer, dict):
            return _path(path, "not a JSON Schema")
        if "$ref" in inner or "$ref" in outer:
            key = (inner.get("$ref", id(inner)), outer.get("$ref", id(outer)))
            if key in self.assumed:
                return None  # a recursive type: holds if everything else does
            self.assumed.add(key)
            r_inner = self._resolve(inner, 0) if "$ref" in inner else inner
            r_outer = self._resolve(outer, 1) if "$ref" in outer else outer
            if r_inner is None or r_outer is None:
                return _path(path, f"cannot resolve {inner.get('$ref') or outer.get('$ref')}")
            return self.check(r_inner, r_outer, path, depth + 1)
        inner, outer = strip(inner), strip(outer)
        if is_any(outer):
            return None
        if OPAQUE in inner or OPAQUE in outer:
            if inner.get(OPAQUE) == outer.get(OPAQUE) and len(inner) == len(outer) == 1:
                return None
            return _path(
                path,
                f"cannot compare {brief(inner)} with {brief(outer)} (no JSON Schema for "
                f"{inner.get(OPAQUE) or outer.get(OPAQUE)})",
            )
        for union in ("anyOf", "oneOf"):
            if union in inner:
                for branch in inner[union]:
                    reason = self.check(branch, outer, path, depth + 1)
                    if reason is not None:
                        return reason
                return None
        if "allOf" in inner:
            reasons = [self._attempt(m, outer, path, depth + 1) for m in inner["allOf"]]
            return None if None in reasons else reasons[0]
        if isinstance(inner.get("type"), list):
            return self.check({"anyOf": _split(inner)}, outer, path, depth + 1)
        return self._check_outer(inner, outer, path, depth)

    def _check_outer(  # noqa: C901, PLR0911, PLR0912 - one case per schema form
        self, inner: dict[str, Any], outer: dict[str, Any], path: str, depth: int
    ) -> str | None:
        i_label, o_label = self.labels
        if "allOf" in outer:
            rest = {k: v for k, v in outer.items() if k != "allOf"}
            for member in [*outer["allOf"], *([] if is_any(rest) else [rest])]:
                reason = self.check(inner, member, path, depth + 1)
                if reason is not None:
                    return reason
            return None
        if isinstance(outer.get("type"), list):
            return self.check(inner, {"anyOf": _split(outer)}, path, depth + 1)
        for union in ("anyOf", "oneOf"):
            if union in outer:
                rest = {k: v for k, v in outer.items() if k != union}
                if not is_any(rest) and (reason := self.check(inner, rest, path, depth + 1)):
                    return reason
                reasons = []
                for branch in outer[union]:
                    reason = self._attempt(inner, branch, path, depth + 1)
                    if reason is None:
                        return None
                    reasons.append(reason)
                # One branch of the same kind failed: its reason says more than "not any of".
                kinds = self._kinds(inner, 0, depth)
                alike = [
                    r
                    for b, r in zip(outer[union], reasons, strict=True)
                    if self._kinds(b, 1, depth) & kinds
                ]
                if len(alike) == 1:
                    return alike[0]
                return _path(
                    path, f"{i_label} allows {brief(inner)}, {o_label} only {brief(outer)}"
                )
        if "enum" in inner or "const" in inner:
            values = inner["enum"] if "enum" in inner else [inner["const"]]
            for value in values:
                if not admits(outer, value, self._outer_ref, depth):
                    return _path(path, f"{i_label} allows {json_text(value)}, {o_label} does not")
            return None
        if "enum" in outer or "const" in outer:
            kind = inner.get("type")
            samples = _SAMPLES.get(kind or "", [])
            if samples and all(admits(outer, v, self._outer_ref, depth) for v in samples):
                return None
            return _path(
                path, f"{i_label} allows any {brief(inner)}, {o_label} only {brief(outer)}"
            )
        return self._check_typed(inner, outer, path, depth)

    def _check_typed(  # noqa: C901 - one case per JSON type
        self, inner: dict[str, Any], outer: dict[str, Any], path: str, depth: int
    ) -> str | None:
        i_label, o_label = self.labels
        t_in, t_out = inner.get("type"), outer.get("type")
        if t_out is not None:
            if t_in is None:
                return _path(path, f"{i_label} allows any value, {o_label} only {brief(outer)}")
            if t_in != t_out and not (t_in == "integer" and t_out == "number"):
                text = f"{i_label} allows {brief(inner)}, {o_label} expects {brief(outer)}"
                return _path(path, text)
        if t_in in ("integer", "number"):
            bare = self._numeric(inner, outer)
            reason = None if bare is None else _path(path, bare)
        elif t_in == "string":
            bare = self._string(inner, outer)
            reason = None if bare is None else _path(path, bare)
        elif t_in == "array":
            reason = self._array(inner, outer, path, depth)
        elif t_in == "object":
            reason = self._object(inner, outer, path, depth)
        else:
            reason = None
        if reason is not None:
            return reason
        for key in sorted(set(inner) | set(outer)):
            if key in ("type", "title") or (key in TYPED and t_in is not None):
                continue
            if inner.get(key) != outer.get(key):
                return _path(path, f"cannot compare {key!r}: {i_label} and {o_label} differ")
        return None

    def _numeric(self, inner: dict[str, Any], outer: dict[str, Any]) -> str | None:
        i_label, o_label = self.labels
        if not within_lower(lower(inner), lower(outer)):
            return f"{o_label} has a higher lower bound than {i_label} ({brief(outer)})"
        if not within_upper(upper(inner), upper(outer)):
            return f"{o_label} has a lower upper bound than {i_label} ({brief(outer)})"
        step = outer.get("multipleOf")
        if step is not None:
            own = inner.get("multipleOf", 1 if inner.get("type") == "integer" else None)
            if own is None or (Fraction(str(own)) / Fraction(str(step))).denominator != 1:
                return f"{o_label} needs multiples of {step}, {i_label} does not"
        return None

    def _string(self, inner: dict[str, Any], outer: dict[str, Any]) -> str | None:
        i_label, o_label = self.labels
        if bound(inner, "minLength", 0) < bound(outer, "minLength", 0):
            return f"{o_label} needs at least {outer['minLength']} characters"
        if bound(inner, "maxLength", math.inf) > bound(outer, "maxLength", math.inf):
            return f"{o_label} allows at most {outer['maxLength']} characters"
        for key in ("pattern", "format", "contentEncoding", "contentMediaType"):
            if key in outer and inner.get(key) != outer[key]:
                return f"{o_label} requires {key} {outer[key]!r}, {i_label} does not"
        return None

    def _array(
        self, inner: dict[str, Any], outer: dict[str, Any], path: str, depth: int
    ) -> str | None:
        i_label, o_label = self.labels
        if bound(inner, "minItems", 0) < bound(outer, "minItems", 0):
            return _path(path, f"{o_label} needs at least {outer['minItems']} items")
        max_in = bound(inner, "maxItems", math.inf)
        if max_in > bound(outer, "maxItems", math.inf):
            return _path(path, f"{o_label} allows at most {outer['maxItems']} items")
        if outer.get("uniqueItems") and not inner.get("uniqueItems"):
            return _path(path, f"{o_label} needs unique items, {i_label} allows repeats")
        pre_in, pre_out = inner.get("prefixItems", []), outer.get("prefixItems", [])
        rest_in, rest_out = inner.get("items", True), outer.get("items", True)
        for index in range(max(len(pre_in), len(pre_out)) + 1):
            if index >= max_in:
                break
            tail = index >= len(pre_in) and index >= len(pre_out)
            reason = self.check(
                pre_in[index] if index < len(pre_in) else rest_in,
                pre_out[index] if index < len(pre_out) else rest_out,
                f"{path}[]" if tail else f"{path}[{index}]",
                depth + 1,
            )
            if reason is not None:
                return reason
        return None

    def _object(  # noqa: C901, PLR0911, PLR0912 - the object rules read best together
        self, inner: dict[str, Any], outer: dict[str, Any], path: str, depth: int
    ) -> str | None:
        i_label, o_label = self.labels
        props_in, props_out = inner.get("properties", {}), outer.get("properties", {})
        extra_in = inner.get("additionalProperties", "properties" not in inner)
        extra_out = outer.get("additionalProperties", True)
        required_in = set(inner.get("required", ()))
        for name in outer.get("required", ()):
            if name not in required_in:
                return _path(
                    _join(path, name),
                    f"{o_label} requires this field, {i_label} values may omit it",
                )
        for name, schema in props_in.items():
            target = props_out.get(name, extra_out)
            if target is False:
                return _path(_join(path, name), f"{o_label} forbids this field, {i_label} has it")
            reason = self.check(schema, target, _join(path, name), depth + 1)
            if reason is not None:
                return reason
        if extra_in is not False:
            for name, schema in props_out.items():
                if name not in props_in:
                    reason = self.check(extra_in, schema, _join(path, name), depth + 1)
                    if reason is not None:
                        return reason
            if extra_out is False:
                return _path(path, f"{o_label} forbids undeclared fields, {i_label} allows them")
            reason = self.check(extra_in, extra_out, _join(path, "*"), depth + 1)
            if reason is not None:
                return reason
        if bound(inner, "minProperties", 0) < bound(outer, "minProperties", 0):
            return _path(path, f"{o_label} needs at least {outer['minProperties']} fields")
        if bound(inner, "maxProperties", math.inf) > bound(outer, "maxProperties", math.inf):
            return _path(path, f"{o_label} allows at most {outer['maxProperties']} fields")
        return None

    def _kinds(self, schema: Any, side: int, depth: int) -> frozenset[str]:
        """The JSON types a schema's values can have (integer counts as number)."""
        if schema is False:
            return frozenset()
        if not isinstance(schema, dict) or depth > MAX_DEPTH:
            return ALL_TYPES
        if "$ref" in schema:
            resolved = self._resolve(schema, side)
            return ALL_TYPES if resolved is None else self._kinds(resolved, side, depth + 1)
        for union in ("anyOf", "oneOf"):
            if union in schema:
                return frozenset[str]().union(
                    *(self._kinds(b, side, depth + 1) for b in schema[union])
                )
        if "enum" in schema or "const" in schema:
            values = schema["enum"] if "enum" in schema else [schema["const"]]
            kinds = set().union(*(json_type(v) for v in values))
        elif isinstance(schema.get("type"), (str, list)):
            kind = schema["type"]
            kinds = {kind} if isinstance(kind, str) else set(kind)
        else:
            return ALL_TYPES
        return frozenset("number" if k == "integer" else k for k in kinds)


def _split(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """``{"type": [a, b], …}`` as one schema per type (each keyword applies to its type)."""
    return [{**schema, "type": t} for t in schema["type"]]


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def covers(
    inner: Any,
    outer: Any,
    *,
    inner_defs: dict[str, Any],
    outer_defs: dict[str, Any],
    inner_label: str = "old",
    outer_label: str = "new",
) -> str | None:
    """Check that every value valid under ``inner`` is valid under ``outer``.

    Returns:
        None when that is proven; otherwise the reason it is not (or cannot be).
    """
    return _Covers(inner_defs, outer_defs, inner_label, outer_label).check(inner, outer, "")
