"""The call path: local RPC as a direct await, remote RPC through a transport, inbound calls.

A mixin of ``Kernel``. ``call`` is the hot path and is written out inline;
everything with options, middleware, guards or a transport takes the slower,
shared paths below it. Where the C extension is built, ``kernel.call`` is its
``Caller.call``: the same hot path in C, which hands everything else back to
the Python ``call`` below and a suspended handler to ``_resume``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, cast, overload

from organelle._native import speedups
from organelle.context import _EMPTY_META, Context, _counter, _current, _next_seq, root_context
from organelle.errors import (
    CallTimeoutError,
    InternalError,
    NotFoundError,
    OrganelleError,
    UnavailableError,
    ValidationError,
)
from organelle.kernel._dispatch import CallNext, Invocation, run_chain, run_until
from organelle.kernel._phases import CallStats, Phases, RpcEntry
from organelle.observability.hooks import hooks_for

if TYPE_CHECKING:
    from organelle.kernel._lifecycle import Record

__all__ = ["Calls", "Outbound"]

Outbound = Callable[
    [str, dict[str, Any], Context, Callable[[str, dict[str, Any], Context], Awaitable[Any]]],
    Awaitable[Any],
]
"""Wraps every remote call on the calling side (tracing's ``CLIENT`` span):
``outbound(target, params, ctx, send)`` must ``await send(target, params, ctx)``."""

_monotonic = time.monotonic
_perf = time.perf_counter
T = TypeVar("T")


class _Synced(Generic[T]):
    """An attribute whose every assignment re-syncs the C call path's flags."""

    def __init__(self, store: str) -> None:
        self.store = store

    @overload
    def __get__(self, obj: None, owner: type) -> _Synced[T]: ...
    @overload
    def __get__(self, obj: Calls, owner: type) -> T: ...
    def __get__(self, obj: Calls | None, owner: type) -> T | _Synced[T]:
        return self if obj is None else cast("T", getattr(obj, self.store))

    def __set__(self, obj: Calls, value: T) -> None:
        setattr(obj, self.store, value)
        obj._sync_caller()


class Calls(Phases):
    """``call``, ``call_with``, ``dispatch``, ``deliver``, ``wait_for`` (state on ``Kernel``)."""

    _records: dict[str, Record]
    _running: bool
    _inflight: int
    outbound: Outbound | None
    _caller: Any = None  # speedups.Caller, when the C path serves kernel.call
    _chain_now: CallNext | None = None
    _timeout_now: float = 10.0
    _accepting_now: bool = False  # read directly on the Python hot path
    _chain = _Synced[CallNext | None]("_chain_now")
    _call_timeout_s = _Synced[float]("_timeout_now")
    _accepting = _Synced[bool]("_accepting_now")

    def _use_speedups(self) -> None:
        """Serve ``kernel.call`` from C (unless a subclass overrides ``call``)."""
        if speedups is None or type(self).call is not Calls.call:
            return
        caller = speedups.Caller(
            self._rpc,
            _current,
            Context,
            _counter,
            _EMPTY_META,
            Calls.call.__get__(self),
            self._resume,
            self._call_failed,
            self._timeout_now,
        )
        bus = self._bus
        caller.bind_events(
            type(self).emit.__get__(self),  # type: ignore[attr-defined]
            bus._cache,
            bus._queue,
            bus._wake,
            bus._max_pending,
            self._taps,
            self._tap,  # type: ignore[attr-defined]
        )
        bus.deliver = caller.deliver
        self._caller = caller
        self.call = caller.call  # type: ignore[method-assign]
        self._sync_caller()

    def _sync_caller(self) -> None:
        """Keep the C path's flags in step (it only serves the plain cases)."""
        caller = self._caller
        if caller is not None:
            caller.enabled = self._accepting_now and self._chain_now is None
            caller.timeout = self._timeout_now
            caller.emit_enabled = self._accepting_now and getattr(self, "_transport", None) is None

    async def call(self, target: str, /, **params: Any) -> Any:  # noqa: C901, PLR0912, PLR0915 - hot path inlined
        """Call ``"<module>.<method>"`` with keyword params and return its result.

        Inside a handler the call inherits the context and never gets more
        time than the caller has left. For options (timeout, meta) use
        ``call_with``, so option names never collide with parameter names.

        Raises:
            NotFoundError: no such module or method.
            ValidationError: bad parameters, each bad field listed.
            CallTimeoutError: the deadline passed.
            InternalError: the handler raised a non-organelle exception.
        """
        entry = self._rpc.get(target)
        if entry is None:
            return await self._call_remote(target, params, None, None, None)
        now = _monotonic()
        deadline = now + self._call_timeout_s
        parent = _current.get()
        if parent is None:
            if not self._accepting_now:
                raise self._closed()
            ctx = Context(_next_seq(), deadline, None, None, None, _EMPTY_META, None)
        else:
            pd = parent.deadline
            if pd is not None and pd < deadline:
                if pd <= now:
                    raise CallTimeoutError(f"call to {target!r} timed out before it started")
                deadline = pd
            ctx = parent.child(deadline)
        if entry.slow or self._chain is not None:
            return await self._invoke(entry, params, ctx, deadline)
        # The hot path, inlined: _invoke without middleware or per-method timeout.
        # A handler that finishes in its first step cannot be seen half-done by
        # shutdown, so only suspended calls are counted as in flight.
        token = _current.set(ctx)
        coro = None
        stats = entry.stats
        if stats is not None:
            stats.calls += 1
        try:
            contract = entry.contract
            exact = entry.exact  # params already of exactly the declared simple types
            if contract is None or (exact is not None and exact(params)):
                coro = entry.fn(**params)
            else:
                args = contract.validate(params)
                coro = entry.fn(*args) if isinstance(args, tuple) else entry.fn(**args)
            try:
                first = coro.send(None)
            except StopIteration as stop:
                return stop.value
            return await self._suspended(coro, first, deadline, target, stats)
        except OrganelleError as exc:
            if stats is not None:
                stats.error(exc.code)
            raise
        except TypeError as exc:
            err = (
                entry.bad_params(exc)
                if coro is None and contract is None  # binding failed: the handler never ran
                else InternalError.wrap(exc)
            )
            if stats is not None:
                stats.error(err.code)
            raise err from (None if coro is None and contract is None else exc)
        except Exception as exc:
            if stats is not None:
                stats.error(InternalError.code)
            raise InternalError.wrap(exc) from exc
        finally:
            _current.reset(token)

    async def _resume(
        self,
        coro: Coroutine[Any, Any, Any],
        first: Any,
        ctx: Context,
        deadline: float,
        entry: RpcEntry,
    ) -> Any:
        """Finish a handler the C path started and that suspended (in the awaiting task)."""
        token = _current.set(ctx)
        try:
            return await self._suspended(coro, first, deadline, entry.target, entry.stats)
        except Exception as exc:
            err = self._call_failed(entry, exc, ran=True)
            if err is exc:
                raise
            raise err from exc
        finally:
            _current.reset(token)

    def _call_failed(self, entry: RpcEntry, exc: BaseException, ran: bool) -> BaseException:
        """The error the C path hands to the caller (counted), as ``call`` would raise it."""
        if not isinstance(exc, Exception):  # cancellation, exit: passed on untouched
            return exc
        err: OrganelleError
        if isinstance(exc, OrganelleError):
            err = exc
        elif isinstance(exc, TypeError) and not ran and entry.contract is None:
            err = entry.bad_params(exc)  # binding failed: the handler never ran
            err.__suppress_context__ = True
        else:
            err = InternalError.wrap(exc)
        if entry.stats is not None:
            entry.stats.error(err.code)
        return err

    async def call_with(
        self,
        target: str,
        params: Mapping[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
        meta: dict[str, Any] | None = None,
        principal: Any = None,
    ) -> Any:
        """Call with explicit options.

        ``timeout_s`` is capped by the caller's deadline, ``meta`` is merged into
        the context and ``principal`` replaces the caller's.
        """
        if params is None:
            params = {}
        elif not isinstance(params, Mapping):
            raise ValidationError(
                f"params for {target!r} must be a mapping",
                errors=[{"field": "$", "message": "parameters must be an object"}],
            )
        entry = self._rpc.get(target)
        if entry is None:
            return await self._call_remote(target, dict(params), timeout_s, meta, principal)
        ctx = self._outgoing(target, timeout_s, meta, principal)
        return await self._invoke(entry, dict(params), ctx, ctx.deadline)  # type: ignore[arg-type]

    async def _call_remote(
        self,
        target: str,
        params: dict[str, Any],
        timeout_s: float | None,
        meta: dict[str, Any] | None,
        principal: Any,
    ) -> Any:
        transport = self._transport
        if transport is None or not isinstance(target, str) or "." not in target:
            raise self._missing(target)
        if self._remote_blocked(target):
            raise self._missing(target)
        ctx = self._outgoing(target, timeout_s, meta, principal)
        outbound = self.outbound
        if outbound is not None:
            return await outbound(target, params, ctx, transport.request)
        return await transport.request(target, params, ctx)

    def _outgoing(
        self, target: str, timeout_s: float | None, meta: dict[str, Any] | None, principal: Any
    ) -> Context:
        """The context of a call made with options (the slow path of ``call``)."""
        now = _monotonic()
        deadline = now + (self._call_timeout_s if timeout_s is None else timeout_s)
        parent = _current.get()
        if parent is None:
            if not self._accepting_now:
                raise self._closed()
            ctx = root_context(deadline, meta=meta, principal=principal)
        else:
            pd = parent.deadline
            if pd is not None and pd < deadline:
                deadline = pd
            ctx = parent.child(deadline, meta=meta, principal=principal)
        if deadline <= now:
            raise CallTimeoutError(f"call to {target!r} timed out before it started")
        return ctx

    def _remote_blocked(self, target: str) -> bool:
        """A local module that is not serving must not be shadowed by a remote one silently."""
        module, _, method = target.partition(".")
        rec = self._records.get(module)
        return rec is not None and self.settings.prefer_local and method not in rec.spec.rpcs

    async def dispatch(self, target: str, params: dict[str, Any], ctx: Context) -> Any:
        """Serve a call that arrived from a transport (or a gateway) with its context.

        The wire's context (ids, deadline, principal, meta) is kept; the call
        is refused while draining, so a balancer sends it elsewhere.

        Raises:
            NotFoundError, ValidationError, CallTimeoutError, InternalError,
            UnavailableError: as for a local call.
        """
        entry = self._serving.get(target)
        if entry is None:
            raise self._missing(target)
        if not self._accepting_now:
            raise self._closed()
        deadline = ctx.deadline
        if deadline is None:
            deadline = ctx.deadline = _monotonic() + self._call_timeout_s
        elif deadline <= _monotonic():
            raise CallTimeoutError(f"call to {target!r} arrived past its deadline")
        return await self._invoke(entry, params, ctx, deadline)

    async def deliver(self, module: str, handler: str, payload: Any, ctx: Context) -> None:
        """Queue an event that arrived from a transport for one local handler.

        Waits while the local queue is full, so the transport's flow control
        (and not a drop) absorbs the pressure.
        """
        bus = self._bus
        key = f"{module} {handler} {ctx.topic}"  # never a topic (no spaces): shares route()'s cache
        subs = bus._cache.get(key)
        if subs is None:
            subs = bus._cache[key] = bus.handler_subs(module, handler, ctx.topic or "")
        if subs and not bus.offer(subs, payload, ctx):
            await bus.publish(subs, payload, ctx)

    def connection_event(self, event: Literal["disconnected", "reconnected"]) -> None:
        """A transport reports its connection going down or coming back (for metrics)."""
        transport = hooks_for(self).transport
        if event == "disconnected":
            transport.disconnected()
        else:
            transport.reconnected()

    async def wait_for(self, name: str, timeout_s: float = 10.0) -> None:
        """Return once module ``name`` serves, here or (with a transport) on any node.

        Raises:
            CallTimeoutError: it did not appear within ``timeout_s``.
        """
        deadline = _monotonic() + timeout_s
        while not self._is_active(name):
            if self._transport is not None:
                await self._transport.wait_for(name, max(0.0, deadline - _monotonic()))
                return
            if _monotonic() >= deadline:
                raise CallTimeoutError(
                    f"module {name!r} did not become available in {timeout_s:g}s"
                )
            await asyncio.sleep(0.01)

    async def _invoke(
        self, entry: RpcEntry, params: dict[str, Any], ctx: Context, deadline: float
    ) -> Any:
        stats = entry.stats
        if stats is not None:
            stats.calls += 1
        try:
            if entry.guard is not None:
                entry.guard(ctx)
            if entry.timeout_s is not None:
                deadline = min(deadline, _monotonic() + entry.timeout_s)
                ctx.deadline = deadline
            token = _current.set(ctx)
            try:
                if self._chain is None:
                    coro = entry.start(params)
                else:
                    coro = self._through_chain(entry, params, ctx)
                try:
                    first = coro.send(None)
                except StopIteration as stop:
                    return stop.value
                return await self._suspended(coro, first, deadline, entry.target, stats)
            finally:
                _current.reset(token)
        except OrganelleError as exc:
            if stats is not None:
                stats.error(exc.code)
            raise
        except Exception as exc:
            if stats is not None:
                stats.error(InternalError.code)
            raise InternalError.wrap(exc) from exc

    async def _suspended(
        self,
        coro: Coroutine[Any, Any, Any],
        first: Any,
        deadline: float,
        target: str,
        stats: CallStats | None,
    ) -> Any:
        """Finish a handler that suspended: counted in flight, timed when stats are on."""
        self._inflight += 1
        started = 0.0
        if stats is not None:
            stats.pending += 1
            started = _perf()
        try:
            return await run_until(coro, first, deadline, target)
        finally:
            self._inflight -= 1
            if stats is not None:
                stats.pending -= 1
                stats.timed(_perf() - started)

    def _through_chain(self, entry: RpcEntry, params: dict[str, Any], ctx: Context) -> Any:
        assert self._chain is not None  # noqa: S101 - checked by the caller
        return run_chain(
            self._chain,
            Invocation("rpc", entry.target, entry.module, params, None, ctx, entry.invoke),
        )

    def _missing(self, target: object) -> OrganelleError:
        if not isinstance(target, str) or "." not in target:
            return ValidationError(
                f"call target {target!r} must look like 'module.method'",
                errors=[{"field": "target", "message": "expected 'module.method'"}],
            )
        module, _, method = target.partition(".")
        rec = self._records.get(module)
        if rec is None:
            return NotFoundError(f"no module named {module!r}", details={"target": target})
        if method in rec.spec.rpcs:
            if not self._running:
                return self._closed()
            return UnavailableError(
                f"module {module!r} is {rec.state.value}, not serving calls",
                details={"target": target, "state": rec.state.value},
            )
        return NotFoundError(
            f"module {module!r} has no RPC method {method!r}", details={"target": target}
        )

    def _closed(self) -> UnavailableError:
        state = "draining" if self._running else "not running"
        return UnavailableError(f"kernel is {state}; not taking new calls or events")
