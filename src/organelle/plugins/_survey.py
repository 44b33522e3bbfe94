"""What is installed, as ``organelle plugins`` lists it: one row per plugin.

A row says what the entry point and its distribution are, whether the files
match their pin (checked before any import), and — once imported — the
module's version, its manifest and whether this organelle is in its range.
A plugin that fails any step is listed with the reason, never skipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from organelle._version import __version__
from organelle.errors import PluginPinError
from organelle.plugins._found import Pins, Plugin, installed, load, verify
from organelle.plugins._manifest import manifest_of

__all__ = ["PluginRow", "survey"]


@dataclass(slots=True, kw_only=True)
class PluginRow:
    """One installed (or wanted and missing) plugin."""

    name: str
    dist: str = ""
    version: str = ""
    ref: str = ""
    used: bool = False
    pin: str = "unpinned"
    """``ok``, ``unpinned``, ``mismatch``, ``required`` (unpinned while pins are required)."""
    module_version: str = ""
    manifest: dict[str, Any] | None = None
    compatible: bool | None = None
    error: str = ""

    @property
    def loadable(self) -> bool:
        """Whether the kernel would load it."""
        return not self.error and self.compatible is not False

    def to_data(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        return {**asdict(self), "loadable": self.loadable}


def _row(plugin: Plugin, pins: Pins, used: bool) -> PluginRow:
    row = PluginRow(
        name=plugin.name,
        dist=plugin.dist_name,
        version=plugin.version,
        ref=plugin.ref,
        used=used,
    )
    try:
        row.pin = "ok" if verify(plugin, pins) else "unpinned"
    except PluginPinError as exc:
        row.pin = "required" if pins.of(plugin.dist_name) is None else "mismatch"
        row.error = str(exc)
        return row  # its code is not imported
    try:
        cls = load(plugin.name, Pins())  # the pin is checked above
        manifest = manifest_of(cls)
    except Exception as exc:  # a broken plugin is listed with the reason
        row.error = f"{type(exc).__name__}: {exc}"
        return row
    row.module_version = str(getattr(cls, "version", ""))
    if manifest is not None:
        row.manifest = manifest.to_dict()
        row.compatible = manifest.supports(__version__)
    return row


def survey(pins: Pins | None = None, used: Iterable[str] = ()) -> list[PluginRow]:
    """A row per installed plugin, plus one per name in ``used`` that none provides."""
    pins = pins or Pins()
    wanted = set(used)
    plugins = installed()
    rows = [_row(p, pins, p.name in wanted) for p in plugins]
    present = {p.name for p in plugins}
    rows += [
        PluginRow(name=name, used=True, error="not installed") for name in sorted(wanted - present)
    ]
    return rows
