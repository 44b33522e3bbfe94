"""Running an app until a signal: logging, the event loop, graceful and forced shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from organelle.cli._output import EXIT_FORCED, EXIT_OK, plural, status
from organelle.cli._target import App, is_config_file
from organelle.errors import ConfigError
from organelle.kernel import Kernel

if TYPE_CHECKING:
    from organelle.ops import Ops

__all__ = ["configure_logging", "log_level", "serve"]

_MODULE_LOGGER = "organelle.module."
_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_RELOAD_SIGNAL: signal.Signals | None = getattr(signal, "SIGHUP", None)


def log_level(kernel: Kernel) -> int:
    """The numeric level of ``[kernel] log_level``.

    Raises:
        ConfigError: not a level name (checked before anything starts).
    """
    name = kernel.settings.log_level.upper()
    level = logging.getLevelNamesMapping().get(name)
    if level is None:
        raise ConfigError(
            f"kernel.log_level: unknown level {kernel.settings.log_level!r}; "
            "use DEBUG, INFO, WARNING, ERROR or CRITICAL"
        )
    return level


class _ShortNames(logging.Filter):
    """Show ``demo`` rather than ``organelle.module.demo``: the module is what readers look for."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.source = record.name.removeprefix(_MODULE_LOGGER)
        return True


def configure_logging(level: int) -> None:
    """One readable line per record on stderr, for every logger (user modules too)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ShortNames())
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(source)s: %(message)s", "%H:%M:%S")
    )
    logging.basicConfig(level=level, handlers=[handler], force=True)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def serve(app: App) -> int:
    """Start the app, serve until SIGINT or SIGTERM, stop it gracefully; return the exit code.

    Raises:
        OrganelleError: the app did not start (what had started was stopped).
    """
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(_serve(app))


async def _serve(app: App) -> int:
    kernel = app.kernel
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        if len(received) == 1:
            stop.set()
        elif main is not None:  # a second signal: the person really wants out
            main.cancel()

    for sig in _SIGNALS:
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except NotImplementedError:  # pragma: no cover - Windows has no loop signal handlers
            signal.signal(
                sig, lambda s, _f: loop.call_soon_threadsafe(on_signal, signal.Signals(s))
            )
    ops = _operations(app)
    try:
        await app.select()
        await _start_ops(ops, loop)  # before start: probes say "starting", startup is measured
        if "gc_freeze" not in (kernel.config.get("kernel") or {}):
            # A default of the served app, not a change: a config reload or diff, which
            # re-reads the file, must not see gc_freeze flip back (it needs a restart).
            kernel.config_defaults.setdefault("kernel", {})["gc_freeze"] = True
            kernel.config.setdefault("kernel", {})["gc_freeze"] = True
            kernel.settings = msgspec.structs.replace(kernel.settings, gc_freeze=True)
        await kernel.start()
        names = [n for level in kernel.check() for n in level]
        _announce(kernel, ops, names)
        await stop.wait()
        status(f"stopping ({received[0]})")
        began = time.monotonic()
        await kernel.stop()
        status(f"stopped in {time.monotonic() - began:.2f}s")
    except asyncio.CancelledError:
        if len(received) < 2:  # noqa: PLR2004 - only our own second-signal cancel is handled
            raise
        status(f"forced exit on a second {received[-1]}; some modules may not have stopped")
        return EXIT_FORCED
    finally:
        for sig in _SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        await _stop_ops(ops, loop)  # after stop: probes said "draining" meanwhile
    return EXIT_OK


def _announce(kernel: Kernel, ops: Ops | None, names: list[str]) -> None:
    for line in banner(kernel, ops):
        status(line)
    status(f"{plural(len(names), 'module')} active ({', '.join(names)}); press Ctrl+C to stop")


def banner(kernel: Kernel, ops: Ops | None) -> list[str]:
    """Where the running app answers: the gateway, its docs and dashboard, the ops server."""
    lines = []
    for info in kernel.modules().values():
        gateway: Any = info.instance
        port = getattr(gateway, "port", 0) if info.name == "gateway" else 0
        if not port:
            continue
        url = f"http://{_host(gateway.config.host)}:{port}"
        lines.append(f"gateway  {url}  (API docs {url}/docs, schema {url}/openapi.json)")
        dashboard = gateway.config.dashboard
        if dashboard.enabled:
            lines.append(f"dashboard {url}{dashboard.path}")
    if ops is not None and ops.port is not None:
        host = _host(kernel.settings.ops_host)
        lines.append(f"ops      http://{host}:{ops.port}  (/health/live, /health/ready, /metrics)")
    return lines


def _host(host: str) -> str:
    """A host a browser can open: the wildcard addresses mean this machine."""
    if host in ("0.0.0.0", "", "::"):  # noqa: S104 - naming it, not binding it
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


async def _start_ops(ops: Ops | None, loop: asyncio.AbstractEventLoop) -> None:
    if ops is None:
        return
    if _RELOAD_SIGNAL is not None:  # SIGHUP reloads the config, as for nginx
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(_RELOAD_SIGNAL, ops.request_reload)
    await ops.start()


async def _stop_ops(ops: Ops | None, loop: asyncio.AbstractEventLoop) -> None:
    if ops is None:
        return
    if _RELOAD_SIGNAL is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(_RELOAD_SIGNAL)
    await ops.stop()


def _operations(app: App) -> Ops | None:
    """Structured logs, metrics, tracing, probes and reload for ``organelle run``.

    ``None`` (plain logging, no ops) when the ops libraries are not installed.
    """
    try:
        from organelle.observability.logging import configure_logging as structured
        from organelle.ops import Ops
    except ImportError as exc:  # pragma: no cover - the ops dependencies are missing
        logging.getLogger("organelle.ops").warning("operations are off: %s", exc)
        return None
    structured(app.kernel.settings)
    path = app.label if is_config_file(app.label) else None
    try:
        return Ops(app.kernel, config_path=path)
    except ImportError as exc:  # pragma: no cover
        logging.getLogger("organelle.ops").warning("operations are off: %s", exc)
        return None
