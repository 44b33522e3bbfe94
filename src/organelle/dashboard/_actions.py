"""What an operator may do from the dashboard: ``POST <path>/api/actions/<name>``.

Every action goes through the gateway's authentication and then needs one of
``action_roles`` (default ``ops``), a role apart from the read roles, so a
viewer can watch without being able to act. The body is a JSON object; a
request that is not ``application/json`` is refused, which also keeps plain
HTML forms on other sites from posting here. Each action is logged with who
did it; flag changes are also audited as ``kernel.flags.changed`` events.

Errors are the gateway's, plus the two an operator meets most: the thing is
not in a state that allows it (``ConflictError``, 409) and a config or module
that would not load (``ConfigError`` / ``LifecycleError``, 409 with the reason).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from organelle.codec import codec_for
from organelle.errors import (
    ConfigError,
    ConflictError,
    InternalError,
    JobNotFoundError,
    LifecycleError,
    OrganelleError,
    ValidationError,
)
from organelle.gateway._endpoint import Receive, Scope, Send, read_body, send_json
from organelle.gateway._errors import error_response
from organelle.gateway._runtime import require_roles

if TYPE_CHECKING:
    from organelle.auth.base import Principal
    from organelle.auth.rbac import Rbac
    from organelle.gateway._runtime import Runtime
    from organelle.kernel import Kernel

__all__ = ["ACTIONS", "ActionEndpoint", "Actor"]

log = logging.getLogger("organelle.dashboard")

_JSON = codec_for("json")
_MAX_BODY = 64 * 1024
_MAX_IDS = 500
_HEADERS = [(b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff")]
# Operator errors the gateway's table leaves at 500: here they are the answer, not a bug.
_OPERATOR: tuple[tuple[type[OrganelleError], int], ...] = (
    (ConflictError, 409),
    (ConfigError, 409),
    (LifecycleError, 409),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Actor:
    """Who acts, as written into logs and flag records (``dashboard:<principal id>``)."""

    kernel: Kernel
    by: str
    serving: object = None
    """The gateway runtime serving the request (a module holding it is not reloaded)."""


Body = Mapping[str, Any]
Action = Callable[[Actor, Body], Awaitable[Any]]


def _text(body: Body, name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise ValidationError(
            f"{name!r} must be a non-empty string",
            errors=[{"field": name, "message": "a non-empty string"}],
        )
    return value


def _ids(body: Body) -> list[str] | None:
    value = body.get("ids")
    if value is None:
        return None
    ok = isinstance(value, list) and all(isinstance(i, str) and i for i in value)
    if not ok or not 0 < len(value) <= _MAX_IDS:
        message = f"a list of 1 to {_MAX_IDS} job ids, or absent for every dead job"
        raise ValidationError(
            f"'ids' must be {message}", errors=[{"field": "ids", "message": message}]
        )
    return list(value)


async def _retry_job(actor: Actor, body: Body) -> Any:
    """Run a dead job again from attempt 0 (its error history stays)."""
    job_id = _text(body, "id")
    jobs = actor.kernel.jobs
    record = await jobs.dead_letters.get(job_id)
    if record.state != "dead":
        raise ConflictError(f"job {job_id!r} is {record.state}, not dead", details={"id": job_id})
    await jobs.dead_letters.retry(job_id)
    return {"retried": job_id}


async def _purge_jobs(actor: Actor, body: Body) -> Any:
    """Delete the given dead jobs (only those still dead), or every dead job."""
    ids = _ids(body)
    dead = actor.kernel.jobs.dead_letters
    if ids is None:
        return {"purged": await dead.purge()}
    still = []
    for job_id in ids:  # purge deletes any job not running: keep only the dead ones
        try:
            if (await dead.get(job_id)).state == "dead":
                still.append(job_id)
        except JobNotFoundError:
            continue  # gone already: purged by someone else
    return {"purged": await dead.purge(still) if still else 0}


def _names(body: Body) -> list[str] | None:
    value = body.get("names")
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(n, str) and n for n in value):
        message = "a non-empty list of job names, or absent for every job"
        raise ValidationError(
            f"'names' must be {message}", errors=[{"field": "names", "message": message}]
        )
    return list(value)


def _worker(kernel: Kernel) -> Any:
    """This node's job worker, if it can pause (``pause`` / ``resume`` / ``paused``)."""
    worker = kernel.job_worker
    if worker is None:
        raise ConflictError("this node runs no job worker: there is nothing to pause here")
    if not callable(getattr(worker, "pause", None)):
        raise ConflictError("this node's job worker cannot pause (an organelle without it)")
    return worker


async def _pause_jobs(actor: Actor, body: Body) -> Any:
    """This node's worker stops claiming the named jobs (default: all); they wait queued."""
    return {"paused": sorted(_worker(actor.kernel).pause(_names(body)))}


async def _resume_jobs(actor: Actor, body: Body) -> Any:
    """This node's worker claims the named jobs (default: all) again."""
    return {"paused": sorted(_worker(actor.kernel).resume(_names(body)))}


async def _reload_module(actor: Actor, body: Body) -> Any:
    """A fresh instance of the module's class with its current config, swapped in live."""
    name = _text(body, "module")
    if getattr(actor.kernel.module(name), "runtime", None) is actor.serving:
        # its stop would wait for this very request to finish: reload it from elsewhere
        raise ConflictError(
            f"module {name!r} serves this dashboard: reload it from the CLI or the ops API",
            details={"module": name},
        )
    await actor.kernel.reload_module(name)
    return {"reloaded": name, "state": actor.kernel.state(name).value}


