"""The dispatcher: local RPC as a direct await, calls to other nodes, inbound calls, emit.

``call`` is the hot path and is written out inline; everything with options,
middleware, guards, ``on_call`` listeners or a transport takes the slower,
shared path below it (``_invoke``), which runs an ``Invocation`` through the
one pipeline (``run_invocation``). Calls that leave the node go through the
same onion, as ``"rpc"`` invocations with ``remote`` set.
Where the C extension is built, ``kernel.call`` is its ``Caller.call``: the
same hot path in C, which hands everything else back to the Python ``call``
below and a suspended handler to ``_resume``. ``_bind_compiled`` is the one
place the compiled path is bound; ``_sync`` keeps its flags in step.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from organelle._coro import Unfinished
from organelle._native import speedups
from organelle.context import _EMPTY_META, Context, _counter, _current, _next_seq, root_context
from organelle.envelope import Envelope, EnvelopeFactory, Incoming, event_topic
from organelle.errors import (
    CallTimeoutError,
    InternalError,
    NotFoundError,
    OrganelleError,
    UnavailableError,
    ValidationError,
)
from organelle.kernel._bus import EnvelopeRoute
from organelle.kernel._dispatch import (
    CallNext,
    Invocation,
    Middleware,
    build_chain,
    run_invocation,
    run_until,
)
from organelle.kernel._listen import CallReport, EventReport, LifecycleReport
from organelle.kernel._policy import CANCELLED, Guard, Policies
from organelle.kernel._remote import RemoteCalls, error_code
from organelle.module._topics import check_topic
from organelle.transport._throttle import ThrottledLog

if TYPE_CHECKING:
    from organelle.config.settings import KernelSettings
    from organelle.kernel._bus import EventBus
    from organelle.kernel._listen import Listener, Listeners
    from organelle.kernel._router import Router
    from organelle.kernel._routes import CallStats, RpcEntry
    from organelle.kernel._slots import Slots


log = logging.getLogger("organelle.events")
_malformed = ThrottledLog(log, interval_s=10.0)
__all__ = ["Dispatcher"]

_monotonic = time.monotonic
_perf = time.perf_counter


class Dispatcher(RemoteCalls):
    """Runs calls and events: ``call``, ``call_with``, ``emit``, ``dispatch``, ``deliver``.

    The lifecycle flips ``running`` and ``accepting``; config reload sets
    ``call_timeout_s``; ``use`` adds middleware, ``listen`` listeners. Each of
    those re-syncs the compiled path, which serves only the plain cases.
    """

    def __init__(  # noqa: PLR0917 - the parts it serves from, named once by the façade
        self,
        slots: Slots,
        router: Router,
        bus: EventBus,
        settings: Callable[[], KernelSettings],
        middleware: list[Middleware],
        listeners: Listeners,
        *,
        policies: Policies,
        compiled: bool = True,
    ) -> None:
        self._slots = slots
        self.policies = policies
        self._router = router
        self._rpc = router.local  # the very dict the compiled path reads
        self._bus = bus
        self._settings = settings
        self._middleware: tuple[Middleware, ...] = tuple(middleware)
        self._chain: CallNext | None = build_chain(self._middleware)
        bus.chain = self._chain
        self.listeners = listeners
        self._emits = listeners.emits  # changed in place: read on the Python emit path
        # Whether a local call must leave the inline path (middleware or on_call listeners):
        # one flag, so the inline path reads no more than it did with middleware alone.
        self._detour = False
        self._suspends = 0  # suspended calls so far: tells a listener whether one suspended
        self._call_timeout_s = settings().call_timeout_s
        self._accepting_now = False  # read directly on the Python hot path
        self._opened = asyncio.Event()  # set while accepting: a starting node's callers wait on it
        self.running = False
        self.starting = False  # running, not yet accepting: says "starting", not "draining"
        self._inflight = 0
        self._caller: Any = None  # speedups.Caller, when the C path serves call and emit
        self._factory: EnvelopeFactory | None = None
        self.call: Callable[..., Any] = self.python_call
        self.emit: Callable[..., Any] = self.python_emit
        if compiled:
            self._bind_compiled()

    # flags the compiled path mirrors ------------------------------------------------
    @property
    def accepting(self) -> bool:
        """Whether outside calls and events are taken (started, not draining)."""
        return self._accepting_now

    @accepting.setter
    def accepting(self, value: bool) -> None:
        self._accepting_now = value
        if value:
            self._opened.set()
        else:
            self._opened.clear()
        self.resync()

    @property
    def call_timeout_s(self) -> float:
        """The default deadline of a call, from ``[kernel] call_timeout_s``."""
        return self._call_timeout_s

    @call_timeout_s.setter
    def call_timeout_s(self, value: float) -> None:
        self._call_timeout_s = value
        self.resync()

    @property
    def chain(self) -> CallNext | None:
        """The middleware onion, ``None`` when there is none (the fast path)."""
        return self._chain

    @property
    def inflight(self) -> int:
        """Calls whose handler suspended and has not finished."""
        return self._inflight

    def use(self, middleware: Middleware) -> None:
        """Add middleware (innermost so far) around every call, delivery, job and record."""
        self._middleware = (*self._middleware, middleware)
        self._chain = build_chain(self._middleware)
        self._bus.chain = self._chain
        self.resync()

    @property
    def middleware(self) -> tuple[Middleware, ...]:
        """The middleware, outermost first (a new tuple after each ``use``)."""
        return self._middleware

    def listen(self, listener: Listener) -> None:
        """Tell ``listener`` what happens from now on (see ``Kernel.listen``)."""
        self.listeners.add(listener)
        self._listeners_changed()

    def unlisten(self, listener: Listener) -> None:
        """Stop telling ``listener``; the lean call counters go with the last who asked."""
        self.listeners.remove(listener)
        self._listeners_changed()

    def _listeners_changed(self) -> None:
        buckets = self.listeners.call_buckets
        if buckets is None:
            self._router.disable_stats()
        else:
            self._router.enable_stats(buckets)
        self.resync()

    def _bind_compiled(self) -> None:
        """Serve ``call`` and ``emit`` from C when the extension is built: the one binding point."""
        if speedups is None:
            return
        caller = speedups.Caller(
            self._rpc,
            _current,
            Context,
            _counter,
            _EMPTY_META,
            self.python_call,
            self._resume,
            self._call_failed,
            self._call_timeout_s,
        )
        bus = self._bus
        caller.bind_events(
            self.python_emit,
            bus._cache,
            bus._queue,
            bus._wake,
            bus._max_pending,
            self.listeners.emits,  # while not empty, C reports each emit to emitted()
            self.emitted,
        )
        self._caller = caller
        self.call = caller.call
        self.emit = caller.emit
        self.resync()

    def resync(self) -> None:
        """Keep the fast paths' flags in step (they only serve the plain cases)."""
        self._detour = self._chain is not None or bool(self.listeners.calls)
        self._bus.reporting = bool(self.listeners.deliveries)
        caller = self._caller
        if caller is not None:
            caller.enabled = self._accepting_now and not self._detour
            caller.timeout = self._call_timeout_s
            caller.emit_enabled = self._accepting_now and self._router.transport.solo
            plain = self._chain is None and not self.listeners.deliveries
            self._bus.deliver = caller.deliver if plain else None

    async def python_call(self, target: str, /, **params: Any) -> Any:  # noqa: C901, PLR0912, PLR0915 - hot path inlined
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
        guard = None
        if entry.slow or self._detour:
            # A policy of breaker, bulkhead, timeout and rate limit alone runs on the
            # inline path below (entered and left without awaiting); the rest take _invoke.
            if entry.inline_policy and not self._detour:
                guard = entry.policy
            if guard is None or not guard.inline:
                return await self._invoke(entry, params, ctx, deadline)
            entered = guard.enter(now, deadline)
            if entered is None:  # the bulkhead is full: wait (or be refused) on the slow path
                return await self._invoke(entry, params, ctx, deadline)
            deadline = ctx.deadline = entered
        # The hot path, inlined: _invoke without middleware, listeners or per-method timeout.
        # A handler that finishes in its first step cannot be seen half-done by
        # shutdown, so only suspended calls are counted as in flight.
        token = _current.set(ctx)
        coro = None
        failure: BaseException | None = None
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
            failure = exc
            if stats is not None:
                stats.error(exc.code)
            raise
        except TypeError as exc:
            err = (
                entry.bad_params(exc)
                if coro is None and contract is None  # binding failed: the handler never ran
                else InternalError.wrap(exc)
            )
            failure = err
            if stats is not None:
                stats.error(err.code)
            raise err from (None if coro is None and contract is None else exc)
        except Exception as exc:
            failure = InternalError.wrap(exc)
            if stats is not None:
                stats.error(InternalError.code)
            raise failure from exc
        except BaseException:
            failure = CANCELLED
            raise
        finally:
            _current.reset(token)
            if guard is not None:
                guard.leave(failure)

    def _resume(  # noqa: PLR0917 - called positionally from C
        self,
        coro: Coroutine[Any, Any, Any],
        first: Any,
        ctx: Context,
        deadline: float,
        entry: RpcEntry,
        guard: Guard | None = None,
    ) -> Unfinished:
        """The rest of a handler the C path started and that suspended (``guard``: its policy)."""
        return Unfinished(self._finish(coro, first, ctx, deadline, entry, guard))

    async def _finish(  # noqa: PLR0917 - _resume's arguments
        self,
        coro: Coroutine[Any, Any, Any],
        first: Any,
        ctx: Context,
        deadline: float,
        entry: RpcEntry,
        guard: Guard | None = None,
    ) -> Any:
        """Finish a handler the C path started and that suspended (in the awaiting task).

        ``guard``: the policy the C path admitted the call under; left here, as
        the inline path leaves it.
        """
        token = _current.set(ctx)
        failure: BaseException | None = None
        try:
            return await self._suspended(coro, first, deadline, entry.target, entry.stats, ctx=ctx)
        except Exception as exc:
            err = self._call_failed(entry, exc, ran=True)
            failure = err
            if err is exc:
                raise
            raise err from exc
        except BaseException:
            failure = CANCELLED
            raise
        finally:
            _current.reset(token)
            if guard is not None:
                guard.leave(failure)

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
        caller: str | None = None,
    ) -> Any:
        """Call with explicit options.

        ``timeout_s`` is capped by the caller's deadline, ``meta`` is merged into
        the context and ``principal`` replaces the caller's. ``caller`` names
        the calling module for ``"<caller> -> <target>"`` policies.
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
            return await self._call_remote(target, dict(params), timeout_s, meta, principal, caller)
        ctx = self._outgoing(target, timeout_s, meta, principal)
        return await self._invoke(entry, dict(params), ctx, ctx.deadline, caller)  # type: ignore[arg-type]

    def caller_call(self, caller: str) -> Callable[..., Coroutine[Any, Any, Any]]:
        """``call`` for module ``caller``, whose calls have policies of their own."""

        async def call(target: str, /, **params: Any) -> Any:
            return await self.call_with(target, params, caller=caller)

        return call

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

    async def dispatch(self, target: str, params: dict[str, Any], ctx: Context) -> Any:
        """Serve a call that arrived from a transport (or a gateway) with its context.

        The wire's context (ids, deadline, principal, meta) is kept; the call
        is refused while draining, so a balancer sends it elsewhere.

        Raises:
            NotFoundError, ValidationError, CallTimeoutError, InternalError,
            UnavailableError: as for a local call.
        """
        entry = self._router.serving.get(target)
        if entry is None:
            raise self._missing(target)
        deadline = ctx.deadline
        if deadline is None:
            deadline = ctx.deadline = _monotonic() + self._call_timeout_s
        elif deadline <= _monotonic():
            raise CallTimeoutError(f"call to {target!r} arrived past its deadline")
        if not self._accepting_now:
            await self._until_open(deadline)
        return await self._invoke(entry, params, ctx, deadline)

    async def _until_open(self, deadline: float) -> None:
        """Hold a call that reached a node still starting until it takes calls.

        A node announces its modules before the last of its start-up (jobs,
        streams) is done; a caller that found it in that window waits, within
        its deadline, rather than failing. A draining or stopped node refuses
        at once, so a balancer sends the call elsewhere.

        Raises:
            UnavailableError: the node is not starting, or did not open in time.
        """
        if not self.starting:
            raise self._closed()
        try:
            async with asyncio.timeout(max(0.0, deadline - _monotonic())):
                await self._opened.wait()
        except TimeoutError:
            raise self._closed() from None
        if not self._accepting_now:  # opened, then began draining before this call ran
            raise self._closed()

    async def deliver(self, module: str, handler: str, payload: Any, ctx: Context) -> None:
        """Queue an event that arrived from a transport for one local handler.

        ``payload`` is an ``Envelope`` when the event carried one; the handler
        gets it only if it asks for it (or is idempotent), else the data alone.
        Waits while the local queue is full, so the transport's flow control
        (and not a drop) absorbs the pressure.
        """
        bus = self._bus
        subs = bus.handler_subs(module, handler, ctx.topic or "")
        if not subs:
            return
        try:
            payload = self._as_handlers_want(subs, payload, ctx)
        except ValidationError as err:  # attributes read only now, where they matter
            # Anyone who may publish could send these by the thousand: throttled.
            _malformed.warning("envelope", "dropping an event on %r: %s", ctx.topic, err)
            return
        if not bus.offer(subs, payload, ctx):
            await bus.publish(subs, payload, ctx)

    def _as_handlers_want(self, subs: tuple[Any, ...], payload: Any, ctx: Context) -> Any:
        """The envelope, or the data alone, as the handler asks (``Incoming`` opened lazily).

        Raises:
            ValidationError: the handler needs the envelope and its attributes are malformed.
        """
        kind = type(payload)
        if type(subs) is EnvelopeRoute:
            if kind is Incoming:
                return payload.open()
            if kind is Envelope:
                return payload
            # a plain NATS client's event: give it one
            return self.envelopes().make(ctx.topic or "", payload, ctx, source=_FOREIGN)
        if kind is not Incoming and kind is not Envelope:
            return payload
        # Data at another version than the handler's stays wrapped: make_coro upcasts it.
        meta = subs[0].event
        version = None
        if meta is not None:
            version = payload.dataversion if kind is Envelope else _version_of(payload.headers)
        if version is None or meta is None or version == meta.version:
            return payload.data
        return payload.open() if kind is Incoming else payload

    def envelopes(self) -> EnvelopeFactory:
        """The factory of this node's envelopes (app from settings, node from the transport)."""
        transport = self._router.transport
        factory = self._factory
        if factory is None or factory.node != transport.node:
            factory = self._factory = EnvelopeFactory(self._settings().app, transport.node)
        return factory

    async def wait_for(self, name: str, timeout_s: float = 10.0) -> None:
        """Return once module ``name`` serves, here or (with a transport) on any node.

        Raises:
            CallTimeoutError: it did not appear within ``timeout_s``.
        """
        deadline = _monotonic() + timeout_s
        while not self._slots.is_active(name):
            transport = self._router.transport
            if not transport.solo:
                await transport.wait_for(name, max(0.0, deadline - _monotonic()))
                return
            if _monotonic() >= deadline:
                raise CallTimeoutError(
                    f"module {name!r} did not become available in {timeout_s:g}s"
                )
            await asyncio.sleep(0.01)

    # events ------------------------------------------------------------------
    async def python_emit(
        self,
        topic: Any,
        payload: Any = None,
        *,
        meta: dict[str, Any] | None = None,
        module: str | None = None,
        key: str | None = None,
        event_id: str | None = None,
    ) -> None:
        """Emit an event (see ``Kernel.emit``); the C path falls back to this.

        ``event_id`` fixes the envelope's id (the outbox relays with the id given in
        the transaction).
        """
        if type(topic) is not str:  # emit(OrderPlaced(...)): the type names the topic
            topic, payload = event_topic(topic, payload), topic
        bus = self._bus
        subs = bus._cache.get(topic)
        if subs is None:
            check_topic(topic)
            subs = bus.route(topic)
        parent = _current.get()
        if parent is None:
            if not self._accepting_now:
                raise self._closed()
            ctx = Context(_next_seq(), None, None, None, None, meta or _EMPTY_META, topic)
        else:
            ctx = parent.child(None, topic=topic, meta=meta)
        if self._emits:
            self.emitted(topic, payload)
        transport = self._router.transport
        if not transport.solo:  # own events come back through it, once per subscription
            env = self.envelopes().make(
                topic, payload, ctx, module=module, key=key, event_id=event_id
            )
            await transport.publish(topic, env, ctx)
        elif subs:
            if type(subs) is EnvelopeRoute:  # a handler wants the envelope: built once, shared
                payload = self.envelopes().make(
                    topic, payload, ctx, module=module, key=key, event_id=event_id
                )
            if not bus.offer(subs, payload, ctx):
                await bus.publish(subs, payload, ctx)

    def emitted(self, topic: str, payload: Any) -> None:
        """Report an emit to the ``on_event`` listeners (also called from the C path)."""
        self.listeners.event(
            EventReport(stage="emitted", topic=topic, payload=payload), self.listeners.emits
        )

    def report_lifecycle(self, topic: str, payload: dict[str, Any]) -> None:
        """Report a kernel event (a module's state, a config reload) to the listeners only."""
        if self.listeners.lifecycle:
            module, state = payload.get("module"), payload.get("state")
            self.listeners.changed(
                LifecycleReport(
                    topic=topic,
                    module=module if isinstance(module, str) else None,
                    state=state if isinstance(state, str) else None,
                    payload=payload,
                )
            )

    async def announce(self, topic: str, payload: dict[str, Any]) -> None:
        """Report a kernel event (lifecycle, config) and publish it to local subscribers only."""
        self.report_lifecycle(topic, payload)
        subs = self._bus.route(topic)
        if subs:
            await self._bus.publish(subs, payload, root_context(None, topic=topic))

    async def drain(self) -> None:
        """Wait until every emitted event has been handled (see ``Kernel.drain``)."""
        while True:
            transport = self._router.transport
            mark = transport.published
            await transport.settle()
            await self._bus.drain()
            if transport.published == mark:
                return

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait for suspended calls and queued events to finish; ``False`` at the timeout."""
        deadline = _monotonic() + timeout_s
        drain = asyncio.ensure_future(self._bus.drain())
        try:
            while _monotonic() < deadline:
                if self._inflight == 0 and drain.done():
                    return True
                await asyncio.sleep(0.005)
            return False
        finally:
            drain.cancel()

    async def _invoke(
        self,
        entry: RpcEntry,
        params: dict[str, Any],
        ctx: Context,
        deadline: float,
        caller: str | None = None,
    ) -> Any:
        """The shared call path: the call's policy, then ``_invoke_once`` (once or retried)."""
        if entry.policied:
            guard = self.policies.guard(caller, entry.target)
            if guard is not None:

                async def attempt(until: float) -> Any:
                    ctx.deadline = until
                    return await self._invoke_once(entry, params, ctx, until)

                return await guard.run(attempt, deadline, self._fallback(params, caller))
        return await self._invoke_once(entry, params, ctx, deadline)

    async def _invoke_once(
        self, entry: RpcEntry, params: dict[str, Any], ctx: Context, deadline: float
    ) -> Any:
        """One try: access guard, per-method timeout, the onion, listeners, counters."""
        if not self.listeners.calls:
            return await self._run_entry(entry, params, ctx, deadline)
        started = _perf()
        suspends = self._suspends  # moves only if this call suspends (nothing else runs till then)
        error = None
        try:
            return await self._run_entry(entry, params, ctx, deadline)
        except BaseException as exc:
            error = error_code(exc)
            raise
        finally:
            self.listeners.call(
                CallReport(
                    target=entry.target,
                    duration_s=_perf() - started,
                    error=error,
                    suspended=self._suspends != suspends,
                )
            )

    async def _run_entry(
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
            coro = run_invocation(
                self._chain,
                Invocation("rpc", entry.target, entry.module, params, None, ctx, entry.invoke),
            )
            try:
                first = coro.send(None)
            except StopIteration as stop:
                return stop.value
            return await self._suspended(coro, first, deadline, entry.target, stats)
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
        *,
        ctx: Context | None = None,
    ) -> Any:
        """Finish a handler that suspended: counted in flight, timed when stats are on.

        ``ctx``: a handler the C path started is stepped in its context each time.
        """
        self._inflight += 1
        self._suspends += 1
        started = 0.0
        if stats is not None:
            stats.pending += 1
            started = _perf()
        try:
            return await run_until(coro, first, deadline, target, ctx)
        finally:
            self._inflight -= 1
            if stats is not None:
                stats.pending -= 1
                took = _perf() - started  # stats.timed(took), inlined: once per suspended call
                stats.counts[bisect_left(stats.bounds, took)] += 1
                stats.sum += took

    def _missing(self, target: object) -> OrganelleError:
        if not isinstance(target, str) or "." not in target:
            return ValidationError(
                f"call target {target!r} must look like 'module.method'",
                errors=[{"field": "target", "message": "expected 'module.method'"}],
            )
        module, _, method = target.partition(".")
        rec = self._slots.get(module)
        if rec is None:
            return NotFoundError(f"no module named {module!r}", details={"target": target})
        if method in rec.spec.rpcs:
            if not self.running:
                return self._closed()
            return UnavailableError(
                f"module {module!r} is {rec.state.value}, not serving calls",
                details={"target": target, "state": rec.state.value},
            )
        return NotFoundError(
            f"module {module!r} has no RPC method {method!r}", details={"target": target}
        )

    def _closed(self) -> UnavailableError:
        state = "starting" if self.starting else "draining" if self.running else "not running"
        return UnavailableError(f"kernel is {state}; not taking new calls or events")


_FOREIGN = "/organelle/foreign"  # the source of an event that came without an envelope


def _version_of(headers: Mapping[str, str]) -> int | None:
    """``ce-dataversion`` of an incoming event, without reading the rest of its envelope."""
    text = headers.get("ce-dataversion")
    return int(text) if text is not None and text.isdigit() else None
