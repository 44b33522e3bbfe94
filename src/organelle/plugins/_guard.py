"""The kernel as a plugin module sees it: the same API, limited to what its manifest declares.

A module with a ``manifest`` is attached to a ``GuardedKernel`` instead of the
kernel itself. Each name a module uses is matched against the manifest once,
then remembered, so an allowed call costs a set lookup and one more function
call; a module without a manifest is attached to the kernel directly and pays
nothing. The guard bounds what a well-meaning plugin can reach through its
API; it is not a sandbox against hostile code in the same process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from organelle.envelope import event_topic
from organelle.errors import PermissionDeniedError
from organelle.module._client import client_of
from organelle.plugins._manifest import Manifest, Permit
from organelle.storage.namespace import NamespacedStore, NamespacedTx

if TYPE_CHECKING:
    from datetime import datetime

    from organelle.jobs import JobsService
    from organelle.locks import LockLease
    from organelle.module import KernelAPI, Module
    from organelle.module._base import TransactionAPI
    from organelle.sagas import Sagas
    from organelle.storage import StateEngine, Store, StoreTx
    from organelle.streams.base import StreamLog

__all__ = ["GuardedKernel", "GuardedStore"]

T = TypeVar("T")
_ALL = ("*", ">")


def denied(module: str, kind: str, name: str) -> PermissionDeniedError:
    """The error for ``module`` using ``name`` of ``kind`` outside its manifest."""
    return PermissionDeniedError(
        f"plugin module {module!r} may not use {kind} {name!r}: its manifest does not declare it",
        details={"module": module, "kind": kind, "name": name},
    )


async def _raise(error: Exception) -> NoReturn:
    raise error


class _Rules:
    """The manifest's rules for one module."""

    def __init__(self, module: str, manifest: Manifest) -> None:
        self.module = module
        self.rpc = manifest.rule("rpc", module)
        self.emit = manifest.rule("emit")
        self.jobs = manifest.rule("jobs", module)
        self.streams = manifest.rule("streams")
        self.storage = manifest.rule("storage", module)

    def check(self, rule: Permit, name: object) -> None:
        if isinstance(name, str) and not rule.admits(name):
            raise denied(self.module, rule.kind, name)

    def whole(self, rule: Permit, what: str) -> None:
        if not any(p in _ALL for p in rule.patterns):
            raise denied(self.module, rule.kind, what)

    def topic(self, topic: object, payload: Any) -> str | None:
        """The emitted topic's name once checked (``None``: not a topic; the emit says why)."""
        if type(topic) is not str:
            try:
                topic = event_topic(topic, payload)
            except Exception:  # the kernel's emit raises the precise error
                return None
        self.check(self.emit, topic)
        return topic


