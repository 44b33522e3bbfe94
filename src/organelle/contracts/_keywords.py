"""What the comparison knows of JSON Schema keywords: annotations, bounds, values, names.

``admits`` checks one JSON value (an enum member) against a schema and
``brief`` names a schema for a person: ``integer | null``, ``Quote``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from organelle.contracts._render import OPAQUE

__all__ = [
    "ALL_TYPES",
    "ANNOTATIONS",
    "ARRAY",
    "MAX_DEPTH",
    "NUMERIC",
    "OBJECT",
    "STRING",
    "TYPED",
    "admits",
    "bound",
    "brief",
    "is_any",
    "json_text",
    "json_type",
    "lower",
    "strip",
    "upper",
    "within_lower",
    "within_upper",
]

ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "default",
        "examples",
        "$comment",
        "readOnly",
        "writeOnly",
        "deprecated",
        "discriminator",
        "externalDocs",
    }
)
NUMERIC = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"})
STRING = frozenset(
    {"minLength", "maxLength", "pattern", "format", "contentEncoding", "contentMediaType"}
)
ARRAY = frozenset({"items", "prefixItems", "minItems", "maxItems", "uniqueItems"})
OBJECT = frozenset(
    {"properties", "required", "additionalProperties", "minProperties", "maxProperties"}
)
TYPED = NUMERIC | STRING | ARRAY | OBJECT
MAX_DEPTH = 100
ALL_TYPES = frozenset({"null", "boolean", "number", "string", "array", "object"})


def strip(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema without annotations, except ``title``: it names the type in messages."""
    return {k: v for k, v in schema.items() if k == "title" or k not in ANNOTATIONS}


def is_any(schema: dict[str, Any]) -> bool:
    """Whether a stripped schema constrains nothing."""
    return not schema.keys() - {"title"}


def json_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _key(value: Any) -> tuple[str, Any]:
    """JSON equality: ``1 == 1.0`` but ``True != 1``."""
    if isinstance(value, bool) or value is None:
        return ("c", value)
    if isinstance(value, (int, float)):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    return ("j", json_text(value))


def json_type(value: Any) -> set[str]:
    if value is None:
        return {"null"}
    if isinstance(value, bool):
        return {"boolean"}
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return {"integer", "number"}
    if isinstance(value, float):
        return {"number"}
    if isinstance(value, str):
        return {"string"}
    return {"array"} if isinstance(value, list) else {"object"}


def lower(s: dict[str, Any]) -> tuple[float, bool] | None:
    """The tightest lower bound as (value, exclusive)."""
    lo, ex = s.get("minimum"), s.get("exclusiveMinimum")
    if ex is not None and (lo is None or ex >= lo):
        return (ex, True)
    return None if lo is None else (lo, False)


def upper(s: dict[str, Any]) -> tuple[float, bool] | None:
    hi, ex = s.get("maximum"), s.get("exclusiveMaximum")
    if ex is not None and (hi is None or ex <= hi):
        return (ex, True)
    return None if hi is None else (hi, False)


def within_lower(inner: tuple[float, bool] | None, outer: tuple[float, bool] | None) -> bool:
    if outer is None:
        return True
    if inner is None:
        return False
    return inner[0] > outer[0] or (inner[0] == outer[0] and (inner[1] or not outer[1]))


def within_upper(inner: tuple[float, bool] | None, outer: tuple[float, bool] | None) -> bool:
    if outer is None:
        return True
    if inner is None:
        return False
    return inner[0] < outer[0] or (inner[0] == outer[0] and (inner[1] or not outer[1]))


def bound(s: dict[str, Any], key: str, default: float) -> float:
    value = s.get(key)
    return default if value is None else float(value)


def admits(  # noqa: C901, PLR0911, PLR0912 - a small validator
    schema: Any, value: Any, resolve: Callable[[dict[str, Any]], Any], depth: int = 0
) -> bool:
    """Whether ``value`` is valid under ``schema`` (False when unsure); ``resolve`` reads $ref."""
    if depth > MAX_DEPTH or schema is False:
        return False
    if schema is True:
        return True
    if not isinstance(schema, dict):
        return False
    if "$ref" in schema:
        resolved = resolve(schema)
        return resolved is not None and admits(resolved, value, resolve, depth + 1)
    schema = strip(schema)
    if "anyOf" in schema or "oneOf" in schema:
        branches = schema.get("anyOf") or schema.get("oneOf")
        hits = sum(admits(b, value, resolve, depth + 1) for b in branches)
        rest = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
        if not (hits == 1 or (hits and "anyOf" in schema)):
            return False
        return admits(rest, value, resolve, depth + 1)
    if "allOf" in schema:
        rest = {k: v for k, v in schema.items() if k != "allOf"}
        members = [*schema["allOf"], rest]
        return all(admits(m, value, resolve, depth + 1) for m in members)
    if "enum" in schema and _key(value) not in {_key(v) for v in schema["enum"]}:
        return False
    if "const" in schema and _key(value) != _key(schema["const"]):
        return False
    kind = schema.get("type")
    kinds = {kind} if isinstance(kind, str) else set(kind or ())
    if kinds and not kinds & json_type(value):
        return False
    checks = set(schema) - {"type", "enum", "const", "title"}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        step = schema.get("multipleOf")
        if checks - NUMERIC or (
            step and (Fraction(str(value)) / Fraction(str(step))).denominator != 1
        ):
            return False
        exact = (value, False)
        return within_lower(exact, lower(schema)) and within_upper(exact, upper(schema))
    if isinstance(value, str):
        if checks - {"minLength", "maxLength", "pattern"}:
            return False
        if not bound(schema, "minLength", 0) <= len(value) <= bound(schema, "maxLength", math.inf):
            return False
        try:
            return "pattern" not in schema or re.search(schema["pattern"], value) is not None
        except re.error:
            return False
    return not checks


def brief(schema: Any, limit: int = 4) -> str:  # noqa: C901, PLR0911, PLR0912 - one case per form
    """A short human name for a schema: ``integer | null``, ``Quote``, ``array of string``."""
    if schema is True or schema == {}:
        return "any"
    if schema is False:
        return "nothing"
    if not isinstance(schema, dict):
        return "?"
    if isinstance(schema.get("$ref"), str):
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if OPAQUE in schema:
        return str(schema[OPAQUE]).rsplit(".", 1)[-1]
    for union, sep in (("anyOf", " | "), ("oneOf", " | "), ("allOf", " & ")):
        if union in schema:
            return sep.join(brief(b, limit) for b in schema[union])
    if "const" in schema:
        return json_text(schema["const"])
    if "enum" in schema:
        values = [json_text(v) for v in schema["enum"]]
        more = " | …" if len(values) > limit else ""
        return " | ".join(values[:limit]) + more
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(brief({**schema, "type": t}, limit) for t in kind)
    if kind == "array":
        if "prefixItems" in schema:
            return "[" + ", ".join(brief(s, limit) for s in schema["prefixItems"]) + "]"
        items = schema.get("items")
        text = f"array of {brief(items, limit)}" if isinstance(items, dict) and items else "array"
    elif kind == "object":
        extra = schema.get("additionalProperties")
        if "title" in schema:
            text = str(schema["title"])
        elif isinstance(extra, dict) and "properties" not in schema:
            text = f"object of {brief(extra, limit)}"
        else:
            text = "object"
    elif kind is None:
        return "any"
    else:
        text = str(kind)
    constraints = [
        f"{k}={json_text(schema[k])}" for k in sorted(schema) if k in TYPED - ARRAY - OBJECT
    ]
    return f"{text} ({', '.join(constraints)})" if constraints else text
