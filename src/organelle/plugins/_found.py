"""Finding plugins: the ``organelle.modules`` entry points and the distributions behind them.

``pip install shop-pricing`` whose ``pyproject.toml`` says::

    [project.entry-points."organelle.modules"]
    pricing = "shop_pricing:Pricing"

makes ``modules = ["pricing"]`` load that class. ``[plugins.pins]`` in the app
config fixes a distribution's files by hash: the files are hashed before the
plugin's code is imported, and a difference refuses the load.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from organelle.config import import_object
from organelle.errors import ConfigError, PluginError, PluginPinError

__all__ = [
    "GROUP",
    "Pins",
    "Plugin",
    "digest",
    "find",
    "installed",
    "load",
    "parse_pins",
    "verify",
]

GROUP = "organelle.modules"
# Files a pip install writes differently each time (or compiles later): not part of the pin.
_UNPINNED = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"})


@dataclass(frozen=True, slots=True)
class Plugin:
    """One installed plugin: its entry point and its distribution."""

    name: str
    ref: str
    dist: metadata.Distribution | None

    @property
    def dist_name(self) -> str:
        """The distribution's project name (``""`` when the entry point has none)."""
        return "" if self.dist is None else str(self.dist.metadata["Name"])

    @property
    def version(self) -> str:
        """The distribution's version (``""`` when unknown)."""
        return "" if self.dist is None else self.dist.version


@dataclass(frozen=True, slots=True, kw_only=True)
class Pins:
    """The ``[plugins]`` section: distribution hashes, and whether every plugin needs one."""

    pins: Mapping[str, str] = field(default_factory=dict)
    require: bool = False

    def of(self, dist_name: str) -> str | None:
        """The pinned ``sha256:…`` of a distribution (names compared normalized)."""
        return self.pins.get(_normal(dist_name))


