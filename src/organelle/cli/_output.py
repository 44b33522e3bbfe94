"""What the command prints: status lines and errors on stderr, reports on stdout.

Errors are one line, ``error: <what went wrong>``, and pick the exit code: a
person fixing a config wants the key and the reason, not a traceback.
"""

from __future__ import annotations

import sysconfig
import traceback
from pathlib import Path

from rich.console import Console
from rich.text import Text

from organelle._extras import install_hint
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


_OWN = str(Path(__file__).resolve().parents[1])  # organelle's own package
_LIBS = tuple(
    {sysconfig.get_path("stdlib"), sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
)


def origin(exc: BaseException) -> str | None:
    """``file:line`` where the user's code raised what ended in ``exc``, if it did.

    The root cause of a chain (a hook's exception behind its LifecycleError, an
    import error behind a ConfigError), at its innermost frame outside organelle,
    the standard library and installed packages: the line a person edits.
    """
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    if isinstance(root, OrganelleError) and root is exc:
        return None
    if isinstance(root, SyntaxError) and root.filename:
        return f"{root.filename}:{root.lineno}"
    frames = traceback.extract_tb(root.__traceback__) if root.__traceback__ else []
    for frame in reversed(frames):
        path = str(Path(frame.filename).resolve())
        if not path.startswith(_OWN) and not path.startswith(_LIBS):
            return f"{frame.filename}:{frame.lineno}"
    return None


def describe(exc: BaseException) -> str:
    """The message for ``exc``: organelle errors speak for themselves, others get their type.

    Either way it says where the user's code raised (when it did) and the
    ``pip install`` that brings a missing extra.
    """
    if isinstance(exc, OrganelleError):
        text = one_line(str(exc)) or exc.code
    else:
        body = one_line(str(exc))
        text = f"{type(exc).__name__}: {body}" if body else type(exc).__name__
    hint = install_hint(exc)
    if hint and hint not in text:
        text += f"; {hint}"
    where = origin(exc)
    if where:
        text += f" (at {where}; run with --traceback for the full trace)"
    elif not isinstance(exc, OrganelleError):
        text += " (run with --traceback to see where)"
    return text


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
