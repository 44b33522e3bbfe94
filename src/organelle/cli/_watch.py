"""``organelle run --reload``: run the app in a child process, restart it when code changes.

watchfiles does the work (``run_process``): it watches the folders, stops the
child with SIGINT — the graceful stop of ``organelle run`` — and starts a new
one; SIGTERM or Ctrl+C to this process stops the child and exits. What is
watched: the config file's folder and its ``[kernel] pythonpath`` folders (or
the working directory for a ``package.module:attr`` target) and any
``--reload-dir``; what counts as a change: ``.py``, ``.toml``, ``.yaml`` and
``.yml`` files outside ``.git``, ``__pycache__``, virtualenvs and the like.
A child that fails (a syntax error) is restarted at the next change.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from organelle.cli._output import status
from organelle.cli._target import is_config_file
from organelle.config import load_file
from organelle.errors import ConfigError

if TYPE_CHECKING:
    from watchfiles import Change

__all__ = ["run_with_reload", "watched_dirs"]

_EXTENSIONS = (".toml", ".yaml", ".yml")


def watched_dirs(target: str, extra: Iterable[Path] = ()) -> list[Path]:
    """The folders whose changes restart the app: none inside another."""
    roots: list[Path] = []
    if is_config_file(target):
        config = Path(target).resolve()
        roots.append(config.parent)
        try:
            kernel = load_file(config).get("kernel") or {}
        except ConfigError:
            kernel = {}  # the child reports it; watching the folder lets a fix restart it
        pythonpath = kernel.get("pythonpath") if isinstance(kernel, dict) else None
        folders = pythonpath if isinstance(pythonpath, list) else []
        roots += [(config.parent / f).resolve() for f in folders if isinstance(f, str)]
    else:
        roots.append(Path.cwd())
    roots += [p.resolve() for p in extra]
    unique = sorted(set(roots), key=lambda p: (len(p.parts), str(p)))
    kept: list[Path] = []
    for root in unique:
        if root.is_dir() and not any(root.is_relative_to(k) for k in kept):
            kept.append(root)
    return kept


def run_with_reload(
    target: str,
    run_args: list[str],
    *,
    root_args: list[str] | None = None,
    extra_dirs: Iterable[Path] = (),
    debounce_ms: int = 800,
) -> int:
    """Run ``organelle ROOT_ARGS run TARGET RUN_ARGS``; restart it on changes until interrupted.

    Returns 0 once stopped (SIGINT or SIGTERM).

    Raises:
        ConfigError: watchfiles is not installed (the ``ops`` extra).
    """
    try:
        from watchfiles import PythonFilter, run_process
    except ImportError as exc:
        raise ConfigError(
            "organelle run --reload needs watchfiles: pip install 'organelle[ops]'"
        ) from exc
    dirs = watched_dirs(target, extra_dirs)
    argv = [sys.executable, "-m", "organelle", *(root_args or []), "run", target, *run_args]
    command = shlex.join(argv)
    status(f"reload: watching {', '.join(str(d) for d in dirs)}")

    def changed(changes: set[tuple[Change, str]]) -> None:
        names = sorted({Path(path).name for _, path in changes})
        status(f"reload: {', '.join(names)} changed; restarting")

    run_process(
        *dirs,
        target=command,
        target_type="command",
        callback=changed,
        watch_filter=PythonFilter(extra_extensions=_EXTENSIONS),
        debounce=debounce_ms,
        sigint_timeout=10,
    )
    status("reload: stopped")
    return 0
