"""``organelle contract export|check TARGET``: the app's public contract, and a diff against one.

The app is built as ``check`` builds it and only its module classes are read:
nothing starts and no hook runs, so both commands are safe in CI.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.text import Text

from organelle.cli._options import Only, Sets, Target
from organelle.cli._output import EXIT_FAILED, EXIT_INVALID, EXIT_OK, out, plural, report
from organelle.cli._target import load_app
from organelle.errors import ConfigError

if TYPE_CHECKING:
    from organelle.contracts import ContractChange
    from organelle.module import ModuleSpec

__all__ = ["contract"]

contract = typer.Typer(
    name="contract",
    help="Export an app's public contract, or check it for breaking changes against one.",
    no_args_is_help=True,
)

Output = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        metavar="FILE",
        help="Write the snapshot to FILE instead of stdout.",
        show_default=False,
    ),
]
Against = Annotated[
    Path,
    typer.Option(
        "--against",
        "-a",
        metavar="SNAPSHOT",
        help="The snapshot to compare with (written by 'organelle contract export').",
        show_default=False,
    ),
]


def _fail(ctx: typer.Context, exc: BaseException) -> NoReturn:
    # Whatever fails here is bad input (target, snapshot, file): always exit 2.
    report(exc, building=True, show_traceback=bool(getattr(ctx.obj, "traceback", False)))
    raise typer.Exit(EXIT_INVALID) from None


def _specs(target: str, sets: list[str] | None, only: list[str] | None) -> list[ModuleSpec]:
    return load_app(target, sets=sets or [], only=only or []).specs()


def _read(path: Path) -> dict[str, Any]:
    from organelle.contracts import loads

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read snapshot {path}: {exc.strerror or exc}") from None
    return loads(data, source=str(path))


@contract.command("export")
def export(
    ctx: typer.Context,
    target: Target,
    output: Output = None,
    set_: Sets = None,
    only: Only = None,
) -> None:
    """Write the app's contract snapshot as JSON (stdout, or --output FILE).

    The snapshot lists every module's version, RPC methods (parameters and
    result with their JSON Schema), jobs, event subscriptions and stream
    consumers, and the app's event types (version, data schema, upcasters).
    Commit it; 'organelle contract check' compares against it.
    Exit codes: 0 written, 2 the app cannot be built or the file not written.
    """
    from organelle.contracts import dumps, snapshot

    try:
        specs = _specs(target, set_, only)
        text = dumps(snapshot(specs))
        if output is not None:
            try:
                output.write_text(text, encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"cannot write {output}: {exc.strerror or exc}") from None
    except Exception as exc:
        _fail(ctx, exc)
    if output is None:
        sys.stdout.write(text)
    else:
        out.print(Text(f"wrote the contract of {plural(len(specs), 'module')} to {output}"))


@contract.command("check")
def check(
    ctx: typer.Context,
    target: Target,
    against: Against,
    set_: Sets = None,
    only: Only = None,
) -> None:
    """Compare the app's contract with a snapshot and list what changed.

    Breaking: a module, RPC method, job, subscription or consumer removed; a
    parameter removed or newly required; a parameter or payload type that
    accepts less, or a result type that may return more; breaking changes
    without a major version bump; an event type whose data accepts less at
    the same version, or whose new version has no upcaster from the old one.
    Everything else is compatible.
    Exit codes: 0 nothing breaking, 1 something breaking, 2 bad input.
    """
    from organelle.contracts import compare, snapshot

    try:
        old = _read(against)
        specs = _specs(target, set_, only)
        changes = compare(old, snapshot(specs))
    except Exception as exc:
        _fail(ctx, exc)
    _print_changes(target, against, len(specs), changes)
    raise typer.Exit(EXIT_FAILED if any(c.breaking for c in changes) else EXIT_OK)


def _print_changes(target: str, against: Path, modules: int, changes: list[ContractChange]) -> None:
    out.print(Text(f"contract of {target} ({plural(modules, 'module')}) against {against}"))
    width = max((len(c.where) for c in changes), default=0)
    for change in changes:
        line = Text("  ")
        line.append(f"{change.kind:<10}", style="bold red" if change.breaking else "green")
        line.append(f"  {change.where:<{width}}  {change.message}")
        out.print(line)
    breaking = sum(c.breaking for c in changes)
    compatible = len(changes) - breaking
    if breaking:
        summary = (
            f"{plural(breaking, 'breaking change')}, {plural(compatible, 'compatible change')}"
        )
        out.print(Text(f"not compatible: {summary}", "red"))
    elif compatible:
        out.print(Text(f"ok: {plural(compatible, 'compatible change')}, none breaking", "green"))
    else:
        out.print(Text("ok: no changes", "green"))
