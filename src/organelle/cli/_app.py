"""The typer app: ``organelle run``, ``check`` and the command groups.

Groups: ``nodes``, ``contract``, ``asyncapi``, ``flags``, ``config``, ``deploy``, ``plugins``.

``run``, ``check`` and ``--version`` live here; the other commands in files of their own.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.text import Text

from organelle._version import __version__
from organelle.cli._asyncapi import asyncapi
from organelle.cli._call import call, config_diff, config_live, config_reload, emit, openapi
from organelle.cli._check import handlers
from organelle.cli._cluster_config import cluster_config
from organelle.cli._config import config
from organelle.cli._contract import contract
from organelle.cli._deploy import deploy
from organelle.cli._flags import flags
from organelle.cli._manage import health, jobs, kv, modules, streams
from organelle.cli._new import new
from organelle.cli._nodes import nodes
from organelle.cli._options import Only, Reload, ReloadDirs, Sets, Target
from organelle.cli._output import EXIT_OK, out, plural, report
from organelle.cli._plugins import plugins
from organelle.cli._serve import configure_logging, log_level, serve
from organelle.cli._shell import shell
from organelle.cli._target import App, load_app
from organelle.kernel import Kernel

__all__ = ["app", "main"]

app = typer.Typer(
    name="organelle",
    help="Run and check organelle apps.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@dataclass(slots=True)
class _Options:
    traceback: bool = False


def _print_version(value: bool) -> None:
    if value:
        out.print(Text(f"organelle {__version__}"))
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[  # noqa: ARG001 - handled eagerly by its callback
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Show the version."),
    ] = False,
    traceback: Annotated[
        bool, typer.Option("--traceback", help="Show the full traceback of an error.")
    ] = False,
) -> None:
    ctx.obj = _Options(traceback=traceback)


def _fail(ctx: typer.Context, exc: BaseException, *, building: bool) -> NoReturn:
    options = ctx.obj if isinstance(ctx.obj, _Options) else _Options()
    raise typer.Exit(report(exc, building=building, show_traceback=options.traceback)) from None


def _build(ctx: typer.Context, target: str, sets: list[str] | None, only: list[str] | None) -> App:
    try:
        return load_app(target, sets=sets or [], only=only or [])
    except Exception as exc:
        _fail(ctx, exc, building=True)


@app.command()
def run(
    ctx: typer.Context,
    target: Target,
    *,
    set_: Sets = None,
    only: Only = None,
    reload: Reload = False,
    reload_dir: ReloadDirs = None,
) -> None:
    """Start an app and serve until SIGINT or SIGTERM, then stop it gracefully.

    Exit codes: 0 after a graceful stop, 1 when the app fails to start or run,
    2 when it cannot be built (config, definitions, dependencies, imports),
    130 when a second signal cuts the shutdown short.
    """
    if reload:
        _run_with_reload(ctx, target, set_, only, reload_dir)
    loaded = _build(ctx, target, set_, only)
    try:
        if not loaded.drop:
            loaded.kernel.check()
        level = log_level(loaded.kernel)
    except Exception as exc:
        _fail(ctx, exc, building=True)
    configure_logging(level)
    try:
        code = serve(loaded)
    except Exception as exc:
        _fail(ctx, exc, building=False)
    raise typer.Exit(code)


def _run_with_reload(
    ctx: typer.Context,
    target: str,
    sets: list[str] | None,
    only: list[str] | None,
    dirs: list[Path] | None,
) -> NoReturn:
    from organelle.cli._watch import run_with_reload

    options = ctx.obj if isinstance(ctx.obj, _Options) else _Options()
    args = [a for s in sets or [] for a in ("--set", s)]
    args += [a for o in only or [] for a in ("--only", o)]
    try:
        code = run_with_reload(
            target,
            args,
            root_args=["--traceback"] if options.traceback else [],
            extra_dirs=dirs or [],
        )
    except Exception as exc:
        _fail(ctx, exc, building=True)
    raise typer.Exit(code)


@app.command()
def check(ctx: typer.Context, target: Target, set_: Sets = None, only: Only = None) -> None:
    """Validate the config and the dependency graph without starting anything.

    Prints the start order (modules of one level start together) and every
    module with its version. Exit code 0 when the app would start, 2 otherwise.
    """
    loaded = _build(ctx, target, set_, only)
    try:
        if loaded.drop:
            asyncio.run(loaded.select())
        levels = loaded.kernel.check()
        log_level(loaded.kernel)
        _check_ops(loaded.kernel)
    except Exception as exc:
        _fail(ctx, exc, building=True)
    _print_report(loaded.label, loaded.kernel, levels)


def _check_ops(kernel: Kernel) -> None:
    """``[ops]`` (the management API's roles and credentials) is validated like the rest."""
    if "ops" in kernel.config:
        from organelle.auth.factory import principal_factory
        from organelle.ops._manage_http import OpsSection

        principal_factory(OpsSection.of(kernel.config).auth)


def _print_report(label: str, kernel: Kernel, levels: list[list[str]]) -> None:
    modules = kernel.modules()
    order = [n for level in levels for n in level]
    width = max((len(n) for n in order), default=0)
    out.print(Text(f"app: {label}"))
    out.print(Text(f"start order ({plural(len(levels), 'level')}; a level starts together):"))
    for i, level in enumerate(levels, 1):
        out.print(Text(f"  {i}. {', '.join(level)}"))
    out.print(Text(f"modules ({len(modules)}):"))
    for name in order:
        info = modules[name]
        line = Text(f"  {name:<{width}}  ", style="bold").append(f"{info.version:<8}", style="")
        for label_, items in (
            ("requires", info.requires),
            ("rpc", info.rpc_methods),
            ("events", info.subscriptions),
        ):
            if items:
                line.append(f"  {label_}: {', '.join(items)}", style="")
        out.print(line)
        for detail in handlers(info.instance):
            out.print(Text(f"    {detail}"))
    summary = f"ok: {plural(len(modules), 'module')} would start in {plural(len(levels), 'level')}"
    out.print(Text(summary, "green"))


app.command(name="nodes")(nodes)
# the management commands (docs/cli.md): a running app, through its cluster or its files
app.command(name="call")(call)
app.command(name="emit")(emit)
app.command(name="modules")(modules)
app.command(name="jobs")(jobs)
app.command(name="streams")(streams)
app.command(name="kv")(kv)
app.command(name="health")(health)
app.command(name="openapi")(openapi)
config.command("live")(config_live)
config.command("reload")(config_reload)
config.command("diff")(config_diff)
app.command(name="asyncapi")(asyncapi)
app.command(name="shell")(shell)
app.command(name="plugins")(plugins)
app.add_typer(contract, name="contract")
app.add_typer(flags, name="flags")
app.add_typer(config, name="config")
config.add_typer(cluster_config, name="cluster")
app.add_typer(deploy, name="deploy")
app.add_typer(new, name="new")


def main() -> None:
    """Entry point of the ``organelle`` script."""
    app(prog_name="organelle")
