"""JSON Schema for many type hints at once, with one shared table of named schemas.

msgspec writes the schemas of builtins, Structs, dataclasses, enums and
constraints; pydantic models bring their own (rendered together, so their
names are unique among themselves) and are hoisted into the same table, as
the gateway's OpenAPI does. A type neither can describe becomes an opaque
``{"x-organelle-type": "package.module.Name"}``: still compared, by name.

The snapshot and the AsyncAPI document both collect their hints in ``Hints``
(each ``add`` leaves a slot in the document being built), render them once,
and ``fill`` the slots: one name table for the whole document.
"""

from __future__ import annotations

import sys
import typing
from typing import Any

import msgspec

__all__ = ["OPAQUE", "REF_PREFIX", "Hints", "fill", "render"]

REF_PREFIX = "#/schemas/"
OPAQUE = "x-organelle-type"
_PENDING = "#/pending/"


def _qualname(tp: Any) -> str:
    if typing.get_origin(tp) is not None:  # AsyncIterator[int]: keep the arguments
        return repr(tp).removeprefix("typing.")
    module = getattr(tp, "__module__", None)
    name = getattr(tp, "__qualname__", None) or repr(tp)
    return f"{module}.{name}" if module and module != "builtins" else str(name)


def _pydantic_model(tp: Any) -> bool:
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(tp, type) and issubclass(tp, pydantic.BaseModel)


class _Slot:
    """Where a hint's schema goes once every hint has been rendered together."""

    __slots__ = ("extra", "index")

    def __init__(self, index: int, extra: dict[str, Any]) -> None:
        self.index = index
        self.extra = extra


class Hints:
    """Collects hints so that one render gives every schema a shared name table."""

    def __init__(self) -> None:
        self.hints: list[Any] = []

    def add(self, hint: Any, **extra: Any) -> _Slot:
        """Leave a slot for ``hint``'s schema, with ``extra`` keywords (a ``default``) beside it."""
        self.hints.append(hint)
        return _Slot(len(self.hints) - 1, extra)

    def payload(self, target: Any) -> Any:
        """A payload's slot; ``{}`` (anything) for a handler that takes none, or ``Any``."""
        return {} if target is None else self.add(target)


def fill(node: Any, rendered: list[Any]) -> Any:
    """``node`` with each slot replaced by its rendered schema."""
    if isinstance(node, _Slot):
        schema = rendered[node.index]
        if not node.extra:
            return schema
        # Keywords beside a $ref are ignored by draft-07 readers: wrap the reference.
        return {"allOf": [schema], **node.extra} if "$ref" in schema else schema | node.extra
    if isinstance(node, dict):
        return {k: fill(v, rendered) for k, v in node.items()}
    if isinstance(node, list):
        return [fill(v, rendered) for v in node]
    return node


class _Hook:
    """msgspec's schema hook: pydantic models become pending refs, the rest opaque."""

    def __init__(self) -> None:
        self.models: list[type] = []

    def __call__(self, tp: type) -> dict[str, Any]:
        if _pydantic_model(tp):
            if tp not in self.models:
                self.models.append(tp)
            return {"$ref": f"{_PENDING}{self.models.index(tp)}"}
        return {OPAQUE: _qualname(tp)}


def _msgspec(hints: list[Any], hook: _Hook, prefix: str) -> tuple[list[Any], dict[str, Any]]:
    """Render with msgspec; a hint it rejects (even with the hook) becomes opaque alone."""
    try:
        schemas, table = msgspec.json.schema_components(
            hints, schema_hook=hook, ref_template=prefix + "{name}"
        )
        return list(schemas), dict(table)
    except (TypeError, ValueError):
        pass
    ok = []
    for hint in hints:
        try:
            msgspec.json.schema_components([hint], schema_hook=hook)
            ok.append(hint)
        except (TypeError, ValueError):
            continue
    schemas, table = msgspec.json.schema_components(
        ok, schema_hook=hook, ref_template=prefix + "{name}"
    )
    rendered = iter(schemas)
    return [next(rendered) if h in ok else {OPAQUE: _qualname(h)} for h in hints], dict(table)


def _pydantic(models: list[type], prefix: str) -> tuple[list[Any], dict[str, Any]]:
    """Render pydantic models together; one that cannot be rendered becomes opaque."""
    from pydantic.json_schema import models_json_schema

    def run(batch: list[type]) -> tuple[list[Any], dict[str, Any]]:
        refs, defs = models_json_schema(
            [(m, "validation") for m in batch], ref_template=prefix + "{model}"
        )
        return [refs[(m, "validation")] for m in batch], dict(defs.get("$defs", {}))

    try:
        return run(models)
    except Exception:  # pydantic raises several kinds: fall back to one model at a time
        good = []
        for model in models:
            try:
                run([model])
                good.append(model)
            except Exception:  # noqa: S112 - that model becomes opaque
                continue
        refs, table = run(good) if good else ([], {})
        it = iter(refs)
        return [next(it) if m in good else {OPAQUE: _qualname(m)} for m in models], table


def _replace(node: Any, refs: dict[str, dict[str, Any]]) -> Any:
    """Replace each ``{"$ref": r}`` whose ``r`` is in ``refs`` (siblings kept)."""
    if isinstance(node, dict):
        out = {k: _replace(v, refs) for k, v in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref in refs:
            del out["$ref"]
            out.update(refs[ref])
        return out
    if isinstance(node, list):
        return [_replace(v, refs) for v in node]
    return node


def render(hints: list[Any], *, ref_prefix: str = REF_PREFIX) -> tuple[list[Any], dict[str, Any]]:
    """The JSON Schema of each hint (``$ref`` into the table) and the table of named schemas.

    Args:
        hints: the type hints, in the order their schemas are returned.
        ref_prefix: what a ``$ref`` to a named schema starts with (the table's
            place in the document: ``#/schemas/`` in a snapshot,
            ``#/components/schemas/`` in AsyncAPI).
    """
    hook = _Hook()
    schemas, table = _msgspec(hints, hook, ref_prefix)
    if not hook.models:
        return schemas, table
    model_refs, model_table = _pydantic(hook.models, ref_prefix)
    # A pydantic name may clash with a msgspec one: the pydantic side gets a suffix.
    taken = set(table) | set(model_table)
    renames: dict[str, dict[str, Any]] = {}
    for name in model_table:
        if name in table:
            final = name
            while final in taken:
                final += "_"
            taken.add(final)
            renames[ref_prefix + name] = {"$ref": ref_prefix + final}
    for name, schema in model_table.items():
        final = renames.get(ref_prefix + name, {"$ref": ref_prefix + name})["$ref"]
        table[final.removeprefix(ref_prefix)] = _replace(schema, renames)
    pending = {f"{_PENDING}{i}": _replace(ref, renames) for i, ref in enumerate(model_refs)}
    return _replace(schemas, pending), _replace(table, pending)
