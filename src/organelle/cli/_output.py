"""What the command prints: status lines and errors on stderr, reports on stdout.

Errors are one line, ``error: <what went wrong>``, and pick the exit code: a
person fixing a config wants the key and the reason, not a traceback.
"""

from __future__ import annotations

import traceback

from rich.console import Console
from rich.text import Text

from organelle.errors import ConfigError, OrganelleError

__all__ = [
    "EXIT_FAILED",
    "EXIT_FORCED",
    "EXIT_INVALID",
    "EXIT_OK",
    "out",
    "plural",
    "report",
    "status",
]

EXIT_OK = 0
EXIT_FAILED = 1
"""The app was built but failed to start or to run."""
EXIT_INVALID = 2
"""The app could not be built: config, definitions, dependency graph, imports."""
EXIT_FORCED = 130
"""A second signal cut a graceful shutdown short (128 + SIGINT, as shells report it)."""

# soft_wrap: a long error stays one line even on an 80-column pipe. Text objects
# (never markup strings) so a message holding "[kernel]" prints as written.
out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)


def status(message: str) -> None:
    """Print an ``organelle: …`` progress line on stderr, beside the logs."""
    err.print(Text(f"organelle: {message}"))


def plural(count: int, noun: str) -> str:
    """``1 module``, ``2 modules``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def one_line(text: str) -> str:
    """Join a multi-line message so each error is exactly one line."""
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())


def describe(exc: BaseException) -> str:
    """The message for ``exc``: organelle errors speak for themselves, others get their type."""
    if isinstance(exc, OrganelleError):
        return one_line(str(exc)) or exc.code
    text = one_line(str(exc))
    name = type(exc).__name__
    return f"{name}: {text} (run with --traceback to see where)" if text else name


def exit_code(exc: BaseException, *, building: bool) -> int:
    """2 when the app could not be built (any ``ConfigError``), else 1."""
    if isinstance(exc, ConfigError):
        return EXIT_INVALID
    if isinstance(exc, OrganelleError):
        return EXIT_FAILED
    return EXIT_INVALID if building else EXIT_FAILED


def report(exc: BaseException, *, building: bool, show_traceback: bool = False) -> int:
    """Print ``exc`` as one ``error:`` line on stderr and return the exit code."""
    if show_traceback:
        err.print(Text("".join(traceback.format_exception(exc)).rstrip()))
    err.print(Text(f"error: {describe(exc)}"))
    return exit_code(exc, building=building)
