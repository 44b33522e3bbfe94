"""``organelle plugins [--app APP.toml]``: the installed plugins, their manifests and pins.

Without ``--app`` it lists every ``organelle.modules`` entry point of this
environment. With it, the app's ``[plugins]`` section decides the pin state
and the plugins the app names are marked (and listed even when missing); the
command then fails when one of those would not load, so CI can run it before
a deploy. Nothing starts, and a plugin whose files differ from its pin is
never imported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from organelle.cli._output import EXIT_INVALID, EXIT_OK, out, plural, report
from organelle.config import apply_env, load_file

__all__ = ["plugins"]

_PIN_STYLE = {"ok": "green", "unpinned": "", "mismatch": "red", "required": "red"}


def _app_section(path: str) -> tuple[Any, list[str]]:
    """The app's ``[plugins]`` section and the plugin names its ``[kernel] modules`` lists."""
    config = apply_env(load_file(path))
    kernel = config.get("kernel") or {}
    modules = kernel.get("modules", []) if isinstance(kernel, dict) else []
    names = [m for m in modules if isinstance(m, str) and ":" not in m]
    return config.get("plugins"), names


def _permissions(manifest: dict[str, Any]) -> str:
    parts = [f"{kind} {', '.join(v)}" for kind, v in manifest.items() if kind != "kernel" and v]
    return "; ".join(parts) or "nothing beyond itself"


def plugins(
    app: Annotated[
        Path | None,
        typer.Option("--app", metavar="APP.toml", help="Pins and plugin names from this app."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List installed plugins: version, kernel range, permissions, pin state.

    Exit codes: 0 listed; 2 the app config is invalid, or (with ``--app``) a
    plugin the app names is missing, differs from its pin, is outside its
    kernel range or fails to import.
    """
    from organelle.plugins import parse_pins, survey

    try:
        section, used = _app_section(str(app)) if app is not None else (None, [])
        rows = survey(parse_pins(section), used)
    except Exception as exc:
        raise typer.Exit(report(exc, building=True)) from None
    broken = [r for r in rows if r.used and not r.loadable]
    if as_json:
        out.print(Text(json.dumps([r.to_data() for r in rows], indent=2)))
        raise typer.Exit(EXIT_INVALID if broken else EXIT_OK)
    out.print(Text(plural(len(rows), "plugin")))
    for row in rows:
        line = Text(f"{row.name}", "bold")
        line.append(f"  {row.dist or '?'} {row.version}".rstrip(), "")
        if row.used:
            line.append("  (used by the app)", "cyan")
        line.append(f"  pin: {row.pin}", _PIN_STYLE.get(row.pin, ""))
        if row.manifest is not None:
            ok = "ok" if row.compatible else "INCOMPATIBLE"
            line.append(f"\n    kernel {row.manifest['kernel'] or 'any'} ({ok})", "")
            line.append(f"\n    may use: {_permissions(row.manifest)}", "")
        elif not row.error:
            line.append("\n    no manifest: unrestricted", "yellow")
        if row.error:
            line.append(f"\n    error: {row.error}", "red")
        out.print(line)
    raise typer.Exit(EXIT_INVALID if broken else EXIT_OK)
