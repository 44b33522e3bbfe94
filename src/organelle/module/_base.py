"""The ``Module`` base class and ``KernelAPI``, the kernel as a module sees it.

A module is a class: its attributes declare identity and dependencies, its
decorated async methods are its RPC methods and event handlers. Everything is
checked when the class is described for registration, so mistakes surface
before anything starts, with a message naming the module and the method.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable, Coroutine, Mapping
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from organelle.context import _current, root_context
from organelle.envelope import remember_module
from organelle.errors import DefinitionError
from organelle.module._decorators import is_handler

if TYPE_CHECKING:
    from datetime import datetime

    from organelle.jobs import JobsService
    from organelle.locks import LockLease
    from organelle.sagas import ModuleSagas, Sagas
    from organelle.storage import NamespacedStore, StateEngine, Store
    from organelle.streams.base import StreamLog

__all__ = ["KernelAPI", "Module", "TransactionAPI"]

T = TypeVar("T")


class TransactionAPI(Protocol):
    """An open outbox transaction, as a module sees it (``Module.transaction()``)."""

    store: Any

    async def emit(
        self,
        topic: str | object,
        payload: Any = None,
        *,
        key: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> str:
        """Emit once the transaction commits; the event id."""
        ...

    async def append(self, stream: str, payload: Any = None, *, key: str | None = None) -> str:
        """Append once the transaction commits; the event id."""
        ...

    async def enqueue(
        self, job: str, /, *, delay_s: float | None = None, priority: int = 0, **params: Any
    ) -> str:
        """Enqueue once the transaction commits (exactly once)."""
        ...


class KernelAPI(Protocol):
    """The kernel as its modules see it: talk to others, durable work, storage."""

    async def call(self, target: str, /, **params: Any) -> Any:
        """Call ``"<module>.<method>"``."""
        ...

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
        """Call with explicit options (``caller``: who calls, for its call policies)."""
        ...

    def transaction(self, module: str | None = None) -> AbstractAsyncContextManager[TransactionAPI]:
        """Store writes and messages that commit together (the transactional outbox)."""
        ...

    async def emit(
        self,
        topic: str | object,
        payload: Any = None,
        *,
        meta: dict[str, Any] | None = None,
        module: str | None = None,
        key: str | None = None,
    ) -> None:
        """Emit an event (a topic and payload, or an ``@event`` instance)."""
        ...

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
        """Enqueue a durable job; return its id."""
        ...

    async def append(
        self,
        stream: str,
        payload: Any = None,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, int]:
        """Append a record to a durable stream; return ``(partition, offset)``."""
        ...

    async def wait_for(self, name: str, timeout_s: float = 10.0) -> None:
        """Return once module ``name`` serves, here or on another node."""
        ...

    def client(self, cls: Callable[..., T], *, module: str | None = None) -> T:
        """A typed client of a module (its class, or a Protocol of its methods)."""
        ...

    def store_for(self, namespace: str) -> NamespacedStore:
        """The shared Store's view under ``namespace``."""
        ...

    def module_crashed(self, module: Module, error: BaseException) -> None:
        """A module's background task died: restart it (supervision)."""
        ...

    def lock(
        self, name: str, *, ttl_s: float = 10.0, timeout_s: float | None = None
    ) -> AbstractAsyncContextManager[LockLease]:
        """A cluster-wide lock on the Store (``organelle.locks``)."""
        ...

    @property
    def store(self) -> Store:
        """The shared Store."""
        ...

    @property
    def states(self) -> StateEngine:
        """Live values shared by modules."""
        ...

    @property
    def sagas(self) -> Sagas:
        """Sagas: start, list, retry, abort (``docs/sagas.md``)."""
        ...

    @property
    def jobs(self) -> JobsService:
        """Durable jobs."""
        ...

    @property
    def streams(self) -> StreamLog:
        """The durable stream log."""
        ...

    @property
    def running(self) -> bool:
        """Whether the kernel has started and not yet stopped."""
        ...


