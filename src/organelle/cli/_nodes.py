"""``organelle nodes [TARGET | --app APP]``: the cluster as its registry sees it, then exit.

Reads ``[kernel] transport`` (and its options) from the app's config,
connects, reads every live node's registry entry and prints one line per
node: name, host, pid, uptime, last heartbeat and the modules it serves
(``--json``: the entries as the registry holds them, for scripts). The app is
named like the management commands name it (``--app`` or ``ORGANELLE_APP``),
or by the TARGET argument ``run`` and ``check`` take.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from organelle.cli._act import print_json
from organelle.cli._options import Sets
from organelle.cli._output import EXIT_OK, out, plural, report
from organelle.cli._remote import AppOption
from organelle.cli._target import load_app
from organelle.errors import ConfigError

if TYPE_CHECKING:
    from organelle.transport._nats_options import NatsOptions
    from organelle.transport.registry import NodeInfo

__all__ = ["nodes"]

Json = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]


def _age(seconds: float) -> str:
    if seconds < 120:  # noqa: PLR2004 - seconds read best up to two minutes
        return f"{seconds:.1f}s"
    if seconds < 7200:  # noqa: PLR2004
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _which(ctx: typer.Context, target: str | None, app: str | None) -> str:
    """TARGET or ``--app``; TARGET wins over ``ORGANELLE_APP``, which is only a default.

    Raises:
        ConfigError: neither is given, or both on the command line.
    """
    if target is not None:
        # typer may carry its own copy of click: compare the source by name, not by enum
        source = ctx.get_parameter_source("app")
        if app is not None and getattr(source, "name", None) == "COMMANDLINE":
            raise ConfigError("give the app as TARGET or as --app APP, not both")
        return target
    if not app:
        raise ConfigError("which app? pass TARGET or --app APP.toml, or set ORGANELLE_APP")
    return app


def _read(target: str, sets: list[str]) -> tuple[NatsOptions, list[NodeInfo]]:
    from organelle.transport._nats_options import parse_options
    from organelle.transport.registry import read_cluster

    settings = load_app(target, sets=sets, only=[]).kernel.settings
    if not settings.transport.startswith(("nats:", "tls:")):
        raise ConfigError(
            f"kernel.transport is {settings.transport!r}: an in-process app has no cluster; "
            "set it to nats://host:port"
        )
    options = parse_options(settings)
    return options, asyncio.run(read_cluster(options))


def nodes(
    ctx: typer.Context,
    target: Annotated[
        str | None,
        typer.Argument(
            metavar="[TARGET]",
            help="An app config file or 'package.module:attr' (default: --app).",
            show_default=False,
        ),
    ] = None,
    app: AppOption = None,
    as_json: Json = False,
    set_: Sets = None,
) -> None:
    """List the nodes of the app's cluster with their modules, then exit.

    Exit codes: 0 listed (even when empty), 1 NATS unreachable, 2 no app named
    or the app is not configured for a cluster (its kernel.transport is
    ``memory://``).
    """
    try:
        options, found = _read(_which(ctx, target, app), set_ or [])
    except Exception as exc:
        traceback = bool(getattr(ctx.obj, "traceback", False))
        code = report(exc, building=isinstance(exc, ConfigError), show_traceback=traceback)
        raise typer.Exit(code) from None
    if as_json:
        import msgspec

        print_json(msgspec.to_builtins(found))
        raise typer.Exit(EXIT_OK)
    now = time.time()
    out.print(
        Text(
            f"cluster {', '.join(options.urls)} (prefix {options.prefix!r}): "
            f"{plural(len(found), 'node')}"
        )
    )
    if not found:
        raise typer.Exit(EXIT_OK)
    width = max(len(n.node) for n in found)
    host_width = max(len(n.host) for n in found)
    out.print(
        Text(
            f"  {'NODE':<{width}}  {'HOST':<{host_width}}  {'PID':>7}  {'UP':>6}  "
            f"{'BEAT':>6}  MODULES",
            style="bold",
        )
    )
    for node in found:
        modules = ", ".join(
            f"{name}@{entry.version} ({plural(len(entry.methods), 'method')})"
            for name, entry in sorted(node.modules.items())
        )
        out.print(
            Text(
                f"  {node.node:<{width}}  {node.host:<{host_width}}  {node.pid:>7}  "
                f"{_age(now - node.started):>6}  {_age(max(0.0, now - node.ts)):>6}  "
                f"{modules or '-'}"
            )
        )
    raise typer.Exit(EXIT_OK)
