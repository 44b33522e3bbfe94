"""``organelle flags list|set|rule|reset --app APP.toml``: the app's feature flags in its store.

Builds the app (nothing starts) to learn each module's ``Flags`` model, then
reads or writes the cluster store ``[kernel] storage`` names. Running nodes
pick a change up within a second and announce it as ``kernel.flags.changed``;
the change is attributed to ``cli:<user>@<host>`` unless ``--by`` names someone.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.text import Text

from organelle.cli._options import Sets
from organelle.cli._output import EXIT_INVALID, out, report
from organelle.cli._target import load_app
from organelle.errors import ConfigError, FlagNotFoundError, FlagRuleError

if TYPE_CHECKING:
    from organelle.flags import FlagAdmin, FlagInfo

__all__ = ["flags"]

T = TypeVar("T")

flags = typer.Typer(
    name="flags",
    help="List and change the feature flags of an app, in its cluster store.",
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
FlagArg = Annotated[str, typer.Argument(metavar="MODULE.FLAG", show_default=False)]
By = Annotated[
    str | None,
    typer.Option("--by", help="Who the change is attributed to (default: cli:USER@HOST)."),
]


def _fail(ctx: typer.Context, exc: BaseException) -> NoReturn:
    bad_input = isinstance(exc, (ConfigError, FlagNotFoundError, FlagRuleError))
    code = report(exc, building=True, show_traceback=bool(getattr(ctx.obj, "traceback", False)))
    raise typer.Exit(EXIT_INVALID if bad_input else code) from None


def _who(by: str | None) -> str:
    return by or f"cli:{getpass.getuser()}@{socket.gethostname()}"


def _value(raw: str) -> Any:
    """JSON when it parses (``true``, ``3``, ``"x"``), else the plain string."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _run(
    ctx: typer.Context, app: str, sets: list[str] | None, work: Callable[[FlagAdmin], Awaitable[T]]
) -> T:
    try:
        kernel = load_app(app, sets=sets or [], only=[]).kernel

        async def go() -> T:
            try:
                return await work(kernel.flags)
            finally:
                await kernel.store.close()

        return asyncio.run(go())
    except Exception as exc:
        _fail(ctx, exc)


def _show(info: FlagInfo) -> str:
    from organelle.flags import UNSET

    value = "default" if info.value is UNSET else f"set {json.dumps(info.value)}"
    text = f"{info.module}.{info.name}  {info.type}  = {json.dumps(info.effective)} ({value})"
    for rule in info.rules:
        text += f"\n    rule {json.dumps(rule)}"
    if info.by:
        text += f"\n    changed by {info.by}"
    return text


@flags.command("list")
def list_(
    ctx: typer.Context,
    app: AppOption,
    module: Annotated[str | None, typer.Option("--module", help="Only this module.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    set_: Sets = None,
) -> None:
    """Every flag with its type, what it reads as, and its stored value and rules."""
    found = _run(ctx, app, set_, lambda admin: admin.list(module))
    if as_json:
        out.print(Text(json.dumps([f.to_data() for f in found], indent=2)))
        return
    if not found:
        out.print(Text("no module of this app declares Flags"))
    for info in found:
        out.print(Text(_show(info)))


@flags.command("set")
def set_value(  # noqa: PLR0917 - typer passes options as arguments
    ctx: typer.Context,
    target: FlagArg,
    value: Annotated[str, typer.Argument(metavar="VALUE", help="JSON, or a plain string.")],
    app: AppOption,
    by: By = None,
    set_: Sets = None,
) -> None:
    """Serve VALUE to everyone the flag's rules do not match."""
    _run(ctx, app, set_, lambda admin: admin.set(target, _value(value), by=_who(by)))
    out.print(Text(f"{target} = {value}", "green"))


@flags.command("rule")
def rule(  # noqa: PLR0917 - typer: one option per condition of a rule
    ctx: typer.Context,
    target: FlagArg,
    app: AppOption,
    value: Annotated[
        str | None, typer.Option("--value", help="What the rule serves (default: true).")
    ] = None,
    ids: Annotated[
        list[str] | None, typer.Option("--id", help="A principal id (repeatable).")
    ] = None,
    roles: Annotated[list[str] | None, typer.Option("--role", help="A role (repeatable).")] = None,
    attrs: Annotated[
        list[str] | None,
        typer.Option("--attr", metavar="CLAIM=VALUE", help="A claim value (repeatable)."),
    ] = None,
    percent: Annotated[
        float | None, typer.Option("--percent", help="Keep this share (0-100), by a stable hash.")
    ] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace the flag's rules.")] = False,
    clear: Annotated[bool, typer.Option("--clear", help="Remove every rule of the flag.")] = False,
    by: By = None,
    set_: Sets = None,
) -> None:
    """Add a rule to a flag (matched in order; the first match gives the value)."""
    raw: dict[str, Any] = {"value": True if value is None else _value(value)}
    if ids:
        raw["ids"] = ids
    if roles:
        raw["roles"] = roles
    attributes: dict[str, list[Any]] = {}
    for item in attrs or []:
        name, sep, got = item.partition("=")
        if not sep or not name:
            _fail(ctx, ConfigError(f"--attr {item!r}: expected CLAIM=VALUE"))
        attributes.setdefault(name, []).append(_value(got))
    if attributes:
        raw["attributes"] = attributes
    if percent is not None:
        raw["percent"] = percent
    rules = [] if clear else [raw]
    _run(
        ctx,
        app,
        set_,
        lambda admin: admin.rule(target, rules, replace=replace or clear, by=_who(by)),
    )
    out.print(
        Text(f"{target}: rules cleared" if clear else f"{target}: rule {json.dumps(raw)}", "green")
    )


@flags.command("reset")
def reset(
    ctx: typer.Context, target: FlagArg, app: AppOption, by: By = None, set_: Sets = None
) -> None:
    """Drop the flag's stored value and rules: it reads as its default again."""
    _run(ctx, app, set_, lambda admin: admin.reset(target, by=_who(by)))
    out.print(Text(f"{target}: back to its default", "green"))