async def _reload_config(actor: Actor, _body: Body) -> Any:
    """Re-read the app's config source; applied everywhere here or rolled back."""
    result = await actor.kernel.reload_config()
    return {
        "changed": list(result.changed),
        "diff": list(result.diff),
        "restart_required": list(result.restart_required),
    }


async def _retry_saga(actor: Actor, body: Body) -> Any:
    saga_id = _text(body, "id")
    await actor.kernel.sagas.retry(saga_id)
    return {"retried": saga_id}


async def _abort_saga(actor: Actor, body: Body) -> Any:
    saga_id = _text(body, "id")
    await actor.kernel.sagas.abort(saga_id)
    return {"aborted": saga_id}


def _flag_answer(flag: str, record: Any) -> Any:
    return {"flag": flag, **record.state(), "by": record.by, "at": record.at}


async def _set_flag(actor: Actor, body: Body) -> Any:
    """Serve ``value`` to everyone the flag's rules do not match."""
    flag = _text(body, "flag")
    if "value" not in body:
        raise ValidationError(
            "'value' is required", errors=[{"field": "value", "message": "required"}]
        )
    return _flag_answer(flag, await actor.kernel.flags.set(flag, body["value"], by=actor.by))


async def _set_rules(actor: Actor, body: Body) -> Any:
    """Replace the flag's rules (``[]`` clears them), or append with ``"append": true``."""
    flag = _text(body, "flag")
    rules = body.get("rules")
    if not isinstance(rules, list):
        message = "a list of rules (tables with value, ids, roles, attributes, percent)"
        raise ValidationError(
            f"'rules' must be {message}", errors=[{"field": "rules", "message": message}]
        )
    replace = not body.get("append", False)
    record = await actor.kernel.flags.rule(flag, rules, replace=replace, by=actor.by)
    return _flag_answer(flag, record)


async def _reset_flag(actor: Actor, body: Body) -> Any:
    flag = _text(body, "flag")
    return _flag_answer(flag, await actor.kernel.flags.reset(flag, by=actor.by))


ACTIONS: dict[str, Action] = {
    "jobs/retry": _retry_job,
    "jobs/purge": _purge_jobs,
    "jobs/pause": _pause_jobs,
    "jobs/resume": _resume_jobs,
    "modules/reload": _reload_module,
    "config/reload": _reload_config,
    "sagas/retry": _retry_saga,
    "sagas/abort": _abort_saga,
    "flags/set": _set_flag,
    "flags/rules": _set_rules,
    "flags/reset": _reset_flag,
}
"""Every action, served as ``POST <path>/api/actions/<name>``."""


def _operator_error(exc: BaseException) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    for cls, status in _OPERATOR:
        if isinstance(exc, cls) and not isinstance(exc, ValidationError):
            assert isinstance(exc, OrganelleError)  # noqa: S101 - the table holds only these
            body: dict[str, Any] = {"code": exc.code, "message": exc.message}
            try:
                payload = _JSON.encode({"error": {**body, "details": exc.details}})
            except ValidationError:
                payload = _JSON.encode({"error": body})
            return status, [], payload
    return error_response(exc)


class ActionEndpoint:
    """``POST <path>/api/actions/<name>``: authenticate, check action roles, act, answer JSON."""

    def __init__(
        self, rt: Runtime, roles: frozenset[str], rbac: Rbac | None, name: str, action: Action
    ) -> None:
        self.rt = rt
        self.roles = roles
        self.rbac = rbac
        self.name = name
        self.action = action

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            principal = await self.rt.authenticate(scope, headers)
            require_roles(principal, self.roles, self.rbac, "a dashboard action")
            body = await self._body(receive, headers)
            actor = Actor(kernel=self.rt.kernel, by=_who(principal), serving=self.rt)
            log.info("dashboard action %s by %s: %s", self.name, actor.by, _brief(body))
            result = await self.action(actor, body)
            try:
                payload = _JSON.encode({"ok": True, "result": result})
            except ValidationError as exc:  # an answer we built that does not encode: our bug
                raise InternalError.wrap(exc) from exc
        except Exception as exc:
            status, extra, payload = _operator_error(exc)
            if status < 500:  # noqa: PLR2004 - the operator's mistake or a refused state
                log.info("dashboard action %s refused: %s", self.name, exc)
            await send_json(send, status, payload, [*extra, *_HEADERS])
            return
        await send_json(send, 200, payload, _HEADERS)

    async def _body(self, receive: Receive, headers: dict[str, str]) -> Body:
        kind = headers.get("content-type", "").partition(";")[0].strip().lower()
        if kind != "application/json":
            raise ValidationError(
                "actions take a JSON body (content-type: application/json)",
                errors=[{"field": "content-type", "message": "application/json"}],
            )
        raw = await read_body(receive, headers, _MAX_BODY, self.rt.config.body_timeout_s)
        try:
            body = msgspec.json.decode(raw or b"{}")
        except msgspec.DecodeError:
            raise ValidationError("the body is not JSON") from None
        if not isinstance(body, dict):
            raise ValidationError("the body must be a JSON object")
        return body


def _who(principal: Principal | None) -> str:
    return "dashboard" if principal is None else f"dashboard:{principal.id}"


def _brief(body: Body) -> str:
    """The body for the log, values of flags left out (they may be anything)."""
    return ", ".join(f"{k}={v!r}" for k, v in body.items() if k in ("id", "module", "flag"))
