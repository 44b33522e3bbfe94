"""Handler signatures as contracts: params validated and converted from type hints.

A handler's parameters become a msgspec Struct built once at registration;
validating a call is one ``msgspec.convert`` (hundreds of nanoseconds). Only
when that fails do we check field by field, so the error lists every bad
field, not just the first.
"""

from __future__ import annotations

import inspect
import sys
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, get_args, get_origin

import msgspec

from organelle.codec import _dec_hook
from organelle.envelope import Envelope
from organelle.errors import DefinitionError, ValidationError

__all__ = ["ParamsContract", "PayloadContract"]

_EMPTY = inspect.Parameter.empty


def _hints(owner: str, fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise DefinitionError(f"{owner}: cannot resolve type hints: {exc}") from exc


def _short(exc: Exception) -> str:
    text = str(exc)
    # msgspec appends " - at `$.x`"; the field is reported separately.
    return text.split(" - at `", 1)[0].strip()


class ParamsContract:
    """The parameters of an RPC handler: names, types, defaults, and a validator."""

    __slots__ = ("checks", "fast", "fields", "names", "owner", "positional", "struct", "types")

    def __init__(self, owner: str, fn: Callable[..., Any]) -> None:
        self.owner = owner
        hints = _hints(owner, fn)
        params = list(inspect.signature(fn).parameters.values())[1:]  # drop self
        fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        self.types: dict[str, Any] = {}
        self.positional = True
        for p in params:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise DefinitionError(
                    f"{owner}: RPC handlers take named parameters; *{p.name} / **{p.name} "
                    "cannot be validated or exposed"
                )
            if p.kind is p.POSITIONAL_ONLY:
                raise DefinitionError(f"{owner}: parameter {p.name!r} must not be positional-only")
            if p.kind is p.KEYWORD_ONLY:
                self.positional = False
            hint = hints.get(p.name, Any)
            self.types[p.name] = hint
            fields.append((p.name, hint) if p.default is _EMPTY else (p.name, hint, p.default))
        self.names = tuple(self.types)
        self.fields = fields
        try:
            self.struct: type[msgspec.Struct] = msgspec.defstruct(
                f"{owner.replace('.', '_')}_params",
                fields,
                kw_only=True,
                forbid_unknown_fields=True,
            )
            msgspec.inspect.type_info(self.struct)
        except (TypeError, ValueError) as exc:
            raise DefinitionError(f"{owner}: unsupported parameter type: {exc}") from exc
        self.fast = _fast_checker(fields)
        self.checks = _checks(fields)

    def validate(self, params: dict[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        """Return converted args (a tuple if all positional, else a dict).

        Params that already have exactly the declared simple types are passed
        through untouched (the common local case); anything else is converted
        by msgspec.

        Raises:
            ValidationError: with one entry per bad, missing or unknown field.
        """
        fast = self.fast
        if fast is not None and fast(params):
            return params
        try:
            obj = msgspec.convert(params, self.struct, dec_hook=_dec_hook, from_attributes=True)
        except (msgspec.ValidationError, ValueError, TypeError):
            # JSON Schema calls 3.0 an integer (and JSON has one number type): a
            # client that sends it for an int parameter sent what the schema allows.
            integral = _integral_floats(params)
            if integral is params:
                raise self._explain(params) from None
            try:
                obj = msgspec.convert(
                    integral, self.struct, dec_hook=_dec_hook, from_attributes=True
                )
            except (msgspec.ValidationError, ValueError, TypeError):
                raise self._explain(params) from None
        if self.positional:
            return msgspec.structs.astuple(obj)
        return msgspec.structs.asdict(obj)

    def _explain(self, params: object) -> ValidationError:
        errors: list[dict[str, str]] = []
        if not isinstance(params, Mapping):
            errors.append({"field": "$", "message": "parameters must be an object"})
        else:
            errors.extend(
                {"field": name, "message": "unexpected parameter"}
                for name in params
                if name not in self.types
            )
            for field in self.fields:
                name, hint = field[0], field[1]
                if name not in params:
                    if len(field) == 2:  # noqa: PLR2004 - (name, type) means required
                        errors.append({"field": name, "message": "missing required parameter"})
                    continue
                try:
                    msgspec.convert(params[name], hint, dec_hook=_dec_hook, from_attributes=True)
                except (msgspec.ValidationError, ValueError, TypeError) as exc:
                    errors.append({"field": name, "message": _short(exc)})
        if not errors:  # pragma: no cover - convert failed but no single field did
            errors.append({"field": "$", "message": "invalid parameters"})
        listed = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return ValidationError(f"invalid parameters for {self.owner}: {listed}", errors=errors)

    def json_schema(self) -> dict[str, Any]:
        """JSON Schema of the parameters object (for docs and gateways)."""
        schema: dict[str, Any] = msgspec.json.schema(self.struct)
        return schema


def _integral_floats(value: Any) -> Any:
    """``value`` with every float that is a whole number made an int (``value`` itself if none)."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        items = {k: _integral_floats(v) for k, v in value.items()}
        return value if all(items[k] is value[k] for k in value) else items
    if isinstance(value, list):
        seq = [_integral_floats(v) for v in value]
        return value if all(a is b for a, b in zip(seq, value, strict=True)) else seq
    return value


class PayloadContract:
    """The single payload parameter of an event handler (or none)."""

    __slots__ = ("owner", "takes_payload", "target", "wants_envelope")

    def __init__(self, owner: str, fn: Callable[..., Any]) -> None:
        self.owner = owner
        params = list(inspect.signature(fn).parameters.values())[1:]
        if len(params) > 1:
            raise DefinitionError(
                f"{owner}: event handlers take one payload parameter, got "
                f"{', '.join(p.name for p in params)}"
            )
        self.takes_payload = bool(params)
        hint: Any = Any
        if params:
            p = params[0]
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.KEYWORD_ONLY):
                raise DefinitionError(f"{owner}: the payload parameter must be positional")
            hint = _hints(owner, fn).get(p.name, Any)
        # Envelope[T]: the handler takes the whole envelope, its data converted to T.
        self.wants_envelope = hint is Envelope or get_origin(hint) is Envelope
        if self.wants_envelope:
            args = get_args(hint)
            hint = args[0] if args else Any
        self.target: Any = None if hint is Any or hint is object else hint

    def convert(self, payload: Any) -> Any:
        """Convert ``payload`` to the handler's declared type."""
        if self.target is None:
            return payload
        try:
            return msgspec.convert(payload, self.target, dec_hook=_dec_hook, from_attributes=True)
        except (msgspec.ValidationError, ValueError, TypeError) as exc:
            raise ValidationError(
                f"invalid payload for {self.owner}: {_short(exc)}",
                errors=[{"field": "payload", "message": _short(exc)}],
            ) from None


_SIMPLE = {int: "int", float: "float", str: "str", bytes: "bytes", bool: "bool"}
_MISSING = object()


def _simple_type(hint: Any) -> tuple[type | None, bool] | None:
    """``(exact type or None for Any, None allowed)`` for a simple hint, else None."""
    if hint is Any:
        return None, True
    if hint in _SIMPLE:
        return hint, False
    args = typing.get_args(hint)
    if (
        len(args) == 2  # noqa: PLR2004 - X | None
        and type(None) in args
        and typing.get_origin(hint) in (typing.Union, types.UnionType)
    ):
        inner = args[0] if args[1] is type(None) else args[1]
        if inner in _SIMPLE:
            return inner, True
    return None


def _simple_check(hint: Any, var: str) -> str | None:
    """Source of a test that ``var`` already has type ``hint`` exactly, or None."""
    simple = _simple_type(hint)
    if simple is None:
        return None
    exact, nullable = simple
    if exact is None:
        return "True"
    test = f"type({var}) is {_SIMPLE[exact]}"
    return f"({var} is None or {test})" if nullable else test


def _checks(
    fields: list[tuple[str, Any] | tuple[str, Any, Any]],
) -> tuple[tuple[str, type | None, bool, bool], ...] | None:
    """The C call path's form of the exact-type check: ``(name, type, nullable, required)``."""
    out: list[tuple[str, type | None, bool, bool]] = []
    for field in fields:
        simple = _simple_type(field[1])
        if simple is None:
            return None
        out.append((sys.intern(field[0]), simple[0], simple[1], len(field) == 2))  # noqa: PLR2004
    return tuple(out)


def _fast_checker(
    fields: list[tuple[str, Any] | tuple[str, Any, Any]],
) -> Callable[[dict[str, Any]], bool] | None:
    """Generate a checker that accepts params already of the exact simple types.

    Generated once per handler, like dataclasses do, because a loop over the
    fields costs more than the call it guards.
    """
    lines = ["def check(params):", "    present = 0"]
    for i, field in enumerate(fields):
        name, hint = field[0], field[1]
        var = f"v{i}"
        test = _simple_check(hint, var)
        if test is None:
            return None
        lines.append(f"    {var} = params.get({name!r}, MISSING)")
        if len(field) == 2:  # noqa: PLR2004 - (name, type): required
            lines.append(f"    if {var} is MISSING or not ({test}): return False")
            lines.append("    present += 1")
        else:
            lines.append(f"    if {var} is not MISSING:")
            lines.append(f"        if not ({test}): return False")
            lines.append("        present += 1")
    lines.append("    return present == len(params)")
    namespace: dict[str, Any] = {"MISSING": _MISSING}
    exec("\n".join(lines), namespace)  # noqa: S102 - source built above from field names only
    return namespace["check"]  # type: ignore[no-any-return]
