"""``organelle config cluster show|set|history --app APP.toml``: the cluster config layer.

Reads ``[kernel] storage`` from the app's config (nothing starts) and works on
the layer in that store. ``set`` is a proposal like ``kernel.cluster_config.propose``:
every live node (``[kernel] cluster_config = true``) validates it, then all
apply it or all return to the previous layer; the outcome is printed per node
and the exit code says which (0 committed, 1 aborted or rolled back, 2 bad
input or a concurrent change). References and secrets are masked.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.text import Text

from organelle.cli._options import Sets
from organelle.cli._output import EXIT_FAILED, EXIT_INVALID, out, report
from organelle.cli._target import load_app
from organelle.errors import ConfigChangeError, ConfigError, ConflictError

if TYPE_CHECKING:
    from organelle.cluster_config import ChangeReport, ClusterConfig

__all__ = ["cluster_config"]

T = TypeVar("T")

cluster_config = typer.Typer(
    name="cluster",
    help="Show and change the cluster-wide config layer in the app's store.",
    no_args_is_help=True,
)

AppOption = Annotated[
    str,
    typer.Option(
        "--app",
        metavar="APP",
        help="The app config file (app.toml) or 'package.module:attr'.",
        show_default=False,
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _fail(ctx: typer.Context, exc: BaseException) -> NoReturn:
    code = report(exc, building=True, show_traceback=bool(getattr(ctx.obj, "traceback", False)))
    if isinstance(exc, ConfigChangeError):
        raise typer.Exit(EXIT_FAILED) from None
    raise typer.Exit(EXIT_INVALID if isinstance(exc, (ConfigError, ConflictError)) else code)


def _value(raw: str) -> Any:
    """JSON when it parses (``true``, ``3``, ``"x"``), else the plain string."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _run(
    ctx: typer.Context,
    app: str,
    sets: list[str] | None,
    work: Callable[[ClusterConfig], Awaitable[T]],
) -> T:
    try:
        kernel = load_app(app, sets=sets or [], only=[]).kernel

        async def go() -> T:
            try:
                return await work(kernel.cluster_config)
            finally:
                await kernel.store.close()

        return asyncio.run(go())
    except Exception as exc:
        _fail(ctx, exc)


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) if at else "never"


def _print_change(change: ChangeReport) -> None:
    colour = "green" if change.ok else "red"
    out.print(Text(f"{change.id}  {change.outcome}  by {change.by}  at {_when(change.at)}", colour))
    out.print(Text(f"    patch {json.dumps(change.patch, sort_keys=True)}"))
    for node in change.nodes:
        line = f"    {node.node}: {node.state}"
        if node.code:
            line += f" [{node.code}] {node.message}"
        out.print(Text(line))


@cluster_config.command("show")
def show(ctx: typer.Context, app: AppOption, as_json: Json = False, set_: Sets = None) -> None:
    """The layer in effect, its revision, and the live nodes with the revision each runs."""
    info = _run(ctx, app, set_, lambda admin: admin.get())
    data = info.to_data()
    if as_json:
        out.print(Text(json.dumps(data, indent=2, sort_keys=True)))
        return
    out.print(Text(f"revision {info.revision}  by {info.by or '-'}  at {_when(info.at)}"))
    out.print(Text(json.dumps(data["layer"], indent=2, sort_keys=True)))
    for node in info.nodes:
        out.print(Text(f"node {node.node}: revision {node.revision}"))
    if not info.nodes:
        out.print(Text("no live node takes part ([kernel] cluster_config = true)"))


@cluster_config.command("set")
def set_values(  # noqa: PLR0917 - typer passes options as arguments
    ctx: typer.Context,
    app: AppOption,
    assignments: Annotated[
        list[str] | None,
        typer.Argument(metavar="KEY=VALUE...", help="e.g. modules.shop.limit=5 (VALUE: JSON)."),
    ] = None,
    unset: Annotated[
        list[str] | None, typer.Option("--unset", metavar="KEY", help="Remove KEY from the layer.")
    ] = None,
    revision: Annotated[
        int | None, typer.Option("--revision", help="Change only if the layer is at it.")
    ] = None,
    timeout_s: Annotated[float, typer.Option("--timeout", help="Seconds per phase.")] = 5.0,
    by: Annotated[
        str | None, typer.Option("--by", help="Who makes it (default: cli:USER@HOST).")
    ] = None,
    as_json: Json = False,
    set_: Sets = None,
) -> None:
    """Propose a change: every live node validates it, then all apply it or none keeps it."""
    try:
        patch = _patch(assignments or [], unset or [])
    except ConfigError as exc:
        _fail(ctx, exc)
    who = by or f"cli:{getpass.getuser()}@{socket.gethostname()}"

    async def propose(admin: ClusterConfig) -> ChangeReport:
        return await admin.propose(
            patch, by=who, revision=revision, timeout_s=timeout_s, check=False
        )

    change = _run(ctx, app, set_, propose)
    if as_json:
        out.print(Text(json.dumps(change.to_data(), indent=2, sort_keys=True)))
    else:
        _print_change(change)
    if not change.ok:
        raise typer.Exit(EXIT_FAILED)


def _patch(assignments: list[str], unset: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` items and ``--unset KEY`` as one nested patch (``None`` removes)."""
    from organelle.cluster_config import parse_assignments
    from organelle.config.loader import merge

    patch = parse_assignments(assignments, _value)
    for key in unset:
        patch = merge(patch, parse_assignments([f"{key}=null"], _value))
    if not patch:
        raise ConfigError("nothing to change: give KEY=VALUE or --unset KEY")
    return patch


@cluster_config.command("history")
def history(
    ctx: typer.Context,
    app: AppOption,
    limit: Annotated[int, typer.Option("--limit", help="How many changes, newest last.")] = 20,
    as_json: Json = False,
    set_: Sets = None,
) -> None:
    """The last changes with their outcome on each node."""
    changes = _run(ctx, app, set_, lambda admin: admin.history(limit))
    if as_json:
        out.print(Text(json.dumps([c.to_data() for c in changes], indent=2, sort_keys=True)))
        return
    if not changes:
        out.print(Text("no cluster config change yet"))
    for change in changes:
        _print_change(change)
