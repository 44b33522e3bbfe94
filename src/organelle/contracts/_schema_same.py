"""Do two JSON Schemas say the same thing? Annotations and type names aside.

``compare`` reports a type change only when the schemas differ here; whether
the change is breaking is ``covers``'s question.
"""

from __future__ import annotations

from typing import Any

from organelle.contracts._keywords import MAX_DEPTH, strip
from organelle.contracts._render import REF_PREFIX

__all__ = ["same"]

_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "dependentSchemas"})
_SCHEMA_LISTS = frozenset({"anyOf", "oneOf", "allOf", "prefixItems"})


def same(a: Any, b: Any, *, a_defs: dict[str, Any], b_defs: dict[str, Any], depth: int = 0) -> bool:
    """Whether two schemas say the same thing, ignoring annotations and the names of types."""
    return _Same(a_defs, b_defs).equal(a, b, depth)


class _Same:
    def __init__(self, a_defs: dict[str, Any], b_defs: dict[str, Any]) -> None:
        self.defs = (a_defs, b_defs)
        self.assumed: set[tuple[object, object]] = set()

    def _resolve(self, node: Any, side: int) -> Any:
        ref = node.get("$ref") if isinstance(node, dict) else None
        if not isinstance(ref, str) or not ref.startswith(REF_PREFIX):
            return node
        rest = {k: v for k, v in node.items() if k != "$ref"}
        target = self.defs[side].get(ref[len(REF_PREFIX) :], {"$ref": ref})
        return {"allOf": [target, rest]} if strip(rest).keys() - {"title"} else target

    def equal(self, a: Any, b: Any, depth: int) -> bool:
        if depth > MAX_DEPTH:
            return False
        if isinstance(a, dict) and isinstance(b, dict) and ("$ref" in a or "$ref" in b):
            key = (a.get("$ref", id(a)), b.get("$ref", id(b)))
            if key in self.assumed:
                return True
            self.assumed.add(key)
            return self.equal(self._resolve(a, 0), self._resolve(b, 1), depth + 1)
        if not (isinstance(a, dict) and isinstance(b, dict)):
            return bool(a == b)
        a = {k: v for k, v in strip(a).items() if k != "title"}
        b = {k: v for k, v in strip(b).items() if k != "title"}
        return a.keys() == b.keys() and all(self._keyword(k, a[k], b[k], depth) for k in a)

    def _keyword(self, key: str, a: Any, b: Any, depth: int) -> bool:
        if key in _SCHEMA_MAPS and isinstance(a, dict) and isinstance(b, dict):
            return a.keys() == b.keys() and all(self.equal(a[k], b[k], depth + 1) for k in a)
        if key in _SCHEMA_LISTS and isinstance(a, list) and isinstance(b, list):
            return len(a) == len(b) and all(
                self.equal(x, y, depth + 1) for x, y in zip(a, b, strict=True)
            )
        if key == "required" and isinstance(a, list) and isinstance(b, list):
            return sorted(map(str, a)) == sorted(map(str, b))
        if isinstance(a, dict) and isinstance(b, dict):  # items, additionalProperties, ...
            return self.equal(a, b, depth + 1)
        return bool(a == b)