def _normal(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def parse_pins(section: Any) -> Pins:
    """Validate ``[plugins]``: ``pins = {dist = "sha256:…"}``, ``require_pins = bool``.

    Raises:
        ConfigError: naming the key and what is wrong.
    """
    if section is None:
        return Pins()
    if not isinstance(section, Mapping):
        raise ConfigError("plugins: the [plugins] section must be a table")
    unknown = set(section) - {"pins", "require_pins"}
    if unknown:
        raise ConfigError(f"plugins: unknown key {min(unknown)!r} (pins, require_pins)")
    raw = section.get("pins", {})
    if not isinstance(raw, Mapping):
        raise ConfigError("plugins.pins: must be a table of distribution = 'sha256:…'")
    pins: dict[str, str] = {}
    for dist, value in raw.items():
        if not isinstance(value, str) or not value.startswith("sha256:") or len(value) != 71:  # noqa: PLR2004 - "sha256:" + 64 hex
            raise ConfigError(f"plugins.pins.{dist}: expected 'sha256:' and 64 hex digits")
        pins[_normal(str(dist))] = value
    require = section.get("require_pins", False)
    if not isinstance(require, bool):
        raise ConfigError("plugins.require_pins: must be true or false")
    return Pins(pins=pins, require=require)


def installed() -> list[Plugin]:
    """Every entry point of the ``organelle.modules`` group, sorted by name."""
    found = metadata.entry_points(group=GROUP)
    return sorted(
        (Plugin(ep.name, ep.value, getattr(ep, "dist", None)) for ep in found),
        key=lambda p: (p.name, p.dist_name),
    )


def find(name: str) -> Plugin:
    """The installed plugin named ``name``.

    Raises:
        PluginError: none is installed under that name, or two distributions claim it.
    """
    found = [p for p in installed() if p.name == name]
    if not found:
        raise PluginError(
            f"no plugin named {name!r} is installed (entry point group {GROUP!r}); "
            "pip install its package, or write 'package.module:Class'"
        )
    if len({p.dist_name for p in found}) > 1:
        owners = ", ".join(sorted(p.dist_name for p in found))
        raise PluginError(f"plugin name {name!r} is claimed by several distributions: {owners}")
    return found[0]


def digest(dist: metadata.Distribution) -> str:
    """``sha256:…`` over the distribution's installed files: each path and its content's hash.

    The files are those its ``RECORD`` lists inside the install folder (not
    the generated scripts beside it), plus any other file found since in the
    folders those are in (an added module is a change too) — without bytecode and
    without what pip writes per install. The hashes are of the files as they
    are now, not as ``RECORD`` claims, so an edited file changes the digest.

    Raises:
        PluginPinError: the distribution lists no files (no ``RECORD``).
    """
    lines: list[str] = []
    for text, located in sorted(_installed_files(dist).items()):
        name = text.rsplit("/", 1)[-1]
        if text.endswith(".pyc") or "__pycache__/" in text or name in _UNPINNED:
            continue
        try:
            content = located.read_bytes()
        except OSError:
            content = b"\0missing"
        lines.append(f"{text}\0{hashlib.sha256(content).hexdigest()}\n")
    return "sha256:" + hashlib.sha256("".join(lines).encode()).hexdigest()


def _installed_files(dist: metadata.Distribution) -> dict[str, Path]:
    """Path (as in ``RECORD``) → file: the listed ones, and any other in its package folders."""
    files = dist.files
    if not files:
        raise PluginPinError(f"{dist.metadata['Name']}: no RECORD, so its files cannot be pinned")
    root = Path(str(dist.locate_file("")))
    found: dict[str, Path] = {}
    folders: set[str] = set()
    for path in files:
        text = str(path).replace("\\", "/")
        if text.startswith("../"):
            continue
        found[text] = root / text
        folder = text.rpartition("/")[0]
        if folder and not folder.split("/", 1)[0].endswith((".dist-info", ".data")):
            folders.add(folder)
    # Files nobody listed beside the listed ones (a module dropped in later); only
    # the folders it has files in, so a namespace package's siblings stay out.
    for folder in sorted(folders):
        with contextlib.suppress(OSError):
            for extra in (root / folder).iterdir():
                if extra.is_file():
                    found.setdefault(f"{folder}/{extra.name}", extra)
    return found


def verify(plugin: Plugin, pins: Pins) -> bool:
    """Check ``plugin`` against its pin; ``True`` when it is pinned (and matches).

    Raises:
        PluginPinError: its files differ from the pin, or a pin is required and absent.
    """
    pinned = pins.of(plugin.dist_name) if plugin.dist is not None else None
    if pinned is None:
        if pins.require:
            raise PluginPinError(
                f"plugin {plugin.name!r} ({plugin.dist_name or 'no distribution'}) has no pin "
                "in [plugins.pins] and require_pins is on",
                details={"plugin": plugin.name, "dist": plugin.dist_name},
            )
        return False
    assert plugin.dist is not None  # noqa: S101 - pinned implies a distribution
    actual = digest(plugin.dist)
    if actual != pinned:
        raise PluginPinError(
            f"plugin {plugin.name!r}: the files of {plugin.dist_name} {plugin.version} differ "
            f"from its pin (pinned {pinned[:19]}…, installed {actual[:19]}…); refusing to load it",
            details={"plugin": plugin.name, "dist": plugin.dist_name, "actual": actual},
        )
    return True


def load(name: str, pins: Pins | None = None, *, where: str = "") -> Any:
    """Import the module class of plugin ``name``, after checking its pin.

    Raises:
        PluginError: not installed, ambiguous, or its entry point cannot be imported.
        PluginPinError: see ``verify``.
    """
    plugin = find(name)
    verify(plugin, pins or Pins())
    try:
        found = import_object(plugin.ref, where=where or f"plugin {name!r}")
    except ConfigError as exc:
        raise PluginError(str(exc), details={"plugin": name, "ref": plugin.ref}) from None
    own = getattr(found, "name", None)
    if own != name:  # the name in app.toml is the module's name, everywhere after
        raise PluginError(
            f"plugin {name!r} ({plugin.dist_name}) points at {plugin.ref!r}, a module named "
            f"{own!r}; the entry point's name must be the module's name",
            details={"plugin": name, "ref": plugin.ref},
        )
    return found
