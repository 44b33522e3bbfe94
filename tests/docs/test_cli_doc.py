"""docs/cli.md covers every command the CLI has, so a new command cannot ship undocumented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer

from organelle.cli._app import app

CLI_DOC = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
SYNOPSIS = CLI_DOC.split("```")[1]
"""The first code block: one usage line per command."""
MANAGING = CLI_DOC.split("## Managing a running app")[1].split("\n## ")[0]
HEADINGS = [line for line in CLI_DOC.splitlines() if line.startswith("## ")]


def commands(group: typer.Typer, parents: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command's path in the typer app, groups walked depth first."""
    found: list[tuple[str, ...]] = []
    for command in group.registered_commands:
        name = command.name or (command.callback.__name__ if command.callback else "")
        found.append((*parents, name.replace("_", "-")))
    for sub in group.registered_groups:
        assert sub.name is not None
        assert sub.typer_instance is not None
        found.extend(commands(sub.typer_instance, (*parents, sub.name)))
    return found


COMMANDS = commands(app)


def test_the_walk_finds_the_commands_and_groups() -> None:
    assert ("run",) in COMMANDS
    assert ("config", "cluster", "set") in COMMANDS
    assert len(COMMANDS) > 30  # a walk that lost the groups would find 14


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_has_a_usage_line(path: tuple[str, ...]) -> None:
    *groups, leaf = path
    # `organelle config cluster show|set|history` names several commands on one line.
    prefix = "".join(f"{re.escape(g)} " for g in groups)
    line = re.compile(rf"^organelle {prefix}(?:[\w-]+\|)*{re.escape(leaf)}\b", re.MULTILINE)
    assert line.search(SYNOPSIS), f"docs/cli.md's usage block lacks 'organelle {' '.join(path)}'"


@pytest.mark.parametrize("name", sorted({path[0] for path in COMMANDS}))
def test_every_command_has_a_section(name: str) -> None:
    heading = any(f"`organelle {name}" in h for h in HEADINGS)
    assert heading or f"`{name}`" in MANAGING, f"docs/cli.md has no section on 'organelle {name}'"
