"""The arguments and options several commands share, declared once so they read alike."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["Only", "Reload", "ReloadDirs", "Sets", "Target"]

Target = Annotated[
    str,
    typer.Argument(
        metavar="TARGET",
        help="An app config file (app.toml, app.yaml) or 'package.module:attr' naming a "
        "Kernel or a function returning one.",
        show_default=False,
    ),
]
Sets = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        metavar="SECTION.KEY=VALUE",
        help="Override a config value (repeatable); VALUE is JSON when it parses, "
        "e.g. --set modules.inventory.low_stock=3.",
        show_default=False,
    ),
]
Only = Annotated[
    list[str] | None,
    typer.Option(
        "--only",
        metavar="NAME,NAME",
        help="Run only these modules of the app (repeatable); the others are not loaded.",
        show_default=False,
    ),
]
Reload = Annotated[
    bool,
    typer.Option(
        "--reload",
        help="Development: restart the app when a .py, .toml or .yaml file changes "
        "(the config's folder and its pythonpath are watched; needs watchfiles).",
    ),
]
ReloadDirs = Annotated[
    list[Path] | None,
    typer.Option(
        "--reload-dir",
        metavar="DIR",
        help="Also watch this folder with --reload (repeatable).",
        show_default=False,
    ),
]
