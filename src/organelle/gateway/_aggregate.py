"""Aggregation routes: one GET fans out to several RPC calls at once and merges them.

Each part is a call through the kernel with the caller's principal, so every
part is guarded on its own. The answer is ``{"data": {part: result},
"errors": {part: {"code", "message"}}}``: a failed part does not fail the
others. Only when every part failed is the answer an error (the first part's
status, the usual error body, each part's error under ``details.parts``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import msgspec

from organelle.errors import OrganelleError
from organelle.gateway._endpoint import Receive, Scope, Send, send_json
from organelle.gateway._errors import error_response, status_of
from organelle.gateway._runtime import require_roles

if TYPE_CHECKING:
    from organelle.auth.rbac import Rbac
    from organelle.gateway._runtime import Runtime
    from organelle.gateway.config import AggregateConfig

__all__ = ["AggregateEndpoint"]

_SERVER_ERROR = 500


class AggregateEndpoint:
    """The ASGI app of one ``[[modules.gateway.aggregates]]`` entry."""

    def __init__(self, rt: Runtime, config: AggregateConfig, rbac: Rbac | None) -> None:
        self.rt = rt
        self.config = config
        self.roles = frozenset(config.roles)
        self.rbac = rbac
        self.timeout_s = config.timeout_s or rt.config.timeout_s

    def _params(self, template: dict[str, Any], values: dict[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in template.items():
            if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
                name = value[1:-1]
                if name in values:
                    out[key] = values[name]
            else:
                out[key] = value
        return out

    def _coerce(self, target: str, params: dict[str, Any]) -> dict[str, Any]:
        """Convert path/query strings to the target's declared types when it runs here."""
        module, _, method = target.partition(".")
        if not self.rt.is_local(module):
            return params
        from organelle.module import describe

        rpcs = describe(type(self.rt.kernel.module(module))).rpcs
        found = rpcs.get(method)
        if found is None:
            return params
        types = found.contract.types
        out = dict(params)
        for key, value in params.items():
            if isinstance(value, str) and key in types:
                # left as given when it does not convert: the kernel's validation reports it
                with contextlib.suppress(msgspec.ValidationError, TypeError, ValueError):
                    out[key] = msgspec.convert(value, types[key], strict=False)
        return out

    async def __call__(self, scope: Scope, _receive: Receive, send: Send) -> None:
        rt = self.rt
        try:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            principal = await rt.authenticate(scope, headers)
            require_roles(principal, self.roles, self.rbac, self.config.path)
            values = dict(parse_qsl(scope["query_string"].decode("latin-1")))
            values.update(scope.get("path_params", {}))
            names = list(self.config.parts)
            calls = [
                rt.invoke(
                    part.call,
                    self._coerce(part.call, self._params(part.params, values)),
                    principal,
                    self.timeout_s,
                )
                for part in self.config.parts.values()
            ]
            results = await asyncio.gather(*calls, return_exceptions=True)
        except Exception as exc:
            status, extra, body = error_response(exc)
            await send_json(send, status, body, extra)
            return
        data: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                errors[name] = _part_error(result)
            else:
                data[name] = result
        if data or not results:
            await send_json(send, 200, rt.encode({"data": data, "errors": errors}))
            return
        first = next(r for r in results if isinstance(r, BaseException))
        status = status_of(first)
        ours = isinstance(first, OrganelleError) and status < _SERVER_ERROR
        code = first.code if isinstance(first, OrganelleError) and ours else "organelle.internal"
        failed = {"code": code, "message": "every part failed", "details": {"parts": errors}}
        await send_json(send, status, rt.encode({"error": failed}))


def _part_error(exc: Exception) -> dict[str, Any]:
    status = status_of(exc)
    if (status >= _SERVER_ERROR and status not in (503, 504)) or not isinstance(
        exc, OrganelleError
    ):
        _, _, body = error_response(exc)  # logs it under an id
        return dict(msgspec.json.decode(body)["error"])
    return {"code": exc.code, "message": exc.message}
