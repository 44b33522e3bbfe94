"""Process isolation: ``isolate = true`` runs a module in a supervised child process.

The kernel keeps a stand-in for the module — a subclass of the module's own
class, so its name, dependencies, RPC signatures and subscriptions are the
real ones — whose handlers forward over a private channel
(``_isolate_wire.Peer``, a socketpair) to a child kernel that runs only the
real module (``_isolate_child``). The child's own calls and events come back
the same way, so the module reaches the others as if it ran in process.

A child that dies (a segfault, an ``RLIMIT_AS`` out-of-memory, ``RLIMIT_CPU``
spent, a crash of its background work) is the stand-in's background task
failing: the kernel's ``Supervisor`` stops the slot, answers its calls with
``UnavailableError`` at once, and starts a fresh child with backoff
(``[kernel] restart_backoff_s`` doubling to ``restart_backoff_max_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from organelle.codec import to_builtins
from organelle.context import current_context
from organelle.errors import ConfigError, LifecycleError, OrganelleError, UnavailableError
from organelle.kernel._isolate_wire import Peer
from organelle.module import Module, describe

__all__ = ["HEALTH", "IsolateOptions", "isolated", "parse_isolate"]

log = logging.getLogger("organelle.kernel")

# What the child's kernel takes over from the parent's ``[kernel]`` section: the
# shared backends and the timeouts. Not the transport: the child is reached
# only through its channel (it runs a solo ``memory://``).
_INHERITED = (
    "app",
    "storage",
    "jobs",
    "streams",
    "blobs",
    "call_timeout_s",
    "hook_timeout_s",
    "drain_timeout_s",
    "log_level",
    "validate",
)
_STOP_WAIT_S = 5.0
HEALTH = "$health"  # the call target that asks the child module's health()
_EXIT_OOM = 71  # the child's exit code after a MemoryError (``_isolate_child``)


@dataclass(frozen=True, slots=True, kw_only=True)
class IsolateOptions:
    """Limits and timeouts of one isolated module (``[modules.<name>.isolate]``).

    Attributes:
        max_memory_mb: the child's address-space limit (``RLIMIT_AS``); an
            allocation past it is an out-of-memory: the child exits and restarts.
        max_cpu_s: CPU seconds the child may use over its life (``RLIMIT_CPU``);
            a runaway loop is killed by ``SIGXCPU`` and the module restarts.
        start_timeout_s: how long a child may take to import and start the module.
    """

    max_memory_mb: int | None = None
    max_cpu_s: int | None = None
    start_timeout_s: float = 30.0


def parse_isolate(module: str, value: Any) -> IsolateOptions | None:
    """``isolate = true`` or a table of ``IsolateOptions``; ``None``/``false``: in process.

    Raises:
        ConfigError: naming ``modules.<name>.isolate`` and the bad key or value.
    """
    key = f"modules.{module}.isolate"
    if value is None or value is False:
        return None
    if value is True:
        return IsolateOptions()
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected true, false or a table", details={"key": key})
    fields: dict[str, type | tuple[type, ...]] = {
        "max_memory_mb": int,
        "max_cpu_s": int,
        "start_timeout_s": (int, float),
    }
    for name, item in value.items():
        kind = fields.get(name)
        if kind is None:
            known = ", ".join(fields)
            raise ConfigError(f"{key}.{name}: unknown key (known: {known})", details={"key": key})
        positive = isinstance(item, (int, float)) and item > 0
        if isinstance(item, bool) or not isinstance(item, kind) or not positive:
            what = "a positive whole number" if kind is int else "a positive number"
            raise ConfigError(f"{key}.{name}: must be {what}", details={"key": key})
    return IsolateOptions(**dict(value))


def isolated(
    cls: type[Module],
    options: IsolateOptions,
    section: Mapping[str, Any],
    kernel: Mapping[str, Any],
) -> type[Module]:
    """The stand-in class of ``cls``: same spec, handlers forwarded to a child process.

    ``section`` is the module's config section without the kernel's keys;
    ``kernel`` the parent's ``[kernel]`` section (backends the child shares).
    """
    spec = describe(cls)
    ref = f"{cls.__module__}:{cls.__qualname__}"
    if "<locals>" in ref:
        raise ConfigError(
            f"modules.{spec.name}.isolate: {cls.__qualname__} must be importable by name "
            "(a module-level class) to run in a child process"
        )
    child_kernel = {k: kernel[k] for k in _INHERITED if k in kernel}
    child_kernel["restart_on_crash"] = False  # the parent supervises
    namespace: dict[str, Any] = {
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "_isolation": _Launch(spec.name, ref, options, dict(section), child_kernel),
    }
    for hook in ("on_load", "on_abort", "on_config_changed", "on_config_check"):
        namespace[hook] = None  # they run in the child; a stand-in has none
    if getattr(cls, "health", None) is not None:
        namespace["health"] = _health
    namespace["on_start"] = _on_start
    namespace["on_stop"] = _on_stop
    for method, rpc in spec.rpcs.items():
        namespace[rpc.attr] = _forward_call(getattr(cls, rpc.attr), f"{spec.name}.{method}")
    for sub in spec.subscriptions:
        namespace[sub.attr] = _forward_event(getattr(cls, sub.attr), sub.attr)
    for job in spec.jobs.values():
        namespace[job.attr] = None  # jobs, crons and consumers run in the child
    for consumer in spec.consumers:
        namespace[consumer.attr] = None
    return type(cls.__name__, (cls,), namespace)


@dataclass(frozen=True, slots=True)
class _Launch:
    """What starting one child needs: the module's import reference and config."""

    name: str
    ref: str
    options: IsolateOptions
    section: dict[str, Any]
    kernel: dict[str, Any]

    def limits(self) -> dict[str, int]:
        """The child's resource limits, which it sets on itself before importing the module.

        Not a ``preexec_fn``: that runs Python between fork and exec, which is
        unsafe while the parent has threads (a SQLite Store has one).
        """
        limits = {}
        if self.options.max_memory_mb is not None:
            limits["max_memory_mb"] = self.options.max_memory_mb
        if self.options.max_cpu_s is not None:
            limits["max_cpu_s"] = self.options.max_cpu_s
        return limits


