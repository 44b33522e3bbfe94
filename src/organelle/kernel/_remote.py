"""The remote half of the dispatcher: a call that leaves the node, under its policy.

``Dispatcher`` (``_calls.py``) finds no local route and hands the call here:
its context, its caller's policy (``_policy.Guard``: timeout, breaker,
bulkhead, retries, fallback), the node it goes to (per-node breakers pick
one through ``Routing.pick_node``), and the request through the middleware
onion when there is one (``_dispatch.run_invocation``), else straight to
the router. The common cases are inlined (``_remote_inline``): a remote
call's cost is mostly Python frames.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from organelle.errors import (
    CircuitOpenError,
    InternalError,
    OrganelleError,
    UnavailableError,
)
from organelle.kernel._dispatch import CallNext, Invocation, run_invocation
from organelle.kernel._listen import CallReport
from organelle.kernel._policy import CLOSED, Guard, Policies, failed_call

if TYPE_CHECKING:
    from organelle.context import Context
    from organelle.kernel._listen import Listeners
    from organelle.kernel._router import Router

__all__ = ["RemoteCalls", "error_code"]

_monotonic = time.monotonic
_perf = time.perf_counter
_MAX_UNDELIVERED = 4  # nodes gone since the registry was read, tried in one attempt
_FOREVER = float("inf")


def error_code(exc: BaseException) -> str:
    """The stable code a caller sees for ``exc`` (a listener's ``error``)."""
    if isinstance(exc, OrganelleError):
        return exc.code
    # Other exceptions reach callers as InternalError; cancellation is not an error code.
    return InternalError.code if isinstance(exc, Exception) else "cancelled"


class RemoteCalls:
    """Calls to other nodes; mixed into ``Dispatcher``, whose state it reads."""

    # the dispatcher's, set in its __init__
    _router: Router
    _detour: bool
    _chain: CallNext | None
    policies: Policies
    listeners: Listeners
    # the dispatcher's methods this half calls
    _outgoing: Callable[..., Context]
    _missing: Callable[[object], OrganelleError]
    call_with: Callable[..., Coroutine[Any, Any, Any]]

    async def _call_remote(  # noqa: PLR0917 - call_with's options, passed on
        self,
        target: str,
        params: dict[str, Any],
        timeout_s: float | None,
        meta: dict[str, Any] | None,
        principal: Any,
        caller: str | None = None,
    ) -> Any:
        router = self._router
        if router.transport.solo or not isinstance(target, str) or "." not in target:
            raise self._missing(target)
        if router.blocked(target):
            raise self._missing(target)
        ctx = self._outgoing(target, timeout_s, meta, principal)
        guard = self.policies.guard(caller, target)
        if guard is None:
            return await self._remote_once(target, params, ctx)
        if guard.inline:
            bulkhead = guard.bulkhead
            if bulkhead is None or (
                bulkhead.active < bulkhead.policy.max_concurrent and not bulkhead.waiters
            ):
                return await self._remote_inline(guard, target, params, ctx)
        fallback = self._fallback(params, caller)
        if guard.per_node:
            tried: set[str] = set()

            async def to_a_node(until: float) -> Any:
                ctx.deadline = until
                return await self._remote_to_a_node(guard, target, params, ctx, tried)

            return await guard.run(to_a_node, ctx.deadline, fallback, nodes=True)  # type: ignore[arg-type]

        async def attempt(until: float) -> Any:
            ctx.deadline = until
            return await self._remote_once(target, params, ctx)

        return await guard.run(attempt, ctx.deadline, fallback)  # type: ignore[arg-type]

    async def _remote_inline(  # noqa: C901, PLR0912 - the per-node common case inlined
        self, guard: Guard, target: str, params: dict[str, Any], ctx: Context
    ) -> Any:
        """A remote call whose policy has no retry or fallback, with a free bulkhead slot.

        What ``Guard.run`` does for such a policy, without its two coroutine
        layers and closure: the remote path's cost is mostly frames. Under
        per-node breakers, when the node picked in turn has a closed breaker
        and nothing stands between the call and the wire (no middleware,
        listener or weighted route), the request goes out from here, five
        frames fewer than ``_remote_to_a_node``, which takes every other case.
        """
        now = _monotonic()
        if guard.bucket is not None:
            guard.take_token(now)
        deadline = ctx.deadline or _FOREVER  # _outgoing set one
        if guard.timeout >= 0 and now + guard.timeout < deadline:
            deadline = now + guard.timeout
        ctx.deadline = deadline
        bulkhead = guard.bulkhead
        if bulkhead is not None:
            bulkhead.active += 1  # the caller saw a free slot
        try:
            if guard.per_node:
                routing = self._router.routing
                node = None
                if not self._detour and target.partition(".")[0] not in routing.tables:
                    node = routing.pick_node(target, params, ctx)
                breaker = guard.nodes.get(node) if node is not None else None
                if node is None or breaker is None or breaker.state != CLOSED:
                    return await self._remote_to_a_node(guard, target, params, ctx, set())
            else:
                node, breaker = None, guard.breaker
                if breaker is None:
                    return await self._remote_once(target, params, ctx)
                if not breaker.allow(now):
                    raise guard.refused(breaker, now)
            try:
                if node is None:
                    result = await self._remote_once(target, params, ctx)
                else:
                    result = await self._router.transport.request(target, params, ctx, node)
            except Exception as exc:
                if node is not None and isinstance(exc, OrganelleError) and exc.node is None:
                    exc.node = node  # as Routing.send_to does: the error is about that node
                breaker.record(ok=not failed_call(exc), now=_monotonic())
                if (
                    node is not None
                    and isinstance(exc, UnavailableError)
                    and exc.details.get("delivered") is False
                ):  # that node never had it: another one may
                    return await self._remote_to_a_node(guard, target, params, ctx, {node})
                raise
            if breaker.state == CLOSED:  # Breaker.record's common case, as the C path does it
                breaker.push(True)  # noqa: FBT003 - the outcome
                breaker.consecutive = 0
            else:
                breaker.record(ok=True, now=_monotonic())
            return result
        finally:
            if bulkhead is not None:
                if bulkhead.waiters:
                    bulkhead.release()
                else:
                    bulkhead.active -= 1

    async def _remote_to_a_node(
        self, guard: Guard, target: str, params: dict[str, Any], ctx: Context, tried: set[str]
    ) -> Any:
        """One try under per-node breakers: a node whose breaker is closed, not tried yet if any.

        A node that never received the call (gone since the registry was read)
        counts against its breaker and the call goes to another one at once.

        A node whose half-open breaker sent its probe out meanwhile is skipped
        the same way (refusing the call would turn one sick node into an error
        while others serve).

        Raises:
            CircuitOpenError: every node tried was refused that way.
            UnavailableError: no node tried received the call.
        """
        last: OrganelleError | None = None
        for _ in range(_MAX_UNDELIVERED):
            now = _monotonic()
            node, panic = self._node_for(guard, target, params, ctx, tried, now)
            if node is None:  # the registry lists nobody yet: the queue group, no node breaker
                return await self._remote_once(target, params, ctx)
            tried.add(node)
            breaker = guard.node_breaker(node)
            if not panic and not breaker.allow(now):  # its probe went out meanwhile: next node
                last = CircuitOpenError(
                    f"calls to {target!r} on node {node!r} are failing: circuit open",
                    details={"target": target, "retry_after_s": breaker.retry_after(now)},
                )
                last.node = node
                continue
            try:
                result = await self._remote_once(target, params, ctx, node)
            except Exception as exc:
                breaker.record(ok=not failed_call(exc), now=_monotonic())
                if isinstance(exc, UnavailableError) and exc.details.get("delivered") is False:
                    last = exc
                    continue
                raise
            breaker.record(ok=True, now=_monotonic())
            return result
        assert last is not None  # noqa: S101 - the loop ran and every pass set it
        raise last

    def _node_for(  # noqa: PLR0917 - one call's parts, passed on
        self,
        guard: Guard,
        target: str,
        params: dict[str, Any],
        ctx: Context,
        tried: set[str],
        now: float,
    ) -> tuple[str | None, bool]:
        """A node whose breaker is closed, one not tried yet if there is one; and ``panic``.

        When every node's breaker is open the call goes to one of them anyway
        (``panic`` true: no breaker refuses it): leaving every node out would
        turn a partial outage into a total one (Envoy's panic threshold).
        """
        avoid = guard.avoid(now)
        routing = self._router.routing
        for skip in (avoid | tried, avoid) if tried else (avoid,):
            try:
                return routing.pick_node(target, params, ctx, skip), False
            except UnavailableError:  # every node is in ``skip``
                continue
        try:
            return routing.pick_node(target, params, ctx, tried), True
        except UnavailableError:
            return routing.pick_node(target, params, ctx, ()), True

    def _fallback(
        self, params: Mapping[str, Any], caller: str | None
    ) -> Callable[[str], Coroutine[Any, Any, Any]]:
        async def fallback(target: str) -> Any:
            return await self.call_with(target, params, caller=caller)

        return fallback

    async def _remote_once(
        self, target: str, params: dict[str, Any], ctx: Context, node: str | None = None
    ) -> Any:
        """One try of a call to another node (``node``, or any): the request, through the onion."""
        router = self._router
        if not self._detour:
            return await router.send(target, params, ctx, node=node)
        send = self._send if node is None else functools.partial(self._send, node=node)
        inv = Invocation(
            "rpc", target, target.partition(".")[0], params, None, ctx, send, remote=True
        )
        if not self.listeners.calls:
            return await run_invocation(self._chain, inv)
        started = _perf()
        error = None
        try:
            return await run_invocation(self._chain, inv)
        except BaseException as exc:
            error = error_code(exc)
            raise
        finally:
            self.listeners.call(
                CallReport(
                    target=target,
                    remote=True,
                    duration_s=_perf() - started,
                    error=error,
                    suspended=True,
                )
            )

    def _send(self, inv: Invocation, node: str | None = None) -> Any:
        """The innermost step of a call leaving the node: the transport request."""
        return self._router.send(inv.target, inv.params or {}, inv.context, node=node)
