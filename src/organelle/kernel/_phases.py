"""The phases of a module's life inside the kernel: load, start, stop, routing.

A mixin of ``Kernel``: the mechanics under ``start()``/``stop()`` and the
runtime changes, kept apart from the call and event paths.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from typing import TYPE_CHECKING, Any

from organelle._native import speedups
from organelle.context import root_context
from organelle.errors import LifecycleError, ValidationError
from organelle.kernel import _lifecycle as lc
from organelle.kernel._lifecycle import ModuleState, Record
from organelle.module._topics import matches

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from organelle.auth.base import Authorizer
    from organelle.config.settings import KernelSettings
    from organelle.kernel._bus import EventBus
    from organelle.kernel._dispatch import Invocation
    from organelle.module._signature import ParamsContract
    from organelle.transport import Transport

__all__ = ["CallStats", "Phases", "RpcEntry"]


class CallStats:
    """Counters of one RPC method, kept by the kernel itself when metrics ask for them.

    Every call is counted; only calls whose handler suspends are timed (a
    handler that finishes in its first step takes about a microsecond, below
    the first histogram bucket), so a call that does not suspend pays one
    increment and no clock reads.
    """

    __slots__ = ("bounds", "calls", "counts", "errors", "pending", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.calls = 0
        self.counts = [0] * (len(bounds) + 1)  # suspended calls per bucket; the last is +Inf
        self.sum = 0.0
        self.pending = 0  # suspended now, not yet timed
        self.errors: dict[str, int] = {}

    def timed(self, seconds: float) -> None:
        """Record a call that suspended and took ``seconds``."""
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    def error(self, code: str) -> None:
        """Count a call that raised an error with ``code``."""
        self.errors[code] = self.errors.get(code, 0) + 1


if TYPE_CHECKING or speedups is None:

    class _RouteBase:
        """The fields the call path reads (in C when the extension is built)."""

        __slots__ = ("checks", "contract", "exact", "fn", "nrequired", "slow", "stats", "target")

        fn: Any
        contract: ParamsContract | None
        exact: Callable[[dict[str, Any]], bool] | None
        stats: CallStats | None
        checks: tuple[tuple[str, type | None, bool, bool], ...] | None
        target: str
        nrequired: int
        slow: bool

else:
    _RouteBase = speedups.RouteBase


class RpcEntry(_RouteBase):
    """A routable RPC method: the bound handler and everything checked before it runs."""

    __slots__ = ("guard", "module", "timeout_s")

    def __init__(self, rec: Record, method: str, validate: bool, authorizer: Authorizer) -> None:
        meta = rec.spec.rpcs[method]
        self.fn = getattr(rec.instance, meta.attr)
        self.contract = meta.contract if (validate and meta.spec.validate) else None
        # The generated check that params already have exactly the declared simple types.
        self.exact = None if self.contract is None else self.contract.fast
        self.checks = None if self.contract is None else self.contract.checks
        self.nrequired = sum(1 for c in self.checks or () if c[3])
        self.module = rec.name
        self.target = f"{rec.name}.{method}"
        self.timeout_s = meta.spec.timeout_s
        self.guard = authorizer.guard_for(self.target, meta.spec.roles, meta.spec.permissions)
        self.stats: CallStats | None = None
        # Anything beyond a plain call takes _invoke, keeping the inline path lean.
        self.slow = self.timeout_s is not None or self.guard is not None

    def bad_params(self, exc: TypeError) -> ValidationError:
        """The error for params that do not bind to an unvalidated handler."""
        return ValidationError(
            f"invalid parameters for {self.target}: {exc}",
            errors=[{"field": "$", "message": str(exc)}],
        )

    def start(self, params: dict[str, Any]) -> Coroutine[Any, Any, Any]:
        """Validate ``params`` and create (not start) the handler's coroutine."""
        contract = self.contract
        if contract is None:
            try:
                return self.fn(**params)  # type: ignore[no-any-return]
            except TypeError as exc:  # binding failed: the coroutine never started
                raise self.bad_params(exc) from None
        args = contract.validate(params)
        return self.fn(*args) if isinstance(args, tuple) else self.fn(**args)  # type: ignore[no-any-return]

    def invoke(self, inv: Invocation) -> Coroutine[Any, Any, Any]:
        """The innermost step of the middleware chain."""
        return self.start(inv.params or {})


