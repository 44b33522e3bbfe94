"""OpenAPI 3.1 from the route table: the handlers' type hints are the schema.

msgspec writes JSON Schema for builtins, Structs, dataclasses, enums and
constraints; pydantic models bring their own (``model_json_schema``), hoisted
into ``components`` so both kinds share one ``$ref`` space.
"""

from __future__ import annotations

import inspect
import re
import sys
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from organelle.gateway._table import RouteEntry
    from organelle.gateway.config import GatewayConfig

__all__ = ["build_openapi"]

# ?topics= of the event stream: 1 to 32 patterns, each dot-separated tokens, '*'
# for one token and '>' last (what pattern_error accepts, minus '+', which a
# query string reads as a space).
_SEGMENT = r"(?:[A-Za-z0-9_\-:$@=~]+|\*)"
_ONE = rf"(?:{_SEGMENT}(?:\.{_SEGMENT})*(?:\.>)?|>)"
TOPICS_PATTERN = rf"^{_ONE}(?:,{_ONE}){{0,31}}$"

_REF = "#/components/schemas/{name}"
_CONVERTOR = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*):[a-z]+}")
_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "id": {"type": "string"},
                "details": {"type": "object"},
            },
            "required": ["code", "message"],
        }
    },
    "required": ["error"],
}


class _SchemaSlot:
    """Where a type's schema goes once every type has been rendered together."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


class _Schemas:
    """Collects types, then renders them all at once with shared components."""

    def __init__(self) -> None:
        self.types: list[Any] = []
        self.models: dict[str, Any] = {}

    def add(self, hint: Any) -> _SchemaSlot:
        self.types.append(hint)
        return _SchemaSlot(len(self.types) - 1)

    def _hook(self, cls: type) -> dict[str, Any]:
        pydantic = sys.modules.get("pydantic")
        if pydantic is not None and isinstance(cls, type) and issubclass(cls, pydantic.BaseModel):
            self.models[cls.__name__] = cls
            return {"$ref": _REF.format(name=cls.__name__)}
        raise NotImplementedError

    def render(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        schemas, components = msgspec.json.schema_components(
            self.types, schema_hook=self._hook, ref_template=_REF
        )
        for name, model in self.models.items():
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(schema.pop("$defs", {}))
            components[name] = schema
        return list(schemas), components


def _summary(entry: RouteEntry) -> str:
    if entry.spec is not None and entry.spec.summary:
        return entry.spec.summary
    doc = inspect.getdoc(entry.fn) or entry.target
    return doc.strip().splitlines()[0]


def _operation(
    entry: RouteEntry, schemas: _Schemas, secured: list[dict[str, list[str]]]
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": f"{entry.target}.{entry.method.lower()}"
        if entry.spec
        else f"rpc.{entry.target}",
        "summary": _summary(entry),
        "tags": list(entry.spec.tags) if entry.spec and entry.spec.tags else [entry.module],
    }
    params = [
        {
            "name": p.http_name,
            "in": p.source,
            "required": p.source == "path" or p.required,
            "schema": schemas.add(p.hint),
        }
        for p in (*entry.binder.path, *entry.binder.query, *entry.binder.header)
    ]
    if params:
        op["parameters"] = params
    if entry.binder.body:
        op["requestBody"] = {
            "required": any(p.required for p in entry.binder.body),
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {p.name: schemas.add(p.hint) for p in entry.binder.body},
                        "required": [p.name for p in entry.binder.body if p.required],
                        "additionalProperties": False,
                    }
                }
            },
        }
    status = str(entry.spec.status_code if entry.spec else 200)
    op["responses"] = {
        status: {
            "description": "OK",
            "content": {"application/json": {"schema": schemas.add(entry.returns)}},
        },
        "4XX": {"$ref": "#/components/responses/Error"},
        "5XX": {"$ref": "#/components/responses/Error"},
    }
    if (entry.rpc.roles or entry.rpc.permissions) and secured:
        op["security"] = secured
    return op


def _resolve(node: Any, rendered: list[dict[str, Any]]) -> Any:
    """Replace the slots left by ``_operation`` with their rendered schemas."""
    if isinstance(node, _SchemaSlot):
        return rendered[node.index]
    if isinstance(node, dict):
        return {k: _resolve(v, rendered) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, rendered) for v in node]
    return node


def build_openapi(
    entries: list[RouteEntry],
    config: GatewayConfig,
    *,
    stream_path: str | None,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of everything the gateway serves."""
    schemas = _Schemas()
    security_schemes: dict[str, Any] = {}
    if config.auth.jwt is not None:
        security_schemes["bearerAuth"] = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    if config.auth.api_keys or config.auth.factory:
        security_schemes["apiKey"] = {
            "type": "apiKey",
            "in": "header",
            "name": config.auth.api_key_header,
        }
    secured: list[dict[str, list[str]]] = [{name: []} for name in security_schemes]
    paths: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for entry in entries:
        path = _CONVERTOR.sub(r"{\1}", entry.path)
        operation = _operation(entry, schemas, secured)
        if operation["operationId"] in seen:
            operation["operationId"] += f".{len(seen)}"
        seen.add(operation["operationId"])
        paths.setdefault(path, {})[entry.method.lower()] = operation
    for agg in config.aggregates:
        path = _CONVERTOR.sub(r"{\1}", agg.path)
        names = re.findall(r"{([A-Za-z_][A-Za-z0-9_]*)}", path)
        op: dict[str, Any] = {
            "operationId": "aggregate."
            + path.strip("/").replace("/", ".").replace("{", "").replace("}", ""),
            "summary": agg.summary or f"{', '.join(agg.parts)} in one request",
            "tags": ["aggregates"],
            "responses": {
                "200": {
                    "description": "the parts' results and per-part errors",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "data": {"type": "object"},
                                    "errors": {"type": "object"},
                                },
                                "required": ["data", "errors"],
                            }
                        }
                    },
                },
                "4XX": {"$ref": "#/components/responses/Error"},
                "5XX": {"$ref": "#/components/responses/Error"},
            },
        }
        if names:
            op["parameters"] = [
                {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                for n in names
            ]
        if agg.roles and secured:
            op["security"] = secured
        paths.setdefault(path, {})["get"] = op
    if stream_path is not None:
        paths.setdefault(stream_path, {})["get"] = {
            "operationId": "events.stream",
            "summary": "Server-sent events whose topics match ?topics=",
            "tags": ["events"],
            "parameters": [
                {
                    "name": "topics",
                    "in": "query",
                    "required": True,
                    "description": "1 to 32 comma-separated topic patterns (NATS wildcards)",
                    "schema": {"type": "string", "pattern": TOPICS_PATTERN},
                }
            ],
            "responses": {
                "200": {
                    "description": "an event stream",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                "4XX": {"$ref": "#/components/responses/Error"},
            },
            **({"security": secured} if config.stream.roles and secured else {}),
        }
    rendered, components = schemas.render()
    paths = _resolve(paths, rendered)
    components["Error"] = _ERROR
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": config.title, "version": config.version},
        "paths": paths,
        "components": {
            "schemas": components,
            "responses": {
                "Error": {
                    "description": "an error with a stable code",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                }
            },
        },
    }
    if security_schemes:
        doc["components"]["securitySchemes"] = security_schemes
    return doc
