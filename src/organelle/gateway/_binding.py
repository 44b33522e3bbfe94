"""Where each parameter of a route comes from, and turning HTTP strings into typed values.

Rules (decided once per route, at startup):

* a name in the path template comes from the path;
* ``Annotated[T, Header()]`` comes from a header, ``Annotated[T, Query()]`` from the query;
* otherwise ``GET`` / ``DELETE`` take it from the query, and ``POST`` / ``PUT`` /
  ``PATCH`` from the JSON body, which is an object keyed by parameter name.

Strings from the path, query and headers are converted leniently ("42" → 42);
the JSON body keeps its own types. The kernel's contract then validates the
whole set, so a route and a direct RPC call accept exactly the same values.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl

import msgspec

from organelle.codec import _dec_hook
from organelle.errors import DefinitionError, ValidationError
from organelle.gateway._route import Header, Query
from organelle.module._signature import ParamsContract

__all__ = ["Param", "ParamBinder"]

Source = Literal["path", "query", "header", "body"]
_SEQUENCES = (list, tuple, set, frozenset)
MAX_QUERY_PARAMS = 256


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter: its name, where it comes from, its HTTP name and type."""

    name: str
    source: Source
    http_name: str
    hint: Any
    required: bool
    default: Any = None
    multi: bool = False


def _unwrap(hint: Any) -> tuple[Any, tuple[Any, ...]]:
    """The bare type and the ``Annotated`` metadata."""
    if typing.get_origin(hint) is typing.Annotated:
        return hint.__origin__, tuple(hint.__metadata__)
    return hint, ()


def _is_multi(hint: Any) -> bool:
    bare, _ = _unwrap(hint)
    origin = typing.get_origin(bare)
    if origin in (typing.Union, types.UnionType):
        return any(_is_multi(a) for a in typing.get_args(bare) if a is not type(None))
    return origin in _SEQUENCES or bare in _SEQUENCES


class ParamBinder:
    """Builds the params dict of one route from a request's parts."""

    __slots__ = ("body", "body_names", "has_body", "header", "path", "query", "target")

    def __init__(
        self,
        target: str,
        contract: ParamsContract,
        *,
        method: str,
        path_params: tuple[str, ...] = (),
    ) -> None:
        self.target = target
        self.has_body = method in {"POST", "PUT", "PATCH"}
        defaults = {f[0]: f[2] for f in contract.fields if len(f) == 3}  # noqa: PLR2004
        params: list[Param] = []
        for name, hint in contract.types.items():
            _, meta = _unwrap(hint)
            marker = next((m for m in meta if isinstance(m, (Header, Query))), None)
            source: Source
            if name in path_params:
                source, http_name = "path", name
            elif isinstance(marker, Header):
                source, http_name = "header", (marker.name or name.replace("_", "-")).lower()
            elif isinstance(marker, Query):
                source, http_name = "query", marker.name or name
            else:
                source, http_name = ("body" if self.has_body else "query"), name
            params.append(
                Param(
                    name=name,
                    source=source,
                    http_name=http_name,
                    hint=hint,
                    required=name not in defaults,
                    default=defaults.get(name),
                    multi=_is_multi(hint),
                )
            )
        missing = set(path_params) - set(contract.types)
        if missing:
            raise DefinitionError(
                f"{target}: path parameters {sorted(missing)} are not parameters of the handler"
            )
        self.path = tuple(p for p in params if p.source == "path")
        self.query = tuple(p for p in params if p.source == "query")
        self.header = tuple(p for p in params if p.source == "header")
        self.body = tuple(p for p in params if p.source == "body")
        self.body_names = frozenset(p.name for p in self.body)

    def _from_body(self, body: Any, errors: list[dict[str, str]]) -> dict[str, Any]:
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise ValidationError(
                f"the body of {self.target} must be a JSON object",
                errors=[{"field": "body", "message": "expected a JSON object"}],
            )
        params: dict[str, Any] = {}
        for key, value in body.items():
            if key in self.body_names:
                params[key] = value
            else:
                errors.append({"field": f"body.{key}", "message": "unexpected field"})
        return params

    @property
    def params(self) -> tuple[Param, ...]:
        """Every parameter, path first."""
        return (*self.path, *self.query, *self.header, *self.body)

    def bind(
        self,
        path_params: Mapping[str, Any],
        query_string: bytes,
        headers: Mapping[str, str],
        body: Any,
    ) -> dict[str, Any]:
        """Return the call's params.

        Raises:
            ValidationError: listing every field that could not be read.
        """
        errors: list[dict[str, str]] = []
        params = self._from_body(body, errors) if self.has_body else {}
        for p in self.path:
            _put(params, errors, p, path_params.get(p.http_name))
        if self.query and query_string:
            pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
            if len(pairs) > MAX_QUERY_PARAMS:
                raise ValidationError(
                    "too many query parameters",
                    errors=[{"field": "query", "message": f"at most {MAX_QUERY_PARAMS}"}],
                )
            for p in self.query:
                values = [v for k, v in pairs if k == p.http_name]
                if values:
                    _put(params, errors, p, values if p.multi else values[-1])
        for p in self.header:
            value = headers.get(p.http_name)
            if value is not None:
                _put(params, errors, p, [value] if p.multi else value)
        if errors:
            listed = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
            raise ValidationError(f"invalid request for {self.target}: {listed}", errors=errors)
        return params


def _put(params: dict[str, Any], errors: list[dict[str, str]], p: Param, raw: Any) -> None:
    if raw is None:
        return
    try:
        params[p.name] = msgspec.convert(raw, p.hint, strict=False, dec_hook=_dec_hook)
    except (msgspec.ValidationError, ValueError, TypeError) as exc:
        message = str(exc).split(" - at `", 1)[0]
        errors.append({"field": p.name, "message": message})