def guard_call(rules: _Rules, call: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """``call`` behind the RPC rule: an allowed target goes straight to it (no extra coroutine)."""
    allowed = rules.rpc.allowed
    admits = rules.rpc.admits
    module = rules.module

    def guarded(target: str, /, **params: Any) -> Awaitable[Any]:
        try:
            if target in allowed or admits(target):
                return call(target, **params)
        except TypeError:  # not a str: the kernel's call names what is wrong
            return call(target, **params)
        return _raise(denied(module, "rpc", target))

    return guarded


def guard_emit(rules: _Rules, emit: Callable[..., Awaitable[None]]) -> Callable[..., Any]:
    """``emit`` behind the emit rule: a topic string already allowed goes straight to it."""
    allowed = rules.emit.allowed

    def guarded(topic: Any, payload: Any = None, **options: Any) -> Awaitable[None]:
        if type(topic) is not str or topic not in allowed:
            try:
                rules.topic(topic, payload)
            except PermissionDeniedError as exc:
                return _raise(exc)
        return emit(topic, payload, **options)

    return guarded


class GuardedKernel:
    """A ``KernelAPI`` over ``kernel`` that refuses what ``manifest`` does not declare."""

    def __init__(self, kernel: KernelAPI, module: str, manifest: Manifest) -> None:
        self._kernel = kernel
        self._rules = rules = _Rules(module, manifest)
        self.manifest = manifest
        self.call = guard_call(rules, kernel.call)
        self.emit = guard_emit(rules, kernel.emit)
        self._views: dict[str, GuardedStore] = {}

    def guard_call(self, call: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        """Put another ``call`` (a caller's policy path) behind this module's RPC rule."""
        return guard_call(self._rules, call)

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
        """See ``Kernel.call_with``; refused outside the manifest's ``rpc``.

        A plugin calls as itself: ``caller`` is always its own name (its call
        policies), and ``principal`` (calling as someone else) is refused.
        """
        rules = self._rules
        rules.check(rules.rpc, target)
        if principal is not None:
            raise denied(rules.module, "principal", getattr(principal, "id", str(principal)))
        del caller  # a plugin's calls are its own, for the call policies too
        return await self._kernel.call_with(
            target, params, timeout_s=timeout_s, meta=meta, caller=rules.module
        )

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
        """See ``Kernel.enqueue``; refused outside the manifest's ``jobs``."""
        self._rules.check(self._rules.jobs, job)
        return await self._kernel.enqueue(
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
        """See ``Kernel.append``; refused outside the manifest's ``streams``."""
        self._rules.check(self._rules.streams, stream)
        return await self._kernel.append(stream, payload, key=key, headers=headers)

    def transaction(self, module: str | None = None) -> AbstractAsyncContextManager[TransactionAPI]:
        """See ``Kernel.transaction``; its store and messages under the same rules."""
        if module is None:
            self._rules.whole(self._rules.storage, "the shared Store")
        else:
            self._rules.check(self._rules.storage, module)
        return _GuardedBlock(self._kernel.transaction(module), self._rules)

    async def wait_for(self, name: str, timeout_s: float = 10.0) -> None:
        """See ``Kernel.wait_for``."""
        await self._kernel.wait_for(name, timeout_s)

    def client(self, cls: Callable[..., T], *, module: str | None = None) -> T:
        """A typed client whose calls go through this module's RPC rule."""
        return client_of(cls, self.call, module)

    def store_for(self, namespace: str) -> NamespacedStore:
        """The Store's view under ``namespace``; refused outside the manifest's ``storage``."""
        view = self._views.get(namespace)
        if view is None:
            self._rules.check(self._rules.storage, namespace)
            store = self._kernel.store_for(namespace).store
            view = self._views[namespace] = GuardedStore(store, namespace, self._rules)
        return view

    def module_crashed(self, module: Module, error: BaseException) -> None:
        """See ``Kernel.module_crashed``."""
        self._kernel.module_crashed(module, error)

    def lock(
        self, name: str, *, ttl_s: float = 10.0, timeout_s: float | None = None
    ) -> AbstractAsyncContextManager[LockLease]:
        """A lock under the module's own name (others need ``storage = ["*"]``)."""
        if not name.startswith(self._rules.module + "."):
            self._rules.whole(self._rules.storage, f"lock {name}")
        return self._kernel.lock(name, ttl_s=ttl_s, timeout_s=timeout_s)

    @property
    def store(self) -> Store:
        """The whole shared Store: only with ``storage = ["*"]``."""
        self._rules.whole(self._rules.storage, "the shared Store")
        return self._kernel.store

    @property
    def states(self) -> StateEngine:
        """The state engine (a shared Store namespace): only with ``storage = ["*"]``."""
        self._rules.whole(self._rules.storage, "kernel.states")
        return self._kernel.states

    @property
    def sagas(self) -> Sagas:
        """The saga engine (its steps are jobs and calls the sagas declare)."""
        return self._kernel.sagas

    @property
    def jobs(self) -> JobsService:
        """The whole job service: only with ``jobs = [">"]``."""
        self._rules.whole(self._rules.jobs, "kernel.jobs")
        return self._kernel.jobs

    @property
    def streams(self) -> StreamLog:
        """The whole stream log: only with ``streams = [">"]``."""
        self._rules.whole(self._rules.streams, "kernel.streams")
        return self._kernel.streams

    @property
    def running(self) -> bool:
        """See ``Kernel.running``."""
        return self._kernel.running


class GuardedStore(NamespacedStore):
    """A module's Store view whose ``namespace()`` and ``store`` follow its manifest."""

    def __init__(self, store: Store, namespace: str, rules: _Rules) -> None:
        super().__init__(store, namespace)
        self._rules = rules

    @property
    def store(self) -> Store:
        """The shared Store underneath: only with ``storage = ["*"]``."""
        self._rules.whole(self._rules.storage, "the shared Store")
        return self._store

    def namespace(self, name: str) -> NamespacedStore:
        """Another namespace, if the manifest's ``storage`` declares it."""
        self._rules.check(self._rules.storage, name)
        return GuardedStore(self._store, name, self._rules)

    def transaction(self) -> AbstractAsyncContextManager[StoreTx]:
        """See ``NamespacedStore.transaction``; its ``namespace()`` checked too."""
        return _TxBlock(super().transaction(), self._rules)

    def current_tx(self) -> NamespacedTx | None:
        """See ``NamespacedStore.current_tx``."""
        tx = super().current_tx()
        return None if tx is None else _GuardedTx(tx._tx, tx.name, self._rules)


class _GuardedTx(NamespacedTx):
    def __init__(self, tx: StoreTx, namespace: str, rules: _Rules) -> None:
        super().__init__(tx, namespace)
        self._rules = rules

    def namespace(self, name: str) -> NamespacedTx:
        self._rules.check(self._rules.storage, name)
        return _GuardedTx(self._tx, name, self._rules)


class _TxBlock:
    def __init__(self, inner: AbstractAsyncContextManager[Any], rules: _Rules) -> None:
        self._inner = inner
        self._rules = rules

    async def __aenter__(self) -> StoreTx:
        tx: NamespacedTx = await self._inner.__aenter__()
        return _GuardedTx(tx._tx, tx.name, self._rules)

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._inner.__aexit__(et, exc, tb)


class _GuardedTransaction:
    """An outbox transaction whose messages and store follow the manifest."""

    def __init__(self, inner: TransactionAPI, rules: _Rules) -> None:
        self._inner = inner
        self._rules = rules
        view = inner.store
        if isinstance(view, NamespacedStore):
            self.store: Any = GuardedStore(view._store, view.name, rules)
        else:
            self.store = view  # the shared Store: allowed by transaction() already

    async def emit(
        self,
        topic: str | object,
        payload: Any = None,
        *,
        key: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> str:
        self._rules.topic(topic, payload)
        return await self._inner.emit(topic, payload, key=key, meta=meta)

    async def append(self, stream: str, payload: Any = None, *, key: str | None = None) -> str:
        self._rules.check(self._rules.streams, stream)
        return await self._inner.append(stream, payload, key=key)

    async def enqueue(
        self, job: str, /, *, delay_s: float | None = None, priority: int = 0, **params: Any
    ) -> str:
        self._rules.check(self._rules.jobs, job)
        return await self._inner.enqueue(job, delay_s=delay_s, priority=priority, **params)


class _GuardedBlock:
    def __init__(self, inner: AbstractAsyncContextManager[TransactionAPI], rules: _Rules) -> None:
        self._inner = inner
        self._rules = rules

    async def __aenter__(self) -> TransactionAPI:
        return _GuardedTransaction(await self._inner.__aenter__(), self._rules)

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        return await self._inner.__aexit__(et, exc, tb)
