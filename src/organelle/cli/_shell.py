"""``organelle shell --app APP.toml``: a REPL with the app's kernel started and bound as ``kernel``.

The kernel lives on an event loop in a background thread; the REPL reads in
the main thread (so line editing and Ctrl+C behave) and hands each statement
that uses ``await`` to that loop, waiting for its result. Compiled with
top-level ``await`` allowed, a statement such as
``await kernel.call("inventory.stock", sku="kiwi")`` just works — the idea of
``python -m asyncio``, with the loop owned by the kernel. IPython is used
when installed (its ``autoawait`` pointed at the same loop), unless ``--plain``.
"""

from __future__ import annotations

import ast
import asyncio
import code
import concurrent.futures
import inspect
import sys
import threading
from collections.abc import Coroutine
from types import CodeType
from typing import Annotated, Any

import typer

from organelle.cli._options import Only, Sets
from organelle.cli._output import EXIT_OK, report
from organelle.cli._serve import configure_logging, log_level
from organelle.cli._target import App, load_app
from organelle.kernel import Kernel

__all__ = ["AwaitingConsole", "KernelThread", "shell"]


class KernelThread:
    """An event loop in a daemon thread, running the app's kernel until ``close()``."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="organelle-shell")

    @property
    def kernel(self) -> Kernel:
        """The app's kernel (started once ``start()`` returned)."""
        return self.app.kernel

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coro`` on the kernel's loop and wait for it; Ctrl+C cancels it."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            raise
        except concurrent.futures.CancelledError:
            raise KeyboardInterrupt from None

    def start(self) -> None:
        """Start the loop thread and the kernel on it.

        Raises:
            OrganelleError: the kernel did not start (the loop is closed again).
        """
        self._thread.start()
        try:
            self.run(self._start())
        except BaseException:
            self._halt()
            raise

    async def _start(self) -> None:
        await self.app.select()
        await self.app.kernel.start()

    def close(self) -> None:
        """Stop the kernel, then the loop and its thread."""
        try:
            if self.app.kernel.running:
                self.run(self.app.kernel.stop())
        finally:
            self._halt()

    def _halt(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self.loop.is_running():
            self.loop.close()


class AwaitingConsole(code.InteractiveConsole):
    """``code.InteractiveConsole`` whose statements may ``await`` (run on the kernel's loop)."""

    def __init__(self, namespace: dict[str, Any], runner: KernelThread) -> None:
        super().__init__(namespace)
        self.compile.compiler.flags |= ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        self._runner = runner

    def runcode(self, code: CodeType) -> None:
        """Run one compiled statement; a coroutine (it awaited) runs on the kernel's loop."""
        try:
            result = eval(code, self.locals)  # noqa: S307 - a REPL runs what its user types
            if inspect.iscoroutine(result):
                self._runner.run(result)
        except SystemExit:
            raise
        except KeyboardInterrupt:
            self.write("KeyboardInterrupt\n")
        except BaseException:
            self.showtraceback()


def _banner(app: App) -> str:
    names = ", ".join(sorted(app.kernel.modules())) or "none"
    return (
        f"organelle shell: {app.label} ({names})\n"
        "`kernel` is started; `await` works here, e.g.\n"
        '    await kernel.call("<module>.<method>", name=value)\n'
        "exit() or Ctrl+D stops the kernel and leaves."
    )


def _ipython(namespace: dict[str, Any], runner: KernelThread, banner: str) -> bool:
    """Run IPython with ``await`` on the kernel's loop; False when IPython is not installed."""
    try:
        from IPython.terminal.ipapp import TerminalIPythonApp  # type: ignore[import-not-found, unused-ignore]
        from traitlets.config import Config  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return False
    config = Config()
    config.TerminalInteractiveShell.banner1 = banner + "\n"
    # Any: IPython's own hints are partial (untyped calls, an Optional shell).
    ipython: Any = TerminalIPythonApp.instance(config=config, user_ns=namespace)
    ipython.initialize(argv=[])
    # Set on the shell, not in the config: a config is deep-copied, the kernel cannot be.
    ipython.shell.autoawait = True
    ipython.shell.loop_runner = runner.run
    ipython.start()
    return True


def shell(
    app_: Annotated[
        str,
        typer.Option(
            "--app",
            envvar="ORGANELLE_APP",
            metavar="APP.toml",
            help="The app config (or 'package.module:attr'); ORGANELLE_APP sets a default.",
            show_default=False,
        ),
    ],
    set_: Sets = None,
    only: Only = None,
    plain: Annotated[
        bool, typer.Option("--plain", help="The standard REPL even when IPython is installed.")
    ] = False,
) -> None:
    """Start the app's kernel and open a REPL with it bound as `kernel` (`await` works)."""
    try:
        loaded = load_app(app_, sets=set_ or [], only=only or [])
        configure_logging(log_level(loaded.kernel))  # the modules' logs, as under `run`
    except Exception as exc:
        raise typer.Exit(report(exc, building=True, show_traceback=False)) from None
    runner = KernelThread(loaded)
    try:
        runner.start()
    except Exception as exc:
        raise typer.Exit(report(exc, building=False, show_traceback=False)) from None
    namespace: dict[str, Any] = {"kernel": loaded.kernel, "asyncio": asyncio}
    banner = _banner(loaded)
    try:
        if plain or not _ipython(namespace, runner, banner):
            console = AwaitingConsole(namespace, runner)
            try:
                console.interact(banner=banner, exitmsg="stopping the kernel")
            except SystemExit:
                sys.stderr.write("stopping the kernel\n")
    finally:
        runner.close()
    raise typer.Exit(EXIT_OK)