def _forward_call(fn: Callable[..., Any], target: str) -> Callable[..., Any]:
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    async def forward(self: Module, *args: Any, **params: Any) -> Any:
        if args:  # the kernel passes keywords; only a direct call may not
            params = dict(list(signature.bind(self, *args, **params).arguments.items())[1:])
        ctx = current_context()
        remaining = None if ctx is None else ctx.remaining_s()
        return await _child(self).peer.call(target, params, remaining)

    return forward


def _forward_event(fn: Callable[..., Any], attr: str) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def forward(self: Module, payload: Any) -> None:
        ctx = current_context()
        topic = None if ctx is None else ctx.topic
        _child(self).peer.send(["event", attr, topic, to_builtins(payload)])

    return forward


async def _health(self: Module) -> Any:
    """The child module's own ``health()``, asked over the channel."""
    return await _child(self).peer.call(HEALTH, {}, None)


def _child(module: Module) -> _Child:
    child: _Child | None = module.__dict__.get("_organelle_child")
    if child is None:
        # Between on_stop and the routes going down (a stop or a restart).
        raise UnavailableError(f"module {module.name!r}: its isolated process is not running")
    return child


async def _on_start(self: Module) -> None:
    launch: _Launch = type(self)._isolation  # type: ignore[attr-defined]
    child = await _Child.start(self, launch)
    self.__dict__["_organelle_child"] = child
    self.spawn(child.watch(), name=f"{self.name}-isolated")


async def _on_stop(self: Module) -> None:
    child: _Child | None = self.__dict__.pop("_organelle_child", None)
    if child is not None:
        await child.stop()


