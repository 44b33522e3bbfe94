"""The management API's route table, and the OpenAPI document generated from it.

One table drives both the dispatch (``_manage_http``) and the document, so
the document cannot drift from what the server answers. Each route names the
``Manage`` operation it runs and where each parameter comes from: the path,
the query string or the JSON body.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from organelle._version import __version__

__all__ = ["PREFIX", "ROUTES", "Route", "RouteParam", "openapi"]

PREFIX = "/manage"

Where = Literal["path", "query", "body"]

_STR: dict[str, Any] = {"type": "string"}
_INT: dict[str, Any] = {"type": "integer"}
_BOOL: dict[str, Any] = {"type": "boolean"}
_OBJ: dict[str, Any] = {"type": "object"}
_NAMES: dict[str, Any] = {"type": "array", "items": _STR}
_LIMIT: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}


@dataclass(frozen=True, slots=True)
class RouteParam:
    """One parameter of an operation."""

    name: str
    where: Where
    schema: dict[str, Any]
    required: bool = False
    description: str = ""


@dataclass(frozen=True, slots=True)
class Route:
    """``method path`` runs ``Manage.<op>``; ``tag`` groups it in the document."""

    method: str
    path: str
    op: str
    tag: str
    summary: str
    params: tuple[RouteParam, ...] = ()

    @property
    def parts(self) -> tuple[str, ...]:
        """The path's segments after the prefix (``{name}`` for a parameter)."""
        return tuple(self.path.strip("/").split("/")) if self.path != "/" else ()


def _p(name: str, description: str = "") -> RouteParam:
    return RouteParam(name, "path", _STR, required=True, description=description)


def _q(
    name: str, schema: dict[str, Any], description: str = "", *, required: bool = False
) -> RouteParam:
    return RouteParam(name, "query", schema, required=required, description=description)


def _b(
    name: str, schema: dict[str, Any], description: str = "", *, required: bool = False
) -> RouteParam:
    return RouteParam(name, "body", schema, required=required, description=description)


_KEY = _q("key", {"type": "string", "minLength": 1}, "the key", required=True)
_STATES = ["queued", "scheduled", "running", "succeeded", "failed", "dead"]

ROUTES: tuple[Route, ...] = (
    Route("GET", "/nodes", "nodes", "cluster", "The nodes that serve management calls"),
    Route("GET", "/modules", "modules", "modules", "Modules with state, version and node"),
    Route(
        "POST",
        "/modules",
        "load",
        "modules",
        "Import a module from 'package.module:Class' and start it",
        (
            _b("path", _STR, "package.module:Class", required=True),
            _b("config", _OBJ, "its config section"),
        ),
    ),
    Route(
        "DELETE",
        "/modules/{name}",
        "unload",
        "modules",
        "Stop and remove a module",
        (_p("name"), _q("cascade", _BOOL, "remove its dependents first")),
    ),
    Route(
        "POST",
        "/modules/{name}/restart",
        "restart",
        "modules",
        "Replace a module by a fresh instance",
        (_p("name"),),
    ),
    Route(
        "POST",
        "/modules/{name}/reload",
        "reload",
        "modules",
        "Re-import a module's code and swap it in",
        (_p("name"),),
    ),
    Route("GET", "/config", "config", "config", "The effective config, secrets masked"),
    Route(
        "POST", "/config/reload", "config_reload", "config", "Re-read the config file and apply it"
    ),
    Route("GET", "/config/diff", "config_diff", "config", "What a reload would change now"),
    Route("GET", "/health", "health", "health", "This node's readiness report"),
    Route(
        "GET",
        "/jobs",
        "jobs",
        "jobs",
        "Jobs by state and name, oldest first",
        (
            _q("state", {"type": "string", "enum": _STATES}),
            _q("name", _STR, "a job name, <module>.<job>"),
            _q("limit", _LIMIT),
            _q("offset", {"type": "integer", "minimum": 0, "default": 0}),
        ),
    ),
    Route(
        "POST",
        "/jobs/purge-dead",
        "dead_purge",
        "jobs",
        "Delete dead jobs (these ids, or all)",
        (_b("job_ids", _NAMES),),
    ),
    Route(
        "GET",
        "/jobs/{job_id}",
        "job",
        "jobs",
        "One job with every attempt's error",
        (_p("job_id"),),
    ),
    Route(
        "POST",
        "/jobs/{job_id}/retry",
        "job_retry",
        "jobs",
        "Queue a finished job again",
        (_p("job_id"),),
    ),
    Route(
        "POST",
        "/jobs/{job_id}/cancel",
        "job_cancel",
        "jobs",
        "Delete a job that waits to run",
        (_p("job_id"),),
    ),
    Route("GET", "/queues", "queues", "jobs", "Backlog per job name and the paused names"),
    Route(
        "POST",
        "/queues/pause",
        "queue_pause",
        "jobs",
        "Stop claiming these job names (or all)",
        (_b("names", _NAMES),),
    ),
    Route(
        "POST",
        "/queues/resume",
        "queue_resume",
        "jobs",
        "Claim these job names again (or all)",
        (_b("names", _NAMES),),
    ),
    Route("GET", "/streams", "streams", "streams", "The streams this node knows"),
    Route(
        "GET",
        "/streams/{stream}",
        "stream",
        "streams",
        "Partitions, retention and groups' positions",
        (_p("stream"),),
    ),
    Route(
        "POST",
        "/streams/{stream}/groups/{group}/seek",
        "stream_seek",
        "streams",
        "Move a group to 'earliest', 'latest' or an offset",
        (
            _p("stream"),
            _p("group"),
            _b(
                "to",
                {
                    "oneOf": [
                        {"type": "string", "enum": ["earliest", "latest"]},
                        {"type": "integer", "minimum": 0},
                    ]
                },
                required=True,
            ),
        ),
    ),
    Route(
        "GET",
        "/streams/{stream}/groups/{group}/dead",
        "stream_dead",
        "streams",
        "A group's dead letters",
        (_p("stream"), _p("group"), _q("limit", _LIMIT)),
    ),
    Route(
        "GET",
        "/kv",
        "kv_scan",
        "kv",
        "One page of keys under a prefix",
        (_q("prefix", _STR), _q("limit", _LIMIT), _q("cursor", _STR, "from the previous page")),
    ),
    Route("GET", "/kv/entry", "kv_get", "kv", "Read a key", (_KEY,)),
    Route(
        "PUT",
        "/kv/entry",
        "kv_put",
        "kv",
        "Write a key",
        (
            _KEY,
            _b("value", {}, "any JSON value", required=True),
            _b("ttl_s", {"type": "number", "exclusiveMinimum": 0}),
        ),
    ),
    Route("DELETE", "/kv/entry", "kv_delete", "kv", "Delete a key", (_KEY,)),
)

