"""The kernel: a façade over named parts that register modules, run them and connect them.

The parts (``docs/architecture.md`` maps them):

* ``Slots`` — the module registry: one slot per module, owning its bindings;
* ``Lifecycle`` — start and stop, one slot's way in and out (``Changes`` adds,
  removes and reloads modules at run time; ``Supervisor`` restarts crashed ones);
* ``Dispatcher`` — calls and events, the one invocation pipeline, the compiled hot path;
* ``Listeners`` — who watches what happens (metrics, tracing, the dashboard, tests);
* ``Router`` — local or remote, route tables, the transport, remote dependencies;
* ``JobHost``, ``StreamHost``, ``StoreHost`` — the durable ports;
* config reload (``_reload.py``).

The façade builds them, hands each what it needs, and forwards the public API.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self, TypeVar

from organelle.auth.base import Authorizer, RoleAuthorizer
from organelle.config import apply_env, load_file, merge, parse_settings
from organelle.config.loader import extend_path
from organelle.config.policy import Policy, layer_key, parse_policies, parse_policy
from organelle.config.routing import parse_routing
from organelle.errors import ConfigError, DefinitionError
from organelle.kernel import _states as st
from organelle.kernel._bus import EventBus, Subscriptions, SubscriptionStats
from organelle.kernel._calls import Dispatcher
from organelle.kernel._changes import Changes, ModuleRef
from organelle.kernel._inbox import StoreInbox
from organelle.kernel._jobhost import JobHost
from organelle.kernel._lifecycle import Lifecycle
from organelle.kernel._listen import ConnectionReport, Listener, Listeners
from organelle.kernel._locks import LockHost
from organelle.kernel._outbox import Outbox, Transaction
from organelle.kernel._plugins import PluginHost
from organelle.kernel._policy import Policies
from organelle.kernel._router import Router
from organelle.kernel._routes import CallStats
from organelle.kernel._routing import RouteStats
from organelle.kernel._secrets import Secrets
from organelle.kernel._slots import Binder, Slot, Slots, Tasks
from organelle.kernel._states import ModuleInfo, ModuleState
from organelle.kernel._storage import StoreHost
from organelle.kernel._streamhost import StreamHost
from organelle.kernel._supervise import Supervisor
from organelle.module import Module, ModuleSpec, describe

if TYPE_CHECKING:
    from datetime import datetime

    from organelle.cluster_config import ClusterConfig
    from organelle.context import Context
    from organelle.flags import FlagAdmin, FlagCache
    from organelle.jobs import JobsService, Worker
    from organelle.kernel._clusterhost import ClusterHost
    from organelle.kernel._dispatch import Middleware
    from organelle.kernel._reload import ReloadResult
    from organelle.locks import Holder, Leadership, LockContext
    from organelle.sagas import Sagas
    from organelle.storage import NamespacedStore, StateEngine, Store
    from organelle.streams.base import StreamLog
    from organelle.streams.consumer import ConsumerStats
    from organelle.transport import Transport

__all__ = ["Kernel", "ModuleRef", "kernel_of"]

T = TypeVar("T")

log = logging.getLogger("organelle.kernel")


class Kernel:
    """Runs a set of modules and connects them.

    Args:
        modules: module classes, instances, ``"package.module:Class"`` strings, or
            installed plugins' names (``docs/plugins.md``).
        config: the app config as a dict of sections: ``{"kernel": {...},
            "modules": {"<name>": {...}}}``.
        middleware: middleware around every invocation — calls served and sent, event
            deliveries, jobs, stream records, gateway HTTP requests — outermost first.
        base_path: folder that ``[kernel] pythonpath`` is relative to.
        only: load just these modules of the config (one process of a split app).
        authorizer: builds the guard of each ``@rpc(roles=…, permissions=…)``
            (default: ``RoleAuthorizer``).
        defaults: config under ``config`` and under every reloaded config
            (``organelle.testing.running`` keeps data in memory with it).

    Example::

        async with Kernel(modules=[Pricing, Inventory]) as kernel:
            total = await kernel.call("pricing.quote", sku="A1")
    """

    # False keeps calls and emits on the pure Python path even when the C
    # extension is built: the equivalence tests compare the two in one process.
    _compiled_path: ClassVar[bool] = True

    def __init__(
        self,
        modules: Iterable[ModuleRef] = (),
        config: Mapping[str, Any] | None = None,
        *,
        middleware: Iterable[Middleware] = (),
        base_path: str | os.PathLike[str] | None = None,
        only: Iterable[str] | None = None,
        authorizer: Authorizer | None = None,
        defaults: Mapping[str, Any] | None = None,
    ) -> None:
        self.authorizer: Authorizer = authorizer or RoleAuthorizer()
        self._secrets = Secrets(Path(base_path or ".").resolve())  # secret:// references
        self.config_defaults: dict[str, Any] = merge({}, defaults or {})
        self.config: dict[str, Any] = self._secrets.load(merge(self.config_defaults, config or {}))
        self.settings = parse_settings(self.config.get("kernel"))
        modules_cfg = self.config.get("modules", {})
        if not isinstance(modules_cfg, dict):
            raise DefinitionError("modules: the [modules] section must be a table of tables")
        if self.settings.pythonpath:
            extend_path(self.settings.pythonpath, Path(base_path or "."))
        self._plugins = PluginHost(self.config.get("plugins"))
        refs: list[ModuleRef] = list(modules)
        refs += [
            self._plugins.resolve(ref, where=f"kernel.modules[{i}]")
            for i, ref in enumerate(self.settings.modules)
        ]
        if only is not None:
            refs = self._select(refs, only)
        # What reload_config() re-reads (set by from_config).
        self.config_loader: Callable[[], dict[str, Any]] | None = None
        # The config as written with a cluster layer in its place (set by from_config).
        self._config_layered: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None

        self._build_parts(middleware)
        self._router.routing.configure(parse_routing(self.config.get("routing")))
        self._cluster_host: ClusterHost | None = None
        if self.settings.cluster_config:  # docs/cluster-config.md
            from organelle.kernel._clusterhost import ClusterHost

            self._cluster_host = ClusterHost(self)
            self._life.services.append(self._cluster_host)
        # Modules last: each binds the kernel's entry points.
        for ref in refs:
            slot = self._make_slot(ref)
            if slot.name in self._slots:
                raise DefinitionError(f"two modules are named {slot.name!r}")
            self._slots.put(slot)
        # Sections naming no module: a typo leaves the module on its defaults.
        self._orphans = [] if only is not None else [s for s in modules_cfg if s not in self._slots]
        for section in self._orphans:
            log.warning("config section [modules.%s] names no loaded module", section)

    def _build_parts(self, middleware: Iterable[Middleware]) -> None:
        def settings() -> Any:
            return self.settings

        self._slots = Slots()
        self._listeners = listeners = Listeners()
        self._bus = EventBus(
            max_pending=self.settings.max_pending_events,
            max_concurrent=self.settings.max_concurrent_handlers,
            listeners=listeners,
        )
        self._router = Router(self._slots, settings, lambda: self.authorizer)
        self._policies = Policies(parse_policies(self.config.get("policies")), self._declared)
        self._router.policies = self._policies
        self._dispatcher = Dispatcher(
            self._slots,
            self._router,
            self._bus,
            settings,
            list(middleware),
            listeners,
            policies=self._policies,
            compiled=self._compiled_path,
        )
        dispatcher = self._dispatcher
        self._jobs = JobHost(
            self._slots,
            settings,
            lambda: dispatcher.chain,
            lambda: dispatcher.running,
            listeners,
        )
        from organelle.kernel._claims import Claims  # its imports wait for a kernel

        self._claims = Claims(settings)
        self._streams = StreamHost(
            self._slots, settings, lambda: dispatcher.chain, lambda: dispatcher.running, listeners
        )
        self._streams.claims = self._claims
        self._storage = StoreHost(settings, self.emit, listeners)
        storage = self._storage
        inbox = StoreInbox(lambda: storage.store, lambda: self.settings.inbox_window_s)
        self._bus.use_inbox(inbox)
        self._streams.inbox = inbox
        self._streams.envelopes = dispatcher.envelopes
        streams = self._streams
        self._outbox = Outbox(
            lambda: storage.store,
            view=storage.view,
            envelopes=dispatcher.envelopes,
            emit=dispatcher.python_emit,
            append=streams.append,
            enqueue=self.enqueue,
        )
        self._relay_task: asyncio.Task[None] | None = None
        from organelle.kernel._sagahost import NAMESPACE, SagaHost

        self._sagas = SagaHost(
            self._slots,
            self._jobs,
            lambda: storage.view(NAMESPACE),
            self.call_with,
            lambda: self.settings.drain_timeout_s,
        )
        self._locks = LockHost(lambda: storage.store, lambda: self._router.transport.node)
        self._life = Lifecycle(
            self._slots,
            dispatcher,
            self._router,
            self._bus,
            self._jobs,
            self._streams,
            self._storage,
            settings,
            # In the order they bind; each stage unbinds in reverse (see Binder.stage).
            binders=[
                self._router.routes,
                Tasks(),
                Subscriptions(self._bus),
                self._router.exposure,
                self._jobs,
                self._sagas,
                self._streams,
                self._locks,
            ],
            claims=self._claims,
        )
        self._flag_cache: FlagCache | None = None  # made when a module declares Flags
        self._changes = Changes(self._life, lambda: self.config, self._make_slot, self._attach)
        self._supervisor = Supervisor(self._life, self._attach)
        # The hot paths, bound straight onto the instance (the C ones, when built),
        # unless a subclass overrides them.
        if type(self).call is Kernel.call:
            self.call = dispatcher.call  # type: ignore[method-assign]
        if type(self).emit is Kernel.emit:
            self.emit = dispatcher.emit  # type: ignore[method-assign]

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

        def layered(cluster: Mapping[str, Any]) -> dict[str, Any]:
            # file < cluster layer < ORGANELLE__ variables < overrides (docs/cluster-config.md)
            config = apply_env(merge(load_file(path), cluster), environ)
            return merge(config, overrides) if overrides else config

        def load() -> dict[str, Any]:
            host = kernel._cluster_host
            return layered({} if host is None else host.layer)

        kernel = cls(modules, layered({}), base_path=Path(path).resolve().parent, only=only)
        kernel.config_loader = load  # what reload_config() re-reads
        kernel._config_layered = layered
        return kernel

    def _select(self, refs: list[ModuleRef], only: Iterable[str]) -> list[ModuleRef]:
        """Keep the modules named in ``only`` (for running a subset of an app per process)."""
        wanted = set(only)
        kept: list[ModuleRef] = []
        for ref in refs:
            obj = self._plugins.resolve(ref) if isinstance(ref, str) else ref
            cls = obj if isinstance(obj, type) else type(obj)
            if describe(cls).name in wanted:
                kept.append(obj)
                wanted.discard(describe(cls).name)
        if wanted:
            unknown = ", ".join(repr(n) for n in sorted(wanted))
            raise DefinitionError(f"--only: no module named {unknown} in this app")
        return kept

    def _make_slot(self, ref: ModuleRef) -> Slot:
        if isinstance(ref, str):
            ref = self._plugins.resolve(ref)
        if isinstance(ref, type) and issubclass(ref, Module):
            spec = describe(ref)
            instance = ref()
        elif isinstance(ref, Module):
            spec = describe(type(ref))
            instance = ref
        else:
            raise DefinitionError(f"{ref!r} is not a Module subclass or instance")
        self._plugins.admit(spec)  # a manifest's kernel range and subscriptions
        section = self.config.get("modules", {}).get(spec.name, {})
        if isinstance(section, dict) and section.get("isolate"):  # docs/isolation.md
            instance, spec = self._isolated(instance, spec, section)
        self._attach(instance, st.validate_config(spec, section))
        return Slot(instance=instance, spec=spec, raw_config=section or {})

    def _isolated(
        self, instance: Module, spec: ModuleSpec, section: dict[str, Any]
    ) -> tuple[Module, ModuleSpec]:
        """The stand-in of a module that runs in a child process (``isolate = …``)."""
        from organelle.kernel._isolate import isolated, parse_isolate

        options = parse_isolate(spec.name, section["isolate"])
        if options is None:
            return instance, spec
        own = {k: v for k, v in section.items() if k not in st.KERNEL_KEYS}
        cls = isolated(type(instance), options, own, self.config.get("kernel") or {})
        return cls(), describe(cls)

    def _attach(self, instance: Module, config: Any) -> None:
        # A plugin module (one with a manifest) sees the kernel through a guard.
        instance._attach(self._plugins.api_for(self, type(instance), instance.name), config)
        if getattr(type(instance), "Flags", None) is not None:
            instance.flags = self._flags_cache().attach(instance.name, type(instance))
        if instance.name in self._policies.callers:
            instance.call = self._caller_call(instance)  # type: ignore[method-assign]

    def _caller_call(self, instance: Module) -> Callable[..., Any]:
        call = self._dispatcher.caller_call(instance.name)
        return self._plugins.guard_call(instance.kernel, call)

    def _declared(self, target: str) -> tuple[Policy | None, bool] | None:
        """The callee's own ``@rpc(policy=, idempotent=)`` for ``target``; ``None``: not known yet.

        A local module says it directly; a module on other nodes through the
        registry (``Transport.rpc_options``), once a node announcing it is seen.
        """
        module, _, method = target.partition(".")
        slot = self._slots.get(module)
        if slot is not None:
            meta = slot.spec.rpcs.get(method)
            if meta is not None:
                return meta.spec.policy, meta.spec.idempotent
        options = self._router.transport.rpc_options(module)
        if options is None:
            return None
        found = options.get(method) or {}
        raw = found.get("policy")
        try:
            policy = None if raw is None else parse_policy(raw, f"{target} (declared)")
        except ConfigError as exc:  # a newer node's policy this one cannot read
            log.warning("ignoring the declared policy of %s: %s", target, exc)
            policy = None
        return policy, bool(found.get("idempotent"))

    def _policies_changed(self) -> None:
        """After a reload of ``[policies]``: routes and callers' ``call`` follow."""
        self._router.mark_policies()
        callers = self._policies.callers
        for slot in self._slots.values():
            instance = slot.instance
            if instance.name in callers:
                instance.call = self._caller_call(instance)  # type: ignore[method-assign]
            else:
                instance.call = instance.kernel.call  # type: ignore[method-assign]

    def set_policy(self, key: str, policy: Policy | Mapping[str, Any] | None) -> None:
        """Set the call policy of ``key`` from code (``"<caller> -> <target>"`` and the like).

        For a module or an edge that brings its own defaults (the gateway's
        retries and breaker): ``[policies]`` in config still overrides it.
        ``None`` removes it.

        Raises:
            ConfigError: a bad key or policy.
        """
        caller, target = layer_key(key)
        parsed = None if policy is None else parse_policy(policy, f"policies.{key}")
        self._policies.set_layer(caller, target, parsed)
        self._policies_changed()

    def policy_stats(self) -> dict[str, Any]:
        """Circuit breakers (state, transitions) and what the call policies did, by target."""
        return self._policies.snapshot()

    # calls ------------------------------------------------------------------
    async def call(self, target: str, /, **params: Any) -> Any:
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
        return await self._dispatcher.call(target, **params)

    def client(self, cls: Callable[..., T], *, module: str | None = None) -> T:
        """A typed client of a module: ``await kernel.client(Pricing).quote(sku="a")``.

        ``cls`` is the module's class, or a Protocol of ``async def`` stubs
        named by its ``name`` attribute or ``module=``; see ``Module.client``.

        Raises:
            DefinitionError: ``cls`` is neither, or has a method a client cannot call.
        """
        from organelle.module._client import client_of

        return client_of(cls, self.call, module)

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
        who calls, for ``[policies."<caller> -> <target>"]`` (a module's own
        ``call`` names it already).
        """
        return await self._dispatcher.call_with(
            target, params, timeout_s=timeout_s, meta=meta, principal=principal, caller=caller
        )

    async def wait_for(self, name: str, timeout_s: float = 10.0) -> None:
        """Return once module ``name`` serves, here or (with a transport) on any node.

        Raises:
            CallTimeoutError: it did not appear within ``timeout_s``.
        """
        await self._dispatcher.wait_for(name, timeout_s)

    # the transport's way in (Inbound) ---------------------------------------------
    async def dispatch(self, target: str, params: dict[str, Any], ctx: Context) -> Any:
        """Serve a call that arrived from a transport (or a gateway) with its context.

        The wire's context (ids, deadline, principal, meta) is kept; the call
        is refused while draining, so a balancer sends it elsewhere.
        """
        return await self._dispatcher.dispatch(target, params, ctx)

    async def deliver(self, module: str, handler: str, payload: Any, ctx: Context) -> None:
        """Queue an event that arrived from a transport for one local handler."""
        await self._dispatcher.deliver(module, handler, payload, ctx)

    def connection_event(self, event: Literal["disconnected", "reconnected"]) -> None:
        """A transport reports its connection going down or coming back (``on_connection``)."""
        if self._listeners.connection:
            self._listeners.connected(ConnectionReport(state=event))

    # events -------------------------------------------------------------
    async def emit(
        self,
        topic: str | object,
        payload: Any = None,
        *,
        meta: dict[str, Any] | None = None,
        module: str | None = None,
        key: str | None = None,
    ) -> None:
        """Emit an event to every subscription matching ``topic``.

        ``emit(OrderPlaced(...))`` (an ``@event`` instance) takes its topic from
        the event type. Returns once the event is queued, not handled
        (``drain()`` waits for that). When the queue is full
        (``max_pending_events``) it waits for room — backpressure, never a
        silent drop. Handler failures never reach the emitter.

        ``module`` names the emitting module in the envelope's ``source``;
        ``key`` is its ``partitionkey``.
        """
        if module is None and key is None:
            await self._dispatcher.emit(topic, payload, meta=meta)
        else:
            await self._dispatcher.python_emit(topic, payload, meta=meta, module=module, key=key)

    async def drain(self) -> None:
        """Wait until every emitted event has been handled (also those emitted meanwhile).

        With a transport this includes the events this node published that
        come back to its own subscribers; events from other nodes are not
        waited for.
        """
        await self._dispatcher.drain()

    def subscriptions(self) -> list[SubscriptionStats]:
        """Every subscription with its delivered / failed / skipped counters and last error."""
        return self._bus.stats()

    # extension seams --------------------------------------------------------------
    def use(self, middleware: Middleware) -> None:
        """Add middleware (innermost so far) around every invocation.

        Every kind runs through it: RPC calls served here and sent to other
        nodes (``inv.remote``), event deliveries, job runs, stream records and
        the gateway's HTTP requests; check ``inv.kind``.
        """
        self._dispatcher.use(middleware)

    @property
    def middleware(self) -> tuple[Middleware, ...]:
        """The kernel's middleware, outermost first (a new tuple after each ``use``)."""
        return self._dispatcher.middleware

    def listen(self, listener: Listener) -> None:
        """Tell ``listener`` what happens from now on: calls, events, jobs, records, states.

        A listener overrides the ``on_*`` methods of ``BaseListener`` it cares
        about (``organelle.kernel``'s ``Listener`` lists them with what each
        costs); one that raises is logged and never disturbs the work. Adding
        one twice has no effect.
        """
        self._dispatcher.listen(listener)

    def unlisten(self, listener: Listener) -> None:
        """Stop telling ``listener`` (nothing happens if it was not listening)."""
        self._dispatcher.unlisten(listener)

    async def add_binder(self, binder: Binder) -> None:
        """Bind one more kind of handler for every module, now and as modules come and go.

        An edge that owns a kind of binding (the gateway's HTTP routes) adds its
        ``Binder`` (``kind``, ``stage``, ``attach``, ``detach``); every active
        module is attached at once, later ones as they start, and each is
        detached as its module stops or is removed. See docs/architecture.md.
        """
        await self._life.add_binder(binder)

    async def remove_binder(self, binder: Binder) -> None:
        """Detach a kind added with ``add_binder`` from every module and stop binding it."""
        await self._life.remove_binder(binder)

    @property
    def call_stats(self) -> dict[str, CallStats] | None:
        """Per-method call counters, while a listener asks for them (``call_buckets``).

        Cheaper than any per-call observer: a call that does not suspend costs
        one increment; calls that suspend are timed into the buckets.
        """
        return self._router.stats

    def routing_stats(self) -> list[RouteStats]:
        """Calls this node routed by a ``[routing]`` table, per module, version and role.

        ``role`` is ``primary`` (the calls whose results callers got) or
        ``mirror`` (shadow copies): compare their errors and p50 / p99 latency
        before shifting weights to a new version (docs/routing.md).
        """
        return self._router.routing.stats()

    # config -----------------------------------------------------------------
    async def reload_config(self, config: Mapping[str, Any] | None = None) -> ReloadResult:
        """Apply a new app config (default: re-read the file) without a restart, or roll back.

        Raises:
            ConfigError: the new config is invalid or a module's
                ``on_config_changed`` failed; the old config keeps running.
        """
        from organelle.kernel._reload import reload_config

        return await reload_config(self, config)

    async def config_diff(self, config: Mapping[str, Any] | None = None) -> ReloadResult:
        """What ``reload_config(config)`` would change (default: the file now); applies nothing.

        Raises:
            ConfigError: the new config is invalid.
        """
        from organelle.kernel._reload import preview

        return await preview(self, config)

    def config_dump(self) -> dict[str, Any]:
        """The effective config with every secret masked: safe to log or serve."""
        from organelle.config.secrets import config_dump

        return config_dump(self.settings, {n: s.instance.config for n, s in self._slots.items()})

    # introspection ----------------------------------------------------------
    def state(self, name: str) -> ModuleState:
        """The lifecycle state of module ``name``."""
        return self._slots.require(name).state

    def modules(self) -> dict[str, ModuleInfo]:
        """Every registered module with its version, state and handlers."""
        return {name: slot.info() for name, slot in self._slots.items()}

    def module(self, name: str) -> Module:
        """The instance of module ``name``."""
        return self._slots.require(name).instance

    def dependents(self, name: str) -> list[str]:
        """Active modules that require ``name``, directly or transitively, nearest last."""
        return self._slots.dependents(name)

    @property
    def running(self) -> bool:
        """Whether the kernel has started and not yet stopped."""
        return self._dispatcher.running

    @property
    def accepting(self) -> bool:
        """Whether outside calls and events are taken (started, not draining)."""
        return self._dispatcher.accepting

    @property
    def transport(self) -> Transport:
        """The connection to other nodes (``transport.solo`` when there are none: ``memory://``)."""
        return self._router.transport

    @property
    def started_at(self) -> float | None:
        """Wall clock when ``start()`` finished; ``None`` while stopped."""
        return self._life.started_at

    def check(self) -> list[list[str]]:
        """Check the whole dependency graph without starting anything; return start levels.

        Raises:
            DependencyError: unknown dependency, version mismatch or cycle.
            ConfigError: a ``[modules.<name>]`` section names no module.
        """
        orphans = [s for s in self._orphans if s not in self._slots]
        if orphans:
            names = sorted(self._slots)
            close = difflib.get_close_matches(orphans[0], names, n=1, cutoff=0.6)
            hint = f"; did you mean [modules.{close[0]}]?" if close else ""
            raise ConfigError(
                f"modules.{orphans[0]}: the section names no module of this app"
                f" (modules: {', '.join(names) or 'none'}){hint}",
                details={"key": f"modules.{orphans[0]}", "orphans": orphans},
            )
        return self._life.check()

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
        await self._life.start(self)
        if self._storage.may_hold_rows():  # send what a crash left
            self._start_relay()
        self._secrets.start(self)

    async def stop(self) -> None:
        """Shut down gracefully; never raises because of a module.

        Refuses new outside calls and events, waits for in-flight work up to
        ``drain_timeout_s``, then stops modules in reverse order.
        """
        await self._secrets.stop()
        if self._dispatcher.running:
            await self._stop_relay()  # while emits are still taken: what committed goes out
        await self._life.stop(before=self._supervisor.stop)

    async def _stop_relay(self) -> None:
        """Before modules stop: finish relaying what committed, stop the periodic relay."""
        task, self._relay_task = self._relay_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._outbox.settle()

    def _start_relay(self) -> None:
        if self._relay_task is None:
            self._relay_task = asyncio.get_running_loop().create_task(
                self._outbox.run(lambda: self.settings.outbox_interval_s),
                name="organelle-outbox-relay",
            )

    def transaction(self, module: str | None = None) -> AbstractAsyncContextManager[Transaction]:
        """Store writes and messages that commit together (the transactional outbox).

        ``async with kernel.transaction() as tx:`` — ``tx.store`` (and plain
        Store calls from this task) write in one Store transaction;
        ``tx.emit`` / ``tx.append`` / ``tx.enqueue`` are sent once it commits,
        never if it rolls back. ``module`` gives ``tx.store`` that module's
        namespace. See ``docs/events.md``.

        Raises:
            TransactionUnsupportedError: the Store has no transactions (NATS KV).
        """
        if self._relay_task is None and self._dispatcher.running:
            self._start_relay()
        return self._outbox.transaction(module)

    async def add_module(self, module: ModuleRef, config: Mapping[str, Any] | None = None) -> None:
        """Register and start a module while the kernel runs, with every binding it declares.

        Raises:
            DefinitionError: a module of that name exists.
            DependencyError: its dependencies are not active or do not match.
            LifecycleError: its ``on_load``/``on_start`` failed (it is not kept).
        """
        if isinstance(module, str):  # a plugin name too, its pin checked
            module = self._plugins.resolve(module, where="add_module")
        await self._changes.add(module, config)

    async def remove_module(self, name: str, *, cascade: bool = False) -> list[str]:
        """Stop and unregister a module; return the names removed.

        Refused while active modules require it, unless ``cascade``, which
        stops and removes those dependents first (in reverse order). Its jobs
        and stream records wait for a module serving them, here or elsewhere.

        Raises:
            NotFoundError: no such module.
            DependencyError: active dependents and no cascade (they are named).
        """
        return await self._changes.remove(name, cascade=cascade)

    async def reload_module(
        self,
        name: str,
        module: ModuleRef | None = None,
        *,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        """Replace a running module by a new instance and/or config.

        The new instance is loaded and started while the old one keeps
        serving; then every binding switches over at once and the old one is
        stopped (its tasks cancelled). If the new one fails, it is aborted and
        the old one never stopped serving.

        Raises:
            NotFoundError: no such module.
            DefinitionError: the replacement has another name.
            DependencyError: the new version breaks a dependent's requirement.
            LifecycleError: the new instance failed to start (the old one serves on).
        """
        await self._changes.reload(name, module, config=config)

    def module_crashed(self, module: Module, error: BaseException) -> None:
        """Called when a module's background task dies with an exception."""
        self._supervisor.crashed(module, error)

    # durable work and storage ----------------------------------------------------
    @property
    def jobs(self) -> JobsService:
        """Durable jobs: ``get(job_id)``, ``dead_letters``, ``enqueue`` (see docs/jobs.md).

        Raises:
            ConfigError: no queue (no module declares a job and ``[kernel] jobs``
                is not set), or the kernel has not started.
        """
        return self._jobs.jobs()

    async def enqueue(
        self,
        job: str,
        /,
        *,
        delay_s: float | None = None,
        at: datetime | float | None = None,
        priority: int = 0,
        idempotency_key: str | None = None,
        **params: Any,
    ) -> str:
        """Enqueue the durable job ``"<module>.<job>"`` and return its id.

        Params are validated from the handler's type hints now, so a bad call
        is refused here, not found by a worker later. A second enqueue with the
        same ``idempotency_key`` returns the first job's id.

        Raises:
            ValidationError: bad params (each field listed) or options.
            ConfigError: this node has no job queue.
        """
        return await self._jobs.jobs().enqueue(
            job,
            params,
            delay_s=delay_s,
            at=at,
            priority=priority,
            idempotency_key=idempotency_key,
        )

    async def drain_jobs(self, timeout_s: float = 30.0, horizon_s: float = 1.0) -> None:
        """Wait until this node's worker runs nothing and nothing is due within ``horizon_s``.

        For tests: no sleeps. Raises ``TimeoutError`` after ``timeout_s``.
        """
        await self._jobs.idle(timeout_s, horizon_s)

    async def append(
        self,
        stream: str,
        payload: Any = None,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, int]:
        """Append a record to the durable ``stream``; return ``(partition, offset)``.

        Returns once the record is stored durably (the log's commit / PubAck).
        Records with one ``key`` share a partition and keep their order; the
        stream is created on first use with its ``[kernel.stream_specs]`` layout.

        Raises:
            ConfigError: no stream log (no ``@consume`` here and ``[kernel] streams`` unset).
            ValidationError: a bad stream name or a payload that cannot be encoded.
        """
        return await self._streams.append(stream, payload, key, headers)

    @property
    def streams(self) -> StreamLog:
        """The stream log: ``read``, ``seek``, ``info``, ``dead_letters`` (see docs/streams.md)."""
        return self._streams._require()

    def consumers(self) -> list[ConsumerStats]:
        """Counters of this node's ``@consume`` group members (done, failed, dead, …)."""
        return self._streams.stats()

    async def drain_streams(self, timeout_s: float = 30.0) -> None:
        """Wait until every local consumer group has caught up and nothing runs (for tests).

        Raises:
            TimeoutError: still busy after ``timeout_s``.
        """
        await self._streams.idle(timeout_s)

    def _flags_cache(self) -> FlagCache:
        if self._flag_cache is None:
            from organelle.flags import FlagCache  # pydantic: only for apps with flags

            self._flag_cache = FlagCache(lambda: self.store, self._announce)
            self._life.services.append(self._flag_cache)
        return self._flag_cache

    async def _announce(self, topic: str, payload: dict[str, Any]) -> None:
        from organelle.kernel._reload import announce

        await announce(self, topic, payload)

    @property
    def flags(self) -> FlagAdmin:
        """List and change the feature flags of this app's modules (``docs/flags.md``).

        Changes go to the cluster store; every node's modules read them from
        memory within a second and announce them as ``kernel.flags.changed``.
        """
        from organelle.flags import FlagAdmin

        cache = self._flags_cache()
        node = self.settings.node or "kernel"
        return FlagAdmin(lambda: self.store, cache.models, by=lambda: f"node:{node}")

    @property
    def cluster_config(self) -> ClusterConfig:
        """The cluster-wide config layer: ``get``, ``propose``, ``history``.

        A change is validated by every live node with ``[kernel] cluster_config``
        on, then applied on all of them or rolled back on all of them
        (``docs/cluster-config.md``).
        """
        from organelle.cluster_config import ClusterConfig

        node = self.settings.node or "kernel"
        return ClusterConfig(lambda: self.store, by=lambda: f"node:{node}")

    @property
    def store(self) -> Store:
        """The shared Store chosen by ``[kernel] storage`` (opened on first use).

        Modules normally use ``self.store``, their own namespace of it.
        """
        return self._storage.store

    def store_for(self, namespace: str) -> NamespacedStore:
        """The view of the shared store under ``namespace`` (a module's name)."""
        return self._storage.view(namespace)

    @property
    def store_if_open(self) -> Store | None:
        """The Store if something opened it, else ``None`` (a health probe must not open it)."""
        return self._storage.opened

    @property
    def sagas(self) -> Sagas:
        """Sagas: ``start``, ``get``, ``list``, ``retry``, ``abort`` (see docs/sagas.md)."""
        return self._sagas.engine

    @property
    def job_worker(self) -> Worker | None:
        """This node's job worker (``None`` when it runs no jobs): counters for dashboards."""
        return self._jobs.worker

    def lock(
        self, name: str, *, ttl_s: float = 10.0, timeout_s: float | None = None
    ) -> LockContext:
        """A cluster-wide lock on the Store: ``async with kernel.lock("name") as lease:``.

        Waits for the lock (``timeout_s``, ``None``: forever), renews it every
        ``ttl_s / 3`` while the block runs, releases it on exit. ``lease.token``
        grows with every holding (for ``organelle.locks.fenced_put``);
        ``lease.check()`` raises ``LeaseLostError`` once the lease is lost, and
        so does leaving the block after a loss. See ``docs/locks.md``.

        Raises:
            LockTimeoutError: still held by another after ``timeout_s``.
        """
        return self._locks.lock(name, ttl_s=ttl_s, timeout_s=timeout_s)

    async def lock_holder(self, name: str) -> Holder | None:
        """Who holds lock ``name`` in the cluster now (``None``: free).

        A ``@leader`` method's lock is ``leader.<module>.<method>``; a module's
        ``self.lock("x")`` is ``<module>.x``.
        """
        return await self._locks.holder(name)

    def leaders(self) -> list[Leadership]:
        """This node's ``@leader`` elections: lock name, whether it leads, its token."""
        return self._locks.leaders()

    @property
    def states(self) -> StateEngine:
        """Live values shared by modules (``get``/``set``/``subscribe``).

        Every change is also emitted as ``state.changed.<key>``; with
        ``[kernel] persist_state = true`` values live in the Store and are
        restored when the kernel starts.
        """
        return self._storage.states


def kernel_of(module: Module) -> Kernel:
    """The whole kernel running ``module`` (for edge modules: the gateway, ops).

    Raises:
        DefinitionError: the module runs under something else than a ``Kernel``.
    """
    kernel = module.kernel
    if not isinstance(kernel, Kernel):
        raise DefinitionError(f"module {module.name!r} is not attached to a Kernel")
    return kernel
