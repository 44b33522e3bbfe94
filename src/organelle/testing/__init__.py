"""What users need to test their own modules.

* ``running(...)`` — an ``async with`` that starts a kernel and always stops it;
  in memory unless the config names a store, job queue, stream log or blob store.
* ``capture(kernel, pattern)`` — record emitted events (a kernel listener);
  ``await kernel.drain()`` first so tests never sleep.
* ``fake_module(name, version, **handlers)`` — stand in for a dependency with
  plain async functions.
* ``eventually(check)`` — retry a check until it passes, within a deadline, for
  what no ``drain()`` waits on (another process, a server).

The pytest plugin (``organelle.testing.pytest_plugin``, loaded by entry point
with ``organelle[testing]``) gives ready fixtures: ``kernel``, ``nats_server``,
``postgres``. A fixture of your own is three lines::

    @pytest.fixture
    async def kernel():
        async with running(Orders, fake_module("pricing", "1.0.0", quote=quote)) as k:
            yield k

Real servers for integration tests (``NatsServer``, ``PostgresServer``) live in
``organelle.testing.servers``.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from organelle.errors import DefinitionError
from organelle.kernel import BaseListener, EventReport, Kernel, LifecycleReport, ModuleRef
from organelle.module import Module, rpc
from organelle.module._topics import matches
from organelle.testing._eventually import eventually

__all__ = ["Captured", "capture", "eventually", "fake_module", "in_memory", "running"]

_IN_MEMORY: Mapping[str, str] = {
    "storage": "memory://",
    "jobs": "memory://",
    "streams": "memory://",
    "blobs": "memory://",
}
"""The ``[kernel]`` URLs ``running()`` fills in where the config names none."""


def in_memory(config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return ``config`` with ``memory://`` for each of ``[kernel]``'s unset data URLs.

    Those are the store, job queue, stream log and blob store: a kernel's own
    defaults are files in the working directory (``organelle.db``,
    ``organelle-jobs.db``, …), so state would leak from one test run into the
    next. A URL the config does name (a file, a server) is kept.
    """
    merged = dict(config or {})
    kernel = dict(merged.get("kernel") or {})
    for key, url in _IN_MEMORY.items():
        kernel.setdefault(key, url)
    merged["kernel"] = kernel
    return merged


@asynccontextmanager
async def running(
    *modules: ModuleRef,
    config: Mapping[str, Any] | None = None,
    **kernel_options: Any,
) -> AsyncIterator[Kernel]:
    """Start a kernel with ``modules``; stop it on exit, even after a failure.

    Nothing is written to disk unless ``config`` asks for it: the Store, job
    queue, stream log and blob store are in memory (``in_memory``) where
    ``[kernel]`` names none. Each kernel so gets its own queue and log; kernels
    that must share them need a URL in their config (a file or a server).
    """
    defaults = in_memory(kernel_options.pop("defaults", None))
    kernel = Kernel(modules, config, defaults=defaults, **kernel_options)
    await kernel.start()
    try:
        yield kernel
    finally:
        await kernel.stop()


class Captured(list[tuple[str, Any]], BaseListener):
    """The list ``capture`` returns: it is also the kernel listener that fills it.

    ``kernel.unlisten(captured)`` stops recording; what was recorded stays.
    """

    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = pattern

    def on_event(self, event: EventReport, /) -> None:
        """Record an emit whose topic matches."""
        if matches(self.pattern, event.topic):
            self.append((event.topic, event.payload))

    def on_lifecycle(self, change: LifecycleReport, /) -> None:
        """Record a kernel event (module state, config reload) whose topic matches."""
        if matches(self.pattern, change.topic):
            self.append((change.topic, dict(change.payload)))


def capture(kernel: Kernel, pattern: str = ">") -> Captured:
    """Return a list that fills with ``(topic, payload)`` of every matching emit.

    Events are recorded when emitted (before handlers run), in emit order;
    kernel events (``kernel.module.*``, ``kernel.config.*``) match ``>`` too.
    The list is a kernel listener: ``kernel.unlisten(it)`` stops it. This is
    the test convenience the kernel's old ``tap`` was; the kernel itself only
    has listeners.
    """
    captured = Captured(pattern)
    kernel.listen(captured)
    return captured


def fake_module(
    name: str,
    version: str = "0.0.0",
    /,
    **handlers: Callable[..., Awaitable[Any]],
) -> type[Module]:
    """Build a module class whose RPC methods are the given async functions.

    The functions take the RPC params (no ``self``); their type hints are the
    contract, as for a real module::

        async def quote(sku: str) -> float:
            return 1.0

        Pricing = fake_module("pricing", "1.2.0", quote=quote)
    """
    namespace: dict[str, Any] = {"name": name, "version": version, "__module__": __name__}
    for method, fn in handlers.items():
        if not inspect.iscoroutinefunction(fn):
            raise DefinitionError(f"fake_module {name!r}: handler {method!r} must be async")
        namespace[method] = rpc(_as_method(fn))
    return type(f"Fake_{name}", (Module,), namespace)


def _as_method(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def method(_self: Module, *args: Any, **kwargs: Any) -> Any:
        return await fn(*args, **kwargs)

    sig = inspect.signature(fn)
    self_param = inspect.Parameter("_self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    method.__signature__ = sig.replace(parameters=[self_param, *sig.parameters.values()])  # type: ignore[attr-defined]
    method.__annotations__ = dict(getattr(fn, "__annotations__", {}))
    method.__name__ = fn.__name__
    method.__qualname__ = fn.__qualname__
    method.__module__ = fn.__module__
    method.__wrapped__ = fn  # type: ignore[attr-defined]
    return method