_NODE = {
    "name": "node",
    "in": "query",
    "required": False,
    "description": "run it on this node of the cluster (default: the node answering)",
    "schema": _STR,
}


def _operation(route: Route) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {
            "name": p.name,
            "in": p.where,
            "required": p.required,
            "schema": p.schema,
            **({"description": p.description} if p.description else {}),
        }
        for p in route.params
        if p.where != "body"
    ]
    parameters.append(_NODE)
    body = [p for p in route.params if p.where == "body"]
    operation: dict[str, Any] = {
        "operationId": route.op,
        "summary": route.summary,
        "tags": [route.tag],
        "parameters": parameters,
        "responses": {
            "200": {"description": "done", "content": {"application/json": {"schema": {}}}},
            **{
                status: {"$ref": f"#/components/responses/{name}"}
                for status, name in (
                    ("400", "BadInput"),
                    ("401", "Unauthenticated"),
                    ("403", "Forbidden"),
                    ("404", "NotFound"),
                    ("409", "Conflict"),
                    ("422", "Invalid"),
                )
            },
        },
    }
    if body:
        schema: dict[str, Any] = {
            "type": "object",
            "additionalProperties": False,
            "properties": {p.name: p.schema for p in body},
        }
        required = [p.name for p in body if p.required]
        if required:
            schema["required"] = required
        operation["requestBody"] = {
            "required": bool(required),
            "content": {"application/json": {"schema": schema}},
        }
    return operation


def openapi(*, api_key_header: str = "x-api-key") -> dict[str, Any]:
    """The OpenAPI 3.1 document of the management API (served at ``/manage/openapi.json``)."""
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(PREFIX + route.path, {})[route.method.lower()] = _operation(route)
    error = {"$ref": "#/components/schemas/Error"}
    responses = {
        name: {"description": text, "content": {"application/json": {"schema": error}}}
        for name, text in (
            ("BadInput", "bad input (organelle.config: a bad module path, …)"),
            ("Unauthenticated", "no or bad credentials"),
            ("Forbidden", "the caller lacks the ops role"),
            ("NotFound", "unknown module, job, stream, key or node"),
            ("Conflict", "not in a state that allows it (a running job, a failed start)"),
            ("Invalid", "a parameter is invalid (organelle.validation, fields listed)"),
        )
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "organelle management API",
            "version": __version__,
            "description": "Modules, config, jobs, streams, KV and health of a running app; "
            "every operation needs the ops role.",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string", "description": "stable error code"},
                        "type": _STR,
                        "message": _STR,
                        "details": _OBJ,
                        "node": {"type": ["string", "null"]},
                    },
                }
            },
            "responses": responses,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "apiKey": {"type": "apiKey", "in": "header", "name": api_key_header},
            },
        },
        "security": [{"bearer": []}, {"apiKey": []}],
        "tags": [
            {"name": t} for t in ("cluster", "modules", "config", "health", "jobs", "streams", "kv")
        ],
    }