class _ClassNamespace(dict[str, Any]):
    """Class body namespace that refuses a second handler under one attribute name."""

    def __setitem__(self, key: str, value: Any) -> None:
        if key in self and is_handler(value) and is_handler(self[key]):
            raise DefinitionError(
                f"two handlers are named {key!r} in one module class; the first would be "
                "silently replaced"
            )
        super().__setitem__(key, value)


class ModuleMeta(type):
    """Metaclass of ``Module``: only adds duplicate-handler detection."""

    @classmethod
    def __prepare__(cls, name: str, bases: tuple[type, ...], /, **kwds: Any) -> dict[str, Any]:
        return _ClassNamespace()

    def __new__(cls, name: str, bases: tuple[type, ...], ns: dict[str, Any], **kw: Any) -> Any:
        made = super().__new__(cls, name, bases, dict(ns), **kw)
        remember_module(made)  # its RPC results can be rebuilt by a remote caller
        return made


class Module(metaclass=ModuleMeta):
    """Base class of every organelle module.

    Class attributes declare the module; the kernel sets ``kernel``, ``config``
    and ``log`` on the instance before ``on_load``. All hooks are optional:

    * ``on_load()`` — every module, before any starts: wiring, no resources.
    * ``on_start()`` — in dependency order; acquire resources here.
    * ``on_stop()`` — reverse order, only for modules that became active.
    * ``on_abort(error)`` — this module's own ``on_load``/``on_start`` failed or
      timed out: release whatever it had acquired before failing.
    * ``on_config_changed(old, new)`` — a hot reload changed this module's section.
    * ``on_config_check(old, new)`` — a cluster config change would change this
      module's section: raise to refuse it on every node (nothing is applied).
    * ``health()`` — return a status for health checks.

    Example::

        class Pricing(Module):
            name = "pricing"
            version = "1.0.0"

            @rpc
            async def quote(self, sku: str) -> float:
                return 9.99
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "0.0.0"
    requires: ClassVar[tuple[str, ...]] = ()
    optional: ClassVar[tuple[str, ...]] = ()
    hook_timeout_s: ClassVar[float | None] = None
    starts_last: ClassVar[bool] = False
    """Start after every module that does not depend on it, stop before them (edges: a gateway)."""
    """Per-module timeout of each lifecycle hook; ``None`` takes the kernel default."""

    kernel: KernelAPI
    config: Any
    flags: Any
    """A ``FlagSet`` when the class declares a ``Flags`` model (``docs/flags.md``)."""
    log: logging.Logger

    @property
    def store(self) -> NamespacedStore:
        """This module's namespace of the kernel's Store; ``store.namespace(x)`` reaches another."""
        return self.kernel.store_for(self.name)

    @property
    def sagas(self) -> ModuleSagas:
        """Start this module's sagas: ``await self.sagas.start("order", params, key=...)``."""
        from organelle.sagas import ModuleSagas

        return ModuleSagas(self.kernel.sagas, self.name)

    def spawn(
        self, coro: Coroutine[Any, Any, Any], *, name: str | None = None
    ) -> asyncio.Task[Any]:
        """Run background work owned by this module; cancelled after ``on_stop``.

        The task gets a fresh root context, so its calls and events are not
        tied to the hook that started it; it counts as internal work (not
        refused while the kernel drains). If it dies with an exception, the
        module is stopped and a fresh instance restarted with backoff
        (``[kernel] restart_on_crash``) while the other modules keep serving.
        """
        ctx = contextvars.copy_context()
        ctx.run(_current.set, root_context(None))
        task = asyncio.get_running_loop().create_task(
            coro, name=name or f"{self.name}-background", context=ctx
        )
        tasks: set[asyncio.Task[Any]] = self.__dict__.setdefault("_organelle_tasks", set())
        tasks.add(task)
        task.add_done_callback(self._background_done)
        return task

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self.__dict__.get("_organelle_tasks", set()).discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            self.log.error("background task %s failed", task.get_name(), exc_info=error)
            self.kernel.module_crashed(self, error)

    async def _cancel_background(self) -> None:
        tasks: set[asyncio.Task[Any]] = self.__dict__.get("_organelle_tasks", set())
        for task in list(tasks):
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _attach(self, kernel: KernelAPI, config: Any) -> None:
        self.kernel = kernel
        self.config = config
        self.log = logging.getLogger(f"organelle.module.{self.name}")
        # Bind the kernel's entry points straight onto the instance: a call from
        # a module costs no extra frame.
        self.call = kernel.call  # type: ignore[method-assign]
        self.call_with = functools.partial(kernel.call_with, caller=self.name)  # type: ignore[method-assign]
        self.emit = kernel.emit  # type: ignore[method-assign]
        self.enqueue = kernel.enqueue  # type: ignore[method-assign]
        self.append = kernel.append  # type: ignore[method-assign]

    async def call(self, target: str, /, **params: Any) -> Any:
        """Call ``"<module>.<method>"`` with ``params``; see ``Kernel.call``."""
        return await self.kernel.call(target, **params)

    def client(self, cls: Callable[..., T], *, module: str | None = None) -> T:
        """A typed client of another module: ``await self.client(Pricing).quote(sku="a")``.

        ``cls`` is the module's class, or a Protocol of ``async def`` stubs
        named by its ``name`` attribute or ``module=``. Type checkers see an
        instance of ``cls``, so calls are checked against its signatures;
        results come back as the declared return type, here or remote. Only
        RPC methods are there (other attributes raise ``AttributeError``).
        Build it in ``on_load`` or later (it calls through the kernel).

        Raises:
            DefinitionError: not attached to a kernel yet, or ``cls`` cannot be a client.
        """
        if "kernel" not in self.__dict__:
            raise DefinitionError(
                f"{type(self).__qualname__}.client(): the module is not attached to a kernel "
                "yet; make clients in on_load or later"
            )
        clients: dict[tuple[object, str | None], Any]
        clients = self.__dict__.setdefault("_organelle_clients", {})
        made = clients.get((cls, module))
        if made is None:
            made = clients[cls, module] = self.kernel.client(cls, module=module)
        return made

    async def call_with(
        self,
        target: str,
        params: dict[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Any:
        """Call with explicit options; see ``Kernel.call_with``."""
        return await self.kernel.call_with(target, params, timeout_s=timeout_s, meta=meta)

    async def emit(
        self,
        topic: str | object,
        payload: Any = None,
        *,
        meta: dict[str, Any] | None = None,
        key: str | None = None,
    ) -> None:
        """Emit an event (a topic and payload, or an ``@event`` instance); see ``Kernel.emit``."""
        await self.kernel.emit(topic, payload, meta=meta, module=self.name, key=key)

    def transaction(self) -> AbstractAsyncContextManager[TransactionAPI]:
        """Store writes and messages that commit together or not at all.

        ``async with self.transaction() as tx:`` — ``tx.store`` is this
        module's Store namespace (plain ``self.store`` calls join too);
        ``tx.emit`` / ``tx.append`` / ``tx.enqueue`` are sent once the
        transaction commits. See ``docs/events.md``.
        """
        return self.kernel.transaction(self.name)

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
        """Enqueue a durable job; see ``Kernel.enqueue``."""
        return await self.kernel.enqueue(
            job,
            delay_s=delay_s,
            at=at,
            priority=priority,
            idempotency_key=idempotency_key,
            **params,
        )

    async def append(
        self,
        stream: str,
        payload: Any = None,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, int]:
        """Append a record to a durable stream; see ``Kernel.append``."""
        return await self.kernel.append(stream, payload, key=key, headers=headers)

    def lock(
        self, name: str, *, ttl_s: float = 10.0, timeout_s: float | None = None
    ) -> AbstractAsyncContextManager[LockLease]:
        """Hold the cluster-wide lock ``<module>.<name>``: ``async with self.lock("x") as lease:``.

        Waits up to ``timeout_s`` (``None``: forever; ``LockTimeoutError``),
        renews every ``ttl_s / 3`` in the background and releases on exit; a
        holder that dies frees it after ``ttl_s``. Stamp writes with
        ``lease.token`` (``organelle.locks.fenced_put``) or call
        ``lease.check()`` before acting. See ``Kernel.lock`` and ``docs/locks.md``.
        """
        return self.kernel.lock(f"{self.name}.{name}", ttl_s=ttl_s, timeout_s=timeout_s)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} module {self.name!r} v{self.version}>"
