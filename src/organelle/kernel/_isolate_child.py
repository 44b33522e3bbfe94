"""The child side of process isolation: a kernel that runs one module for its parent.

Started by ``_isolate._Child.start`` as ``python -m organelle.kernel._isolate_child FD``
with one end of a socketpair. It waits for ``["start", ref, config, limits]``,
sets the limits, starts a kernel with that one module, says ``ready``, then
serves the parent's calls and events until ``stop`` or until the parent goes
away. The module's calls to
modules it does not run, and all its events, go to the parent.

A ``MemoryError`` anywhere in the module ends the process: after an
allocation failed half-way its state cannot be trusted, and the parent
restarts a fresh one.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import resource
import socket
import sys
import time
from typing import Any

from organelle.codec import to_builtins
from organelle.context import _current, root_context
from organelle.envelope import event_topic
from organelle.errors import UnavailableError
from organelle.kernel._isolate import HEALTH
from organelle.kernel._isolate_wire import Peer
from organelle.kernel._kernel import Kernel
from organelle.module import Module

__all__ = ["main"]

log = logging.getLogger("organelle.isolate")

_EXIT_OOM = 71  # sysexits' EX_OSERR: the module ran out of memory
_EXIT_CRASH = 70  # EX_SOFTWARE: its background work crashed


def _fatal(exc: BaseException | None) -> None:
    while exc is not None:
        if isinstance(exc, MemoryError):
            os._exit(_EXIT_OOM)
        exc = exc.__cause__ or exc.__context__


class ChildKernel(Kernel):
    """A kernel whose calls to modules it lacks, and whose events, go to the parent."""

    peer: Peer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # What this kernel's own ``call`` would be: the calls the parent sends here.
        self.direct_call = self._dispatcher.call

    async def call(self, target: str, /, **params: Any) -> Any:
        return await self.call_with(target, params)

    async def call_with(
        self,
        target: str,
        params: Any = None,
        *,
        timeout_s: float | None = None,
        meta: dict[str, Any] | None = None,
        principal: Any = None,
        caller: str | None = None,
    ) -> Any:
        if target.partition(".")[0] in self._slots:
            return await super().call_with(
                target, params, timeout_s=timeout_s, meta=meta, principal=principal, caller=caller
            )
        return await self.peer.call(target, dict(params or {}), timeout_s)

    async def emit(
        self,
        topic: str | object,
        payload: Any = None,
        *,
        meta: dict[str, Any] | None = None,
        module: str | None = None,
        key: str | None = None,
    ) -> None:
        del meta, module  # the parent emits in the module's name
        if not isinstance(topic, str):
            topic, payload = event_topic(topic, payload), topic
        self.peer.send(["emit", topic, payload, key])

    def module_crashed(self, module: Module, error: BaseException) -> None:
        _fatal(error)
        log.error("isolated module %r crashed: %s", module.name, error, exc_info=error)
        os._exit(_EXIT_CRASH)


def _limit(limits: dict[str, int]) -> None:
    """Set this process's limits, before the module's code is imported."""
    memory = limits.get("max_memory_mb")
    if memory is not None:
        resource.setrlimit(resource.RLIMIT_AS, (memory << 20, memory << 20))
    cpu = limits.get("max_cpu_s")
    if cpu is not None:  # soft: SIGXCPU, which ends the process; hard a second later: SIGKILL
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))


def _detached(ref: str) -> type[Module]:
    """The module class by ``"pkg.mod:Class"``, its dependencies left to the parent.

    The parent checked the graph and serves the modules this one requires, so
    the child's kernel must neither refuse to start nor wait for them.
    """
    path, _, qualname = ref.partition(":")
    found: Any = importlib.import_module(path)
    for part in qualname.split("."):
        found = getattr(found, part)
    if not (isinstance(found, type) and issubclass(found, Module)):
        raise TypeError(f"{ref} is not a Module subclass")
    namespace = {"__module__": found.__module__, "__qualname__": found.__qualname__}
    return type(found.__name__, (found,), {**namespace, "requires": (), "optional": ()})


class _Host:
    """Serves the parent: its calls and events go to the module this child runs."""

    def __init__(self) -> None:
        self.kernel: ChildKernel | None = None
        self.module = ""
        self.started: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self.stop = asyncio.Event()

    async def call(self, target: str, params: dict[str, Any], timeout_s: float | None) -> Any:
        if self.kernel is None:
            raise UnavailableError("the isolated module is not started yet")
        if target == HEALTH:
            return await self.health()
        # The kernel's own (compiled) call, under the parent's deadline; this
        # task's context is its own, so setting it here touches no other call.
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        _current.set(root_context(deadline))
        try:
            return await self.kernel.direct_call(target, **params)
        except BaseException as exc:
            _fatal(exc)
            raise

    async def health(self) -> Any:
        """What the module's ``health()`` says, as builtins (a result's figures flattened)."""
        assert self.kernel is not None  # noqa: S101 - checked by the caller
        value = to_builtins(await self.kernel.module(self.module).health())  # type: ignore[attr-defined]
        if isinstance(value, dict) and isinstance(value.get("data"), dict):
            value = {**value.pop("data"), **value}
        return value

    async def deliver(self, handler: str, topic: str | None, payload: Any) -> None:
        if self.kernel is not None:
            await self.kernel.deliver(self.module, handler, payload, root_context(topic=topic))

    def message(self, msg: list[Any]) -> Any:
        kind = msg[0]
        if kind == "start" and not self.started.done():
            self.started.set_result(msg)
        elif kind == "stop":
            self.stop.set()
        elif kind == "event":
            return self.deliver(msg[1], msg[2], msg[3])
        return None


async def _serve(fd: int) -> None:
    reader, writer = await asyncio.open_connection(sock=socket.socket(fileno=fd))
    host = _Host()
    peer = Peer(reader, writer, host.call, host.message, name="isolation parent")
    parent_gone: asyncio.Future[Any] = asyncio.ensure_future(peer.closed.wait())
    await asyncio.wait({host.started, parent_gone}, return_when=asyncio.FIRST_COMPLETED)
    if not host.started.done():
        return
    _, ref, config, limits = host.started.result()
    # Its lines in the parent's stderr say whose they are.
    name = next(iter(config["modules"]), "?")
    level = str(config["kernel"].get("log_level", "INFO")).upper()
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format=f"%(levelname)s isolated:{name}[{os.getpid()}] %(name)s: %(message)s",
    )
    try:
        _limit(limits)
        kernel = ChildKernel(modules=[_detached(ref)], config=config)
        kernel.peer = peer
        host.module = next(iter(kernel.modules()))
        await kernel.start()
    except Exception as exc:
        peer.send(["failed", f"{type(exc).__name__}: {exc}"])
        await asyncio.sleep(0.1)  # let the frame go out
        return
    host.kernel = kernel
    peer.send(["ready"])
    stopped: asyncio.Future[Any] = asyncio.ensure_future(host.stop.wait())
    await asyncio.wait({stopped, parent_gone}, return_when=asyncio.FIRST_COMPLETED)
    await kernel.stop()
    await peer.aclose()


def main() -> None:
    """Entry point: ``python -m organelle.kernel._isolate_child FD``."""
    asyncio.run(_serve(int(sys.argv[1])))


if __name__ == "__main__":
    main()
