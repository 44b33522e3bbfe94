"""Turning a command-line target into a kernel: a config file or ``package.module:attr``.

``--set`` and ``--only`` act here, before any module is loaded, so what is
checked is exactly what would run.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from organelle.config import import_object, merge
from organelle.errors import ConfigError
from organelle.kernel import Kernel
from organelle.module import ModuleSpec

__all__ = ["App", "load_app", "parse_only", "parse_sets"]

CONFIG_SUFFIXES = (".toml", ".yaml", ".yml")


@dataclass(slots=True, kw_only=True)
class App:
    """A built kernel and the modules ``--only`` leaves out of it.

    A config-file app never registers the modules left out; an app built in
    code already has them, so they are removed (before anything starts) by
    ``select``.
    """

    kernel: Kernel
    label: str
    drop: list[str] = field(default_factory=list)

    def specs(self) -> list[ModuleSpec]:
        """The specs of the modules ``--only`` keeps, read from their classes (nothing starts)."""
        from organelle.contracts import specs_of

        return [spec for spec in specs_of(self.kernel) if spec.name not in self.drop]

    async def select(self) -> None:
        """Remove the modules ``--only`` left out; nothing has been loaded yet."""
        for name in self.drop:
            await self.kernel.remove_module(name)
        self.drop = []


def parse_sets(items: list[str]) -> dict[str, Any]:
    """Turn ``section.key=value`` items into a nested override dict.

    Values are JSON when they parse (``3``, ``true``, ``[1, 2]``, ``"x"``) and
    plain strings otherwise, as for ``ORGANELLE__…`` environment variables.

    Raises:
        ConfigError: an item without ``=`` or without a ``section.key`` path.
    """
    result: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        path = key.strip().split(".")
        if not sep or len(path) < 2 or not all(path):  # noqa: PLR2004 - section + key
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        node: dict[str, Any] = {path[-1]: value}
        for part in reversed(path[:-1]):
            node = {part: node}
        result = merge(result, node)
    return result


def parse_only(items: list[str]) -> list[str]:
    """Split ``--only a,b --only c`` into ``["a", "b", "c"]`` (order kept, no repeats)."""
    names: list[str] = []
    for item in items:
        for name in item.split(","):
            if not name.strip():
                raise ConfigError(f"--only {item!r}: empty module name")
            if name.strip() not in names:
                names.append(name.strip())
    return names


def is_config_file(target: str) -> bool:
    """Whether ``target`` names a config file rather than ``package.module:attr``."""
    return Path(target).suffix.lower() in CONFIG_SUFFIXES or Path(target).is_file()


def load_app(target: str, *, sets: list[str], only: list[str]) -> App:
    """Build (not start) the kernel ``target`` describes.

    Raises:
        ConfigError: an unreadable or invalid config, an unknown ``--only`` name,
            an unimportable reference, or a reference that is not a Kernel.
    """
    overrides = parse_sets(sets)
    selected = parse_only(only)
    if is_config_file(target):
        return _from_file(target, overrides, selected)
    if ":" not in target:
        raise ConfigError(
            f"{target!r} is neither a config file (.toml, .yaml) nor a 'package.module:attr'"
        )
    if overrides:
        raise ConfigError("--set needs a config file target; a Kernel built in code has its own")
    kernel = _from_reference(target)
    names = list(kernel.modules())
    return App(kernel=kernel, label=target, drop=_left_out(selected, names))


def _from_file(target: str, overrides: dict[str, Any], selected: list[str]) -> App:
    kernel = Kernel.from_config(target, overrides=overrides, only=selected or None)
    return App(kernel=kernel, label=target)


def _left_out(selected: list[str], names: list[str]) -> list[str]:
    if not selected:
        return []
    unknown = [n for n in selected if n not in names]
    if unknown:
        raise ConfigError(
            f"--only: no module named {', '.join(map(repr, unknown))} in this app "
            f"(it has {', '.join(names) or 'none'})"
        )
    return [n for n in names if n not in selected]


def _from_reference(ref: str) -> Kernel:
    # Like `python -m`: a reference is resolved from the current directory.
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    obj = import_object(ref)
    if isinstance(obj, Kernel):
        return obj
    if not callable(obj):
        raise ConfigError(f"{ref} is a {type(obj).__name__}, not a Kernel or a function making one")
    made = obj()
    if not isinstance(made, Kernel):
        raise ConfigError(f"{ref}() returned {type(made).__name__}, not a Kernel")
    return made
