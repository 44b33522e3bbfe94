"""``organelle new project|module|plugin NAME``: a working starting point from templates.

Each kind is a folder of ``*.tmpl`` files under ``organelle/cli/templates``
(package data), rendered with ``string.Template``; ``__package__`` in a path
becomes the Python package's name. A plugin is a module plus the
``organelle.modules`` entry point, so its templates are laid over the module's.
Every kind comes with its pyproject.toml, app.toml and tests, which pass as
generated (``pytest``, ruff and mypy strict).
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from string import Template
from typing import Annotated

import typer
from rich.text import Text

from organelle._version import __version__
from organelle.cli._output import EXIT_INVALID, err, out
from organelle.errors import ConfigError

__all__ = ["LAYERS", "Names", "new", "render"]

LAYERS: dict[str, tuple[str, ...]] = {
    "project": ("project",),
    "module": ("module",),
    "plugin": ("module", "plugin"),
}
"""The template folders of each kind, later ones overriding files of earlier ones."""

_NAME = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
_SUFFIX = ".tmpl"


@dataclass(frozen=True, slots=True, kw_only=True)
class Names:
    """What the templates say, derived from the one NAME given."""

    name: str  # as given: the folder and the app's name
    dist: str  # the distribution (pip) name
    package: str  # the Python package
    module: str  # the organelle module's name
    cls: str  # the module class
    title: str

    @classmethod
    def of(cls, name: str) -> Names:
        """Derive every name from ``name``.

        Raises:
            ConfigError: not a lowercase name of letters, digits, ``-`` or ``_``.
        """
        if not _NAME.fullmatch(name):
            raise ConfigError(
                f"{name!r} is not a valid name: use lowercase letters and digits, "
                "words joined by '-' or '_', starting with a letter (e.g. 'billing' or 'my-app')"
            )
        package = name.replace("-", "_")
        if keyword.iskeyword(package) or package in ("organelle", "test", "tests"):
            raise ConfigError(f"{name!r} cannot be a package name; pick another")
        words = re.split(r"[-_]", name)
        return cls(
            name=name,
            dist=name.replace("_", "-"),
            package=package,
            module=package,
            cls="".join(w.capitalize() for w in words),
            title=" ".join(words).capitalize(),
        )

    def mapping(self) -> dict[str, str]:
        """The template variables."""
        return {
            "name": self.name,
            "dist": self.dist,
            "package": self.package,
            "module": self.module,
            "cls": self.cls,
            "title": self.title,
            "organelle_version": __version__,
            "kernel_range": _kernel_range(__version__),
        }


def _kernel_range(version: str) -> str:
    """``>=X.Y,<X+1``: the organelle releases a new plugin says it supports."""
    major, _, rest = version.partition(".")
    minor = rest.partition(".")[0] or "0"
    return f">={major}.{minor},<{int(major) + 1}"


def _walk(root: Traversable, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], str]:
    found: dict[tuple[str, ...], str] = {}
    for entry in root.iterdir():
        if entry.is_dir():
            found.update(_walk(entry, (*prefix, entry.name)))
        elif entry.name.endswith(_SUFFIX):
            found[(*prefix, entry.name.removesuffix(_SUFFIX))] = entry.read_text("utf-8")
    return found


def render(kind: str, names: Names) -> dict[str, str]:
    """The files of ``kind`` for ``names``: relative path -> text.

    Raises:
        ConfigError: an unknown kind.
    """
    if kind not in LAYERS:
        raise ConfigError(f"unknown kind {kind!r}: use {', '.join(LAYERS)}")
    root = files("organelle.cli") / "templates"
    merged: dict[tuple[str, ...], str] = {}
    for layer in LAYERS[kind]:
        merged.update(_walk(root / layer))
    values = names.mapping()
    return {
        "/".join(names.package if p == "__package__" else p for p in parts): Template(
            text
        ).substitute(values)
        for parts, text in sorted(merged.items())
    }


def create(kind: str, name: str, parent: Path) -> Path:
    """Write a new ``kind`` called ``name`` into ``parent / name``; return that folder.

    Raises:
        ConfigError: a bad name or kind, or the folder exists and is not empty.
    """
    names = Names.of(name)
    rendered = render(kind, names)
    target = parent / name
    if target.exists() and any(target.iterdir()):
        raise ConfigError(f"{target} exists and is not empty; pick another name or folder")
    for rel, text in rendered.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, "utf-8")
    return target


new = typer.Typer(
    help="Create a project, a module or a plugin from a template (with tests).",
    no_args_is_help=True,
)

Name = Annotated[
    str,
    typer.Argument(
        metavar="NAME", help="Lowercase, words joined by '-' or '_'.", show_default=False
    ),
]
Into = Annotated[
    Path,
    typer.Option("--dir", "-d", help="The folder to create NAME in.", show_default="."),
]


def _make(kind: str, name: str, parent: Path) -> None:
    try:
        target = create(kind, name, parent)
    except ConfigError as exc:
        err.print(Text(f"error: {exc}", "red"))
        raise typer.Exit(EXIT_INVALID) from None
    out.print(Text(f"created {kind} {name!r} in {target}", "green"))
    out.print(Text(f"  cd {target}\n  pip install -e '.[dev]'\n  pytest"))
    out.print(Text("  organelle run app.toml --reload"))


@new.command()
def project(name: Name, into: Into = Path()) -> None:
    """An app: a package with one module, app.toml, tests and pyproject.toml."""
    _make("project", name, into)


@new.command()
def module(name: Name, into: Into = Path()) -> None:
    """A reusable module in its own package, with app.toml to run it alone and tests."""
    _make("module", name, into)


@new.command()
def plugin(name: Name, into: Into = Path()) -> None:
    """A module that registers itself under the 'organelle.modules' entry-point group."""
    _make("plugin", name, into)
