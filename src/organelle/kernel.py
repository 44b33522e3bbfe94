"""The kernel: registers modules, checks their graph, runs their lifecycle, dispatches.

It knows modules, their dependencies, lifecycle, the context and the bus;
everything else is built on the same public API a user has.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from organelle import _lifecycle as lc
from organelle._bus import EventBus, SubscriptionStats
from organelle._calls import Calls, Outbound
from organelle._dispatch import Middleware, build_chain
from organelle._graph import Dependency, Node, start_levels
from organelle._jobhost import JobHost
from organelle._lifecycle import ModuleInfo, ModuleState, Record
from organelle._phases import CallStats, RpcEntry
from organelle._remote_deps import RemoteDeps
from organelle._runtime import ModuleRef
from organelle._services import Services
from organelle._streamhost import StreamHost
from organelle._supervise import Supervision
from organelle._topics import check_topic, matches
from organelle.auth.base import Authorizer, RoleAuthorizer
from organelle.config import apply_env, import_object, load_file, merge, parse_settings
from organelle.config.loader import extend_path
from organelle.context import _EMPTY_META, Context, _current, _next_seq
from organelle.errors import (
    DefinitionError,
    NotFoundError,
)
from organelle.module import Module, describe
from organelle.transport import Transport, open_transport

if TYPE_CHECKING:
    from organelle.config.reload import ReloadResult
    from organelle.storage import NamespacedStore, StateEngine, Store

__all__ = ["Kernel", "ModuleRef"]

log = logging.getLogger("organelle.kernel")
_monotonic = time.monotonic


class Kernel(Services, RemoteDeps, Supervision, Calls):
    """Runs a set of modules and connects them.

    Args:
        modules: module classes, instances, or ``"package.module:Class"`` strings.
        config: the app config as a dict of sections: ``{"kernel": {...},
            "modules": {"<name>": {...}}}``.
        middleware: RPC/event middleware, outermost first.
        base_path: folder that ``[kernel] pythonpath`` is relative to.
        only: load just these modules of the config (one process of a split app).
        authorizer: builds the guard of each ``@rpc(roles=…, permissions=…)``
            (default: ``RoleAuthorizer``).

    Example::

        async with Kernel(modules=[Pricing, Inventory]) as kernel:
            total = await kernel.call("pricing.quote", sku="A1")
    """

    def __init__(
        self,
        modules: Iterable[ModuleRef] = (),
        config: Mapping[str, Any] | None = None,
        *,
        middleware: Iterable[Middleware] = (),
        base_path: str | os.PathLike[str] | None = None,
        only: Iterable[str] | None = None,
        authorizer: Authorizer | None = None,
    ) -> None:
        self.authorizer: Authorizer = authorizer or RoleAuthorizer()
        self.config: dict[str, Any] = merge({}, config or {})
        self.settings = parse_settings(self.config.get("kernel"))
        modules_cfg = self.config.get("modules", {})
        if not isinstance(modules_cfg, dict):
            raise DefinitionError("modules: the [modules] section must be a table of tables")
        if self.settings.pythonpath:
            extend_path(self.settings.pythonpath, Path(base_path or "."))
        refs: list[ModuleRef] = list(modules)
        refs += [
            import_object(ref, where=f"kernel.modules[{i}]")
            for i, ref in enumerate(self.settings.modules)
        ]
        if only is not None:
            refs = self._select(refs, only)
        self._records: dict[str, Record] = {}
        self._levels: list[list[str]] = []
        self._rpc: dict[str, RpcEntry] = {}  # where calls go: local entries when local is preferred
        self._serving: dict[str, RpcEntry] = {}  # what this node serves (also to the wire)
        self.call_stats: dict[str, CallStats] | None = None  # set by enable_call_stats()
        self.outbound: Outbound | None = None  # wraps remote calls: see wrap_remote()
        # (job, parent traceparent) -> new traceparent, in order: see on_job_enqueue()
        self.job_spans: list[Callable[[str, str | None], str | None]] = []
        self._bounds: tuple[float, ...] = ()
        self._transport: Transport | None = None
        self._bus = EventBus(
            max_pending=self.settings.max_pending_events,
            max_concurrent=self.settings.max_concurrent_handlers,
        )
        self._middleware: list[Middleware] = list(middleware)
        self._chain = build_chain(self._middleware)
        self._bus.chain = self._chain
        self._taps: list[tuple[str, list[tuple[str, Any]]]] = []
        self._store: Store | None = None
        self._states: StateEngine | None = None
        self._views: dict[str, NamespacedStore] = {}
        self._call_timeout_s = self.settings.call_timeout_s
        # Seams for the ops layer (config reload, storage metrics); the kernel never needs them.
        self.config_loader: Callable[[], dict[str, Any]] | None = None
        self.wrap_store: Callable[[Store], Store] | None = None
        self._accepting = False
        self._running = False
        self.started_at: float | None = None  # wall clock when start() finished; None when stopped
        self._inflight = 0
        self._lock = asyncio.Lock()
        self._jobhost = JobHost(self)
        self._streamhost = StreamHost(self)
        self._use_speedups()
        if self._caller is not None and type(self).emit is Kernel.emit:
            self.emit = self._caller.emit  # type: ignore[method-assign]
        self._restarting: dict[str, asyncio.Task[None]] = {}
        self._crashes: dict[str, tuple[int, float]] = {}
        # Modules last: each binds the kernel's entry points (the C ones, when built).
        for ref in refs:
            rec = self._make_record(ref)
            if rec.name in self._records:
                raise DefinitionError(f"two modules are named {rec.name!r}")
            self._records[rec.name] = rec
        for section in modules_cfg:
            if section not in self._records and only is None:
                log.warning("config section [modules.%s] names no loaded module", section)

    # construction ---------------------------------------------------------
    @classmethod
    def from_config(
        cls,
        path: str | os.PathLike[str],
        *,
        overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        modules: Iterable[ModuleRef] = (),
        only: Iterable[str] | None = None,
    ) -> Kernel:
        """Build a kernel from a TOML/YAML file plus ``ORGANELLE__…`` environment overrides.

        Raises:
            ConfigError: unreadable file, invalid section or key, unimportable module.
        """

        def load() -> dict[str, Any]:
            config = apply_env(load_file(path), environ)
            return merge(config, overrides) if overrides else config

        kernel = cls(modules, load(), base_path=Path(path).resolve().parent, only=only)
        kernel.config_loader = load  # what reload_config() re-reads
        return kernel

    @staticmethod
    def _select(refs: list[ModuleRef], only: Iterable[str]) -> list[ModuleRef]:
        """Keep the modules named in ``only`` (for running a subset of an app per process)."""
        wanted = set(only)
        kept: list[ModuleRef] = []
        for ref in refs:
            obj = import_object(ref) if isinstance(ref, str) else ref
            cls = obj if isinstance(obj, type) else type(obj)
            if describe(cls).name in wanted:
                kept.append(obj)
                wanted.discard(describe(cls).name)
        if wanted:
            unknown = ", ".join(repr(n) for n in sorted(wanted))
            raise DefinitionError(f"--only: no module named {unknown} in this app")
        return kept

    def _make_record(self, ref: ModuleRef) -> Record:
        if isinstance(ref, str):
            ref = import_object(ref)
        if isinstance(ref, type) and issubclass(ref, Module):
            spec = describe(ref)
            instance = ref()
        elif isinstance(ref, Module):
            spec = describe(type(ref))
            instance = ref
        else:
            raise DefinitionError(f"{ref!r} is not a Module subclass or instance")
        section = self.config.get("modules", {}).get(spec.name, {})
        config = lc.validate_config(spec, section)
        instance._attach(self, config)
        return Record(instance=instance, spec=spec, raw_config=section or {})

    # events -------------------------------------------------------------
    async def emit(
        self, topic: str, payload: Any = None, *, meta: dict[str, Any] | None = None
    ) -> None:
        """Emit an event to every subscription matching ``topic``.

        Returns once the event is queued, not handled (``drain()`` waits for
        that). When the queue is full (``max_pending_events``) it waits for
        room — backpressure, never a silent drop. Handler failures never
        reach the emitter.
        """
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
        if self._taps:
            self._tap(topic, payload)
        if self._transport is not None:
            await self._transport.publish(topic, payload, ctx)
        elif subs and not bus.offer(subs, payload, ctx):
            await bus.publish(subs, payload, ctx)

    async def drain(self) -> None:
        """Wait until every emitted event has been handled (also those emitted meanwhile).

        With a transport this includes the events this node published that
        come back to its own subscribers; events from other nodes are not
        waited for.
        """
        transport = self._transport
        while True:
            mark = 0 if transport is None else transport.published
            if transport is not None:
                await transport.settle()
            await self._bus.drain()
            if transport is None or transport.published == mark:
                return

    def tap(
        self, pattern: str = ">", sink: list[tuple[str, Any]] | None = None
    ) -> list[tuple[str, Any]]:
        """Record every emitted event matching ``pattern`` as ``(topic, payload)`` (for tests).

        ``sink`` may be a list subclass whose ``append`` acts on each event
        (tracing turns them into spans); by default a new list is returned.
        """
        if sink is None:
            sink = []
        self._taps.append((pattern, sink))
        return sink

    def wrap_remote(self, outbound: Outbound) -> None:
        """Wrap every call that leaves this node (outermost so far).

        ``outbound(target, params, ctx, send)`` must ``await send(target, params, ctx)``;
        tracing's ``CLIENT`` spans are one such wrapper.
        """
        if self.outbound is None:
            self.outbound = outbound
            return
        inner: Outbound = self.outbound

        def send_through_inner(send: Any) -> Any:
            def through(target: str, params: dict[str, Any], ctx: Context) -> Awaitable[Any]:
                return inner(target, params, ctx, send)

            return through

        def both(
            target: str,
            params: dict[str, Any],
            ctx: Context,
            send: Callable[[str, dict[str, Any], Context], Awaitable[Any]],
        ) -> Awaitable[Any]:
            return outbound(target, params, ctx, send_through_inner(send))

        self.outbound = both

    def on_job_enqueue(self, span: Callable[[str, str | None], str | None]) -> None:
        """Add a hook run at each job enqueue: ``(job, traceparent) -> traceparent``.

        The job carries what the last hook returns (tracing's ``PRODUCER`` span).
        """
        self.job_spans.append(span)

    def untap(self, sink: list[tuple[str, Any]]) -> None:
        """Stop recording into a sink returned by ``tap``."""
        self._taps[:] = [(p, s) for p, s in self._taps if s is not sink]  # shared with C

    def _tap(self, topic: str, payload: Any) -> None:
        """Feed ``(topic, payload)`` to every tap whose pattern matches (also from C)."""
        for pattern, sink in self._taps:
            if matches(pattern, topic):
                sink.append((topic, payload))

    def subscriptions(self) -> list[SubscriptionStats]:
        """Every subscription with its delivered / failed / skipped counters and last error."""
        return self._bus.stats()

    # middleware -----------------------------------------------------------
    def use(self, middleware: Middleware) -> None:
        """Add middleware (innermost so far) around every RPC call and event delivery."""
        self._middleware.append(middleware)
        self._chain = build_chain(self._middleware)
        self._bus.chain = self._chain

    # config -----------------------------------------------------------------
    async def reload_config(self, config: Mapping[str, Any] | None = None) -> ReloadResult:
        """Apply a new app config (default: re-read the file) without a restart, or roll back.

        Raises:
            ConfigError: the new config is invalid or a module's
                ``on_config_changed`` failed; the old config keeps running.
        """
        from organelle.config.reload import reload_config  # an edge concern, loaded on use

        return await reload_config(self, config)

    def config_dump(self) -> dict[str, Any]:
        """The effective config with every secret masked: safe to log or serve."""
        from organelle.config.secrets import config_dump

        return config_dump(self)

    # introspection ----------------------------------------------------------
    def state(self, name: str) -> ModuleState:
        """The lifecycle state of module ``name``."""
        rec = self._records.get(name)
        if rec is None:
            raise NotFoundError(f"no module named {name!r}")
        return rec.state

    def modules(self) -> dict[str, ModuleInfo]:
        """Every registered module with its version, state and handlers."""
        return {name: lc.info(rec) for name, rec in self._records.items()}

    def module(self, name: str) -> Module:
        """The instance of module ``name``."""
        rec = self._records.get(name)
        if rec is None:
            raise NotFoundError(f"no module named {name!r}")
        return rec.instance

    @property
    def running(self) -> bool:
        """Whether the kernel has started and not yet stopped."""
        return self._running

    @property
    def accepting(self) -> bool:
        """Whether outside calls and events are taken (started, not draining)."""
        return self._accepting_now

    @property
    def transport(self) -> Transport | None:
        """The connection to other nodes, or ``None`` in one process (``memory://``)."""
        return self._transport

    def check(self) -> list[list[str]]:
        """Check the whole dependency graph without starting anything; return start levels.

        Raises:
            DependencyError: unknown dependency, version mismatch or cycle.
        """
        levels = start_levels(
            {n: Node(n, r.spec.version, self._local_deps(r)) for n, r in self._records.items()}
        )
        # Edge modules (``starts_last = True``: the HTTP gateway) start after all
        # others and stop first, unless another module depends on them.
        needed = {d.name for r in self._records.values() for d in r.spec.deps}
        last = [
            n
            for lvl in levels
            for n in lvl
            if getattr(self._records[n].instance, "starts_last", False) and n not in needed
        ]
        if not last:
            return levels
        rest = [[n for n in lvl if n not in last] for lvl in levels]
        return [*(lvl for lvl in rest if lvl), last]

    # lifecycle --------------------------------------------------------------
    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Load every module, then start them in dependency order.

        Raises:
            DependencyError: the graph is invalid (nothing was run).
            LifecycleError: a hook failed or timed out; what had started is stopped.
        """
        async with self._lock:
            if self._running:
                return
            self._levels = self.check()
            self._bus.start()
            self._running = True
            try:
                self._transport = open_transport(self.settings)
                self._sync_caller()
                if self._transport is not None:
                    await self._transport.connect(self)
                    await self._await_remote_deps()
                await self._open_store()
                if self.settings.persist_state:
                    await self.states.load()
                await self._jobhost.open()
                await self._streamhost.open()
                await self._load(self._levels)
                await self._start_levels(self._levels)
                await self._jobhost.start()
                await self._streamhost.start()
            except BaseException:
                self._running = False
                await self._streamhost.stop_work(0)
                await self._jobhost.stop_work(0)
                for level in reversed(self._levels):
                    await self._stop_many([n for n in level if self._is_active(n)])
                await self._jobhost.close()
                await self._streamhost.close()
                await self._close_transport()
                await self._bus.stop()
                await self._close_store()
                raise
            self._accepting = True
            self.started_at = time.time()
            log.info("kernel started with %d modules", len(self._records))

    async def stop(self) -> None:
        """Shut down gracefully; never raises because of a module.

        Refuses new outside calls and events, waits for in-flight work up to
        ``drain_timeout_s``, then stops modules in reverse order.
        """
        async with self._lock:
            if not self._running:
                return
            self._accepting = False
            await self._stop_supervision()
            if self._transport is not None:  # stop being picked by balancers first
                for name in self._records:
                    if self._is_active(name):
                        await self._transport.withdraw(name)
            await self._streamhost.stop_work(self.settings.drain_timeout_s)
            await self._jobhost.stop_work(self.settings.drain_timeout_s)
            await self._wait_idle(self.settings.drain_timeout_s)
            for level in reversed(self._levels):
                await self._stop_many([n for n in level if self._is_active(n)])
            await self._jobhost.close()
            await self._streamhost.close()
            await self._close_transport()
            await self._bus.stop()
            await self._close_store()
            self._running = False
            self.started_at = None
            log.info("kernel stopped")

    def _local_deps(self, rec: Record) -> tuple[Dependency, ...]:
        """With a transport, a dependency this node does not run is served by another node."""
        if self.settings.transport.startswith("memory:"):
            return rec.spec.deps
        return tuple(d for d in rec.spec.deps if d.name in self._records)

    async def _close_transport(self) -> None:
        transport, self._transport = self._transport, None
        self._sync_caller()
        if transport is not None:
            await transport.close()

    async def _wait_idle(self, timeout_s: float) -> None:
        deadline = _monotonic() + timeout_s
        drain = asyncio.ensure_future(self._bus.drain())
        try:
            while _monotonic() < deadline:
                if self._inflight == 0 and drain.done():
                    return
                await asyncio.sleep(0.005)
            log.warning(
                "drain timeout: %d calls and %d events still in flight",
                self._inflight,
                self._bus.pending,
            )
        finally:
            drain.cancel()