class _Child:
    """One running child process and its channel."""

    def __init__(self, module: Module, process: asyncio.subprocess.Process) -> None:
        self.module = module
        self.process = process
        self.stopping = False
        self.ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.peer: Peer

    @classmethod
    async def start(cls, module: Module, launch: _Launch) -> _Child:
        """Start the child, hand it the module, wait until it serves.

        Raises:
            LifecycleError: the child exited or did not start in time.
        """
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        # The child imports the module by name: give it the parent's import path.
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "organelle.kernel._isolate_child",
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                env=env,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        child = cls(module, process)
        reader, writer = await asyncio.open_connection(sock=ours)
        child.peer = Peer(
            reader, writer, child.serve, child.message, name=f"isolated {launch.name}"
        )
        child.peer.send(
            [
                "start",
                launch.ref,
                {"kernel": launch.kernel, "modules": {launch.name: _section(module, launch)}},
                launch.limits(),
            ]
        )
        exited: asyncio.Future[Any] = asyncio.ensure_future(process.wait())
        try:
            async with asyncio.timeout(launch.options.start_timeout_s):
                await asyncio.wait({exited, child.ready}, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            await child.stop()
            raise LifecycleError(
                f"module {launch.name!r}: the isolated process did not start"
            ) from None
        if not child.ready.done() or child.ready.exception() is not None:
            reason = _describe_exit(process.returncode) if exited.done() else "failed"
            error = child.ready.exception() if child.ready.done() else None
            await child.stop()
            raise LifecycleError(
                f"module {launch.name!r}: the isolated process {reason}"
            ) from error
        exited.cancel()
        return child

    async def serve(self, target: str, params: dict[str, Any], timeout_s: float | None) -> Any:
        """A call the isolated module makes to another module."""
        return await self.module.kernel.call_with(
            target, params, timeout_s=timeout_s, caller=self.module.name
        )

    def message(self, msg: list[Any]) -> Any:
        """A one-way message from the child: ``ready``, ``failed`` or ``emit``."""
        kind = msg[0]
        if kind == "ready" and not self.ready.done():
            self.ready.set_result(None)
        elif kind == "failed" and not self.ready.done():
            self.ready.set_exception(LifecycleError(str(msg[1])))
        elif kind == "emit":
            return self.emit(msg[1], msg[2], msg[3])
        return None

    async def emit(self, topic: str, payload: Any, key: str | None) -> None:
        """An event the isolated module emits, in its name (one-way: a refusal is logged)."""
        try:
            await self.module.kernel.emit(topic, payload, module=self.module.name, key=key)
        except OrganelleError as exc:
            log.warning("isolated module %r: emit of %r refused: %s", self.module.name, topic, exc)

    async def watch(self) -> None:
        """Return when stopped on purpose; raise when the child dies (the kernel restarts it)."""
        await self.peer.closed.wait()  # the end of the stream is the first sign of death
        if self.stopping:
            return
        try:
            async with asyncio.timeout(_STOP_WAIT_S):
                code = await self.process.wait()
        except TimeoutError:  # alive but deaf: no use to anyone
            self.process.kill()
            code = await self.process.wait()
        await self.peer.aclose()
        raise ChildProcessError(f"isolated process of {self.module.name!r} {_describe_exit(code)}")

    async def stop(self) -> None:
        """Ask the child to stop its kernel; kill it if it does not within a few seconds."""
        self.stopping = True
        process = self.process
        if process.returncode is None:
            with contextlib.suppress(Exception):
                self.peer.send(["stop"])
            try:
                async with asyncio.timeout(_STOP_WAIT_S):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        await self.peer.aclose()


def _section(module: Module, launch: _Launch) -> dict[str, Any]:
    """The module's config as it is now (a reload may have changed it), for the child.

    Dumped in Python mode, so secrets travel as their values (the wire
    encoder unwraps them) over the private channel, and the child validates
    the same values again.
    """
    dump = getattr(module.config, "model_dump", None)
    if dump is None:
        return launch.section
    section: dict[str, Any] = dump(by_alias=True, exclude_unset=True)
    return section


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "is still running"
    if code < 0:
        try:
            return f"died of {signal.Signals(-code).name}"
        except ValueError:
            return f"died of signal {-code}"
    if code == _EXIT_OOM:
        return "ran out of memory"
    return f"exited with code {code}"
