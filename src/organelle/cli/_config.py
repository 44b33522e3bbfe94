"""``organelle config show TARGET``: the effective config, every secret masked.

The app is built as ``check`` builds it — file, ``ORGANELLE__…`` variables,
``--set``, ``secret://`` references resolved — and nothing starts. What is
printed may be pasted into a ticket: secrets marked by a model
(``SecretStr``), credential-like keys, URL passwords and every value read
through a ``secret://`` reference are masked.
"""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer

from organelle.cli._options import Only, Sets, Target
from organelle.cli._output import EXIT_INVALID, report
from organelle.cli._target import load_app

__all__ = ["config"]

config = typer.Typer(
    name="config",
    help="Show an app's effective config (secrets masked); show, reload or diff a running one.",
    no_args_is_help=True,
)


def _fail(ctx: typer.Context, exc: BaseException) -> NoReturn:
    report(exc, building=True, show_traceback=bool(getattr(ctx.obj, "traceback", False)))
    raise typer.Exit(EXIT_INVALID) from None


def effective(kernel: Any) -> dict[str, Any]:
    """``[kernel]`` and module sections as parsed, the other sections as written; all masked."""
    from organelle.ops.manage import effective_config

    return effective_config(kernel)


@config.command("show")
def show(ctx: typer.Context, target: Target, set_: Sets = None, only: Only = None) -> None:
    """Print the effective config as JSON, every secret masked; nothing starts.

    Exit codes: 0 printed, 2 the app cannot be built (an invalid config, a
    secret reference that does not resolve).
    """
    try:
        loaded = load_app(target, sets=set_ or [], only=only or [])
        text = json.dumps(effective(loaded.kernel), indent=2, sort_keys=True, default=str)
    except Exception as exc:
        _fail(ctx, exc)
    sys.stdout.write(text + "\n")
