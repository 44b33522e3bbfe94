"""What users need to test their own modules.

* ``running(...)`` — an ``async with`` that starts a kernel and always stops it.
* ``capture(kernel, pattern)`` — record emitted events (a kernel listener);
  ``await kernel.drain()`` first so tests never sleep.
* ``fake_module(name, version, **handlers)`` — stand in for a dependency with
  plain async functions.
* ``eventually(check)`` — retry a check until it passes, within a deadline, for
  what no ``drain()`` waits on (another process, a server).

A pytest fixture is three lines with pytest-asyncio::

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

__all__ = ["Captured", "capture", "eventually", "fake_module", "running"]


@asynccontextmanager
async def running(
    *modules: ModuleRef,
    config: Mapping[str, Any] | None = None,
    **kernel_options: Any,
) -> AsyncIterator[Kernel]:
    """Start a kernel with ``modules``; stop it on exit, even after a failure."""
    kernel = Kernel(modules, config, **kernel_options)
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
