"""The schema check on raw JSON Schemas: what it proves and what it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from organelle.contracts._keywords import brief
from organelle.contracts._schema_diff import covers
from organelle.contracts._schema_same import same

INT = {"type": "integer"}
NUM = {"type": "number"}
STR = {"type": "string"}
NULL = {"type": "null"}
BOOL = {"type": "boolean"}


def check(
    old: Any,
    new: Any,
    old_defs: dict[str, Any] | None = None,
    new_defs: dict[str, Any] | None = None,
) -> str | None:
    return covers(old, new, inner_defs=old_defs or {}, outer_defs=new_defs or {})


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (INT, INT),
        (INT, NUM),
        (INT, {}),
        (INT, True),
        (False, INT),
        ({"type": ["integer", "null"]}, {"anyOf": [NULL, NUM]}),
        ({"anyOf": [INT, NULL]}, {"type": ["number", "null"]}),
        ({"enum": [1, 2]}, INT),
        ({"enum": [1, 2]}, {"enum": [2, 1, 3]}),
        ({"const": "a"}, {"enum": ["a", "b"]}),
        ({"enum": ["ab"]}, {"type": "string", "minLength": 2, "pattern": "^a"}),
        ({"enum": [4]}, {"type": "integer", "multipleOf": 2, "maximum": 4}),
        (BOOL, {"enum": [True, False]}),
        (NULL, {"const": None}),
        ({"type": "integer", "minimum": 1}, {"type": "integer", "minimum": 0}),
        ({"type": "integer", "exclusiveMinimum": 0}, {"type": "integer", "minimum": 0}),
        ({"type": "number", "maximum": 5}, {"type": "number", "exclusiveMaximum": 6}),
        ({"type": "integer", "multipleOf": 4}, {"type": "integer", "multipleOf": 2}),
        (INT, {"type": "number", "multipleOf": 1}),
        ({"type": "string", "maxLength": 3}, {"type": "string", "maxLength": 5}),
        ({"type": "string", "format": "uuid"}, STR),
        ({"type": "array", "items": INT, "uniqueItems": True}, {"type": "array", "items": NUM}),
        (
            {
                "type": "array",
                "minItems": 2,
                "maxItems": 2,
                "prefixItems": [INT, STR],
                "items": False,
            },
            {"type": "array", "items": {"anyOf": [NUM, STR]}},
        ),
        (
            {"type": "object", "additionalProperties": INT},
            {"type": "object", "additionalProperties": NUM},
        ),
        (
            {"type": "object", "properties": {"a": INT}, "required": ["a"]},
            {"type": "object", "properties": {"a": NUM, "b": STR}},
        ),
        (
            {"type": "object", "properties": {"a": INT}},
            {"type": "object", "additionalProperties": INT},
        ),
        ({"allOf": [INT, {"minimum": 0}]}, INT),
        (INT, {"allOf": [NUM, {"type": "integer"}]}),
        ({"x-organelle-type": "a.B"}, {"x-organelle-type": "a.B"}),
        (
            {"type": "integer", "title": "Old", "description": "d", "default": 1},
            {"type": "integer", "title": "New"},
        ),
    ],
)
def test_proven(old: Any, new: Any) -> None:
    assert check(old, new) is None


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        (NUM, INT, "old allows number, new expects integer"),
        ({}, INT, "old allows any value, new only integer"),
        (INT, False, "new accepts no value here"),
        ({"anyOf": [INT, NULL]}, INT, "old allows null, new expects integer"),
        ({"enum": [1, 3]}, {"enum": [1, 2]}, "old allows 3, new does not"),
        ({"enum": [True]}, {"enum": [1]}, "old allows true, new does not"),
        ({"enum": ["abc"]}, {"type": "string", "format": "date"}, 'old allows "abc", new does not'),
        (STR, {"enum": ["a"]}, 'old allows any string, new only "a"'),
        (
            {"type": "integer", "minimum": 0},
            {"type": "integer", "minimum": 1},
            "new has a higher lower bound than old (integer (minimum=1))",
        ),
        (INT, {"type": "integer", "exclusiveMaximum": 9}, "new has a lower upper bound than old"),
        (
            {"type": "integer", "multipleOf": 2},
            {"type": "integer", "multipleOf": 4},
            "new needs multiples of 4, old does not",
        ),
        (STR, {"type": "string", "minLength": 1}, "new needs at least 1 characters"),
        (
            {"type": "string", "maxLength": 9},
            {"type": "string", "maxLength": 5},
            "new allows at most 5 characters",
        ),
        (
            {"type": "string", "pattern": "^a"},
            {"type": "string", "pattern": "^b"},
            "new requires pattern '^b', old does not",
        ),
        (STR, {"type": "string", "format": "uuid"}, "new requires format 'uuid', old does not"),
        (
            {"type": "array", "items": INT},
            {"type": "array", "items": STR},
            "at []: old allows integer, new expects string",
        ),
        ({"type": "array"}, {"type": "array", "minItems": 1}, "new needs at least 1 items"),
        ({"type": "array"}, {"type": "array", "maxItems": 3}, "new allows at most 3 items"),
        (
            {"type": "array"},
            {"type": "array", "uniqueItems": True},
            "new needs unique items, old allows repeats",
        ),
        (
            {"type": "array", "prefixItems": [INT, INT], "items": False, "maxItems": 2},
            {"type": "array", "prefixItems": [INT, STR]},
            "at [1]: old allows integer, new expects string",
        ),
        (
            {"type": "object", "properties": {"a": INT}},
            {"type": "object", "properties": {"a": INT}, "required": ["a"]},
            "at a: new requires this field",
        ),
        (
            {"type": "object", "properties": {"a": INT}},
            {"type": "object", "properties": {}, "additionalProperties": False},
            "at a: new forbids this field, old has it",
        ),
        (
            {"type": "object"},
            {"type": "object", "additionalProperties": False},
            "new forbids undeclared fields, old allows them",
        ),
        (
            {"type": "object", "additionalProperties": True},
            {"type": "object", "properties": {"b": INT}},
            "at b: old allows any value, new only integer",
        ),
        ({"type": "object"}, {"type": "object", "minProperties": 1}, "new needs at least 1 fields"),
        ({"type": "object"}, {"type": "object", "maxProperties": 1}, "new allows at most 1 fields"),
        (
            {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": INT}}}},
            {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": STR}}}},
            "at a.b: old allows integer, new expects string",
        ),
        (
            {"x-organelle-type": "a.B"},
            {"x-organelle-type": "a.C"},
            "cannot compare B with C (no JSON Schema for a.B)",
        ),
        ({"x-organelle-type": "a.B"}, INT, "cannot compare B with integer"),
        (
            {"type": "object", "patternProperties": {"^x": INT}},
            {"type": "object", "patternProperties": {"^y": INT}},
            "cannot compare 'patternProperties': old and new differ",
        ),
        ({"not": INT}, {"not": STR}, "cannot compare 'not'"),
        ({"$ref": "#/schemas/Gone"}, INT, "cannot resolve #/schemas/Gone"),
        ({"$ref": "#/$defs/Local"}, INT, "cannot resolve #/$defs/Local"),
        ([1], INT, "not a JSON Schema"),
        (
            {"anyOf": [STR, INT]},
            {"anyOf": [NULL, {"type": "integer", "minimum": 0}]},
            "old allows string, new only null | integer (minimum=0)",
        ),
    ],
)
def test_refused_with_a_reason(old: Any, new: Any, reason: str) -> None:
    found = check(old, new)
    assert found is not None
    assert reason in found


def test_a_union_names_the_branch_of_the_same_kind() -> None:
    old = {"type": "object", "properties": {"a": INT}, "required": ["a"]}
    new = {"anyOf": [NULL, {"type": "object", "properties": {"a": STR}}]}
    assert check(old, new) == "at a: old allows integer, new expects string"


def test_refs_resolve_per_side_and_recursion_ends() -> None:
    old_defs = {
        "T": {
            "type": "object",
            "properties": {"v": INT, "kids": {"type": "array", "items": {"$ref": "#/schemas/T"}}},
        }
    }
    new_defs = {
        "T": {
            "type": "object",
            "properties": {"v": NUM, "kids": {"type": "array", "items": {"$ref": "#/schemas/T"}}},
        }
    }
    ref = {"$ref": "#/schemas/T"}
    assert check(ref, ref, old_defs, new_defs) is None
    assert check(ref, ref, new_defs, old_defs) == "at v: old allows number, new expects integer"
    assert same(ref, ref, a_defs=old_defs, b_defs=old_defs)
    assert not same(ref, ref, a_defs=old_defs, b_defs=new_defs)


def test_constraints_beside_a_ref_narrow_the_new_side_only() -> None:
    defs = {"N": INT}
    assert check({"$ref": "#/schemas/N", "minimum": 5}, INT, defs, defs) is None
    found = check(INT, {"$ref": "#/schemas/N", "minimum": 5}, defs, defs)
    assert found is not None
    assert "higher lower bound" in found


def test_a_failed_union_branch_leaves_no_assumption_behind() -> None:
    # The first branch assumes (T, T) while failing on "v"; the check of the
    # same pair must not then be taken as proven.
    defs_old = {"T": {"type": "object", "properties": {"v": INT}, "required": ["v"]}}
    defs_new = {"T": {"type": "object", "properties": {"v": STR}}}
    old = {"$ref": "#/schemas/T"}
    new = {"anyOf": [{"$ref": "#/schemas/T"}, {"$ref": "#/schemas/T"}]}
    assert check(old, new, defs_old, defs_new) is not None


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        (INT, {"type": "integer", "title": "X", "description": "d"}, True),
        (
            {"type": "object", "properties": {"title": INT}, "required": ["a", "b"]},
            {"type": "object", "properties": {"title": INT}, "required": ["b", "a"]},
            True,
        ),
        (
            {"type": "object", "properties": {"title": INT}},
            {"type": "object", "properties": {"title": STR}},
            False,
        ),
        ({"anyOf": [INT, NULL]}, {"anyOf": [INT]}, False),
        ({"type": "array", "items": INT}, {"type": "array", "items": NUM}, False),
        ({"enum": [1, 2]}, {"enum": [1, 2]}, True),
    ],
)
def test_same_ignores_annotations_only(a: Any, b: Any, equal: bool) -> None:
    assert same(a, b, a_defs={}, b_defs={}) is equal


@pytest.mark.parametrize(
    ("schema", "text"),
    [
        (True, "any"),
        ({}, "any"),
        (False, "nothing"),
        ({"$ref": "#/schemas/Quote"}, "Quote"),
        ({"anyOf": [INT, NULL]}, "integer | null"),
        ({"type": ["string", "null"]}, "string | null"),
        ({"enum": [1, 2, 3, 4, 5]}, "1 | 2 | 3 | 4 | …"),
        ({"const": "x"}, '"x"'),
        ({"type": "array", "items": STR}, "array of string"),
        ({"type": "array", "prefixItems": [INT, STR]}, "[integer, string]"),
        ({"type": "object", "additionalProperties": INT}, "object of integer"),
        ({"type": "object", "title": "Line", "properties": {}}, "Line"),
        ({"type": "object", "properties": {}}, "object"),
        ({"type": "integer", "minimum": 0}, "integer (minimum=0)"),
        ({"x-organelle-type": "pkg.mod.Thing"}, "Thing"),
        ({"allOf": [INT, NUM]}, "integer & number"),
        (3, "?"),
    ],
)
def test_brief(schema: Any, text: str) -> None:
    assert brief(schema) == text
