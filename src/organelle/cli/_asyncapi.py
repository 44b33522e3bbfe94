"""``organelle asyncapi TARGET``: the app's AsyncAPI 3.0 document, as JSON or YAML.

The app is built as ``check`` builds it and only its module classes and its
``[kernel]`` settings are read: nothing starts and no hook runs.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer
from rich.text import Text

from organelle.cli._options import Only, Sets, Target
from organelle.cli._output import EXIT_INVALID, out, plural, report
from organelle.cli._target import is_config_file, load_app
from organelle.errors import ConfigError

__all__ = ["asyncapi"]


class Format(StrEnum):
    """How the document is written."""

    json = "json"
    yaml = "yaml"


Out = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "--output",
        "-o",
        metavar="FILE",
        help="Write the document to FILE instead of stdout.",
        show_default=False,
    ),
]
FormatOption = Annotated[
    Format, typer.Option("--format", "-f", help="json, or yaml (needs PyYAML).")
]
Title = Annotated[
    str | None,
    typer.Option(
        "--title",
        help="info.title (default: the config file's folder name, or the target).",
        show_default=False,
    ),
]
AppVersion = Annotated[
    str, typer.Option("--app-version", metavar="VERSION", help="info.version: the app's version.")
]


def _title(target: str) -> str:
    # An app lives in a folder of its own (examples/shop/app.toml): that is its name.
    return Path(target).resolve().parent.name or target if is_config_file(target) else target


def render(doc: dict[str, Any], form: Format) -> str:
    """The document as text: JSON with two-space indent, or YAML in the document's key order.

    Raises:
        ConfigError: YAML asked for and PyYAML is not installed.
    """
    if form is Format.json:
        return msgspec.json.format(msgspec.json.encode(doc), indent=2).decode() + "\n"
    try:
        import yaml
    except ImportError:
        raise ConfigError(
            "--format yaml needs PyYAML: pip install 'organelle[yaml]' (or use --format json)"
        ) from None
    return str(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))


def asyncapi(
    ctx: typer.Context,
    target: Target,
    *,
    output: Out = None,
    form: FormatOption = Format.json,
    title: Title = None,
    app_version: AppVersion = "0.1.0",
    set_: Sets = None,
    only: Only = None,
) -> None:
    """Write the app's AsyncAPI 3.0 document (stdout, or --out FILE).

    It describes what the app receives over NATS: each RPC method (request
    and reply), each event pattern it subscribes to, each stream it consumes,
    with JSON Schemas from the handlers' type hints and the message headers.
    Exit codes: 0 written, 2 the app cannot be built or the file not written.
    """
    from organelle.contracts import asyncapi as build

    try:
        loaded = load_app(target, sets=set_ or [], only=only or [])
        specs = loaded.specs()
        doc = build(
            specs,
            title=title or _title(target),
            version=app_version,
            settings=loaded.kernel.settings,
        )
        text = render(doc, form)
        if output is not None:
            try:
                output.write_text(text, encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"cannot write {output}: {exc.strerror or exc}") from None
    except Exception as exc:
        report(exc, building=True, show_traceback=bool(getattr(ctx.obj, "traceback", False)))
        raise typer.Exit(EXIT_INVALID) from None
    if output is None:
        sys.stdout.write(text)
    else:
        out.print(
            Text(f"wrote the AsyncAPI document of {plural(len(specs), 'module')} to {output}")
        )