class Phases:
    """Load, start, stop and route modules (state lives on ``Kernel``)."""

    settings: KernelSettings
    authorizer: Authorizer
    _records: dict[str, Record]
    _rpc: dict[str, RpcEntry]
    _serving: dict[str, RpcEntry]
    _transport: Transport | None
    _bus: EventBus
    _taps: list[tuple[str, list[tuple[str, Any]]]]
    call_stats: dict[str, CallStats] | None
    _bounds: tuple[float, ...]

    def enable_call_stats(self, bounds: tuple[float, ...]) -> dict[str, CallStats]:
        """Have the kernel count every RPC it serves (for metrics); return the live table.

        Cheaper than timing middleware: a call that does not suspend costs one
        increment. Histogram ``bounds`` are in seconds.
        """
        if self.call_stats is None:
            self.call_stats = {}
            self._bounds = tuple(sorted(bounds))
            for entry in self._serving.values():
                entry.stats = self.call_stats.setdefault(entry.target, CallStats(self._bounds))
        return self.call_stats

    def _is_active(self, name: str) -> bool:
        rec = self._records.get(name)
        return rec is not None and rec.state is ModuleState.ACTIVE

    def _timeout(self, rec: Record) -> float:
        own = type(rec.instance).hook_timeout_s
        return self.settings.hook_timeout_s if own is None else own

    async def _set_state(self, rec: Record, state: ModuleState) -> None:
        rec.state = state
        payload = {"module": rec.name, "version": str(rec.spec.version), "state": state.value}
        if rec.error is not None and state is ModuleState.FAILED:
            payload["error"] = rec.error
        topic = lc.STATE_TOPICS[state]
        subs = self._bus.route(topic)
        for pattern, sink in self._taps:
            if matches(pattern, topic):
                sink.append((topic, payload))
        if subs:
            await self._bus.publish(subs, payload, root_context(None, topic=topic))

    async def _load(self, levels: list[list[str]]) -> None:
        for level in levels:
            for name in level:
                rec = self._records[name]
                if rec.loaded:
                    continue
                try:
                    await lc.run_hook(rec, "on_load", self._timeout(rec))
                except LifecycleError as exc:
                    await self._fail(rec, exc)
                    raise
                rec.loaded = True
                await self._set_state(rec, ModuleState.LOADED)

    async def _start_levels(self, levels: list[list[str]]) -> None:
        started: list[str] = []
        for level in levels:
            names = [n for n in level if not self._is_active(n)]
            results = await asyncio.gather(
                *(self._start_one(self._records[n]) for n in names), return_exceptions=True
            )
            errors = [r for r in results if isinstance(r, BaseException)]
            started += [n for n, r in zip(names, results, strict=True) if r is None]
            if errors:
                for level_names in reversed([*levels[: levels.index(level)], names]):
                    await self._stop_many([n for n in level_names if n in started])
                raise errors[0]

    async def _start_one(self, rec: Record) -> None:
        await self._set_state(rec, ModuleState.STARTING)
        self._route(rec)
        try:
            await lc.run_hook(rec, "on_start", self._timeout(rec))
        except LifecycleError as exc:
            self._unroute(rec.name)
            await self._fail(rec, exc)
            raise
        rec.error = None
        if self._transport is not None:
            await self._transport.expose(rec.spec)
        await self._set_state(rec, ModuleState.ACTIVE)

    async def _fail(self, rec: Record, exc: LifecycleError) -> None:
        rec.error = str(exc)
        await lc.quietly(rec, "on_abort", self._timeout(rec), exc)
        await rec.instance._cancel_background()
        await self._set_state(rec, ModuleState.FAILED)

    async def _stop_many(self, names: list[str]) -> None:
        await asyncio.gather(*(self._stop_one(self._records[n]) for n in names))

    async def _stop_one(self, rec: Record) -> None:
        if self._transport is not None:
            await self._transport.withdraw(rec.name)
        await self._set_state(rec, ModuleState.STOPPING)
        self._bus.unsubscribe(rec.name)
        error = await lc.quietly(rec, "on_stop", self._timeout(rec))
        await rec.instance._cancel_background()
        self._unroute(rec.name)
        rec.error = error
        await self._set_state(rec, ModuleState.FAILED if error else ModuleState.STOPPED)

    def _route(self, rec: Record) -> None:
        validate = self.settings.validate
        prefer_local = self.settings.prefer_local or self._transport is None
        for method in rec.spec.rpcs:
            entry = RpcEntry(rec, method, validate, self.authorizer)
            if self.call_stats is not None:
                entry.stats = self.call_stats.setdefault(entry.target, CallStats(self._bounds))
            self._serving[entry.target] = entry
            if prefer_local:
                self._rpc[entry.target] = entry
        self._bus.unsubscribe(rec.name)
        for sub in rec.spec.subscriptions:
            self._bus.subscribe(rec.name, sub, getattr(rec.instance, sub.attr))

    def _unroute(self, name: str) -> None:
        prefix = name + "."
        for table in (self._rpc, self._serving):
            for target in [t for t in table if t.startswith(prefix)]:
                del table[target]
        self._bus.unsubscribe(name)
