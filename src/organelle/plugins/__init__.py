"""Plugin packages: modules installed with pip, found by name, held to a manifest.

* ``Manifest`` — set as a module class's ``manifest``: the organelle versions
  it supports and the calls, topics, jobs, streams and Store namespaces it may use;
* ``installed()`` / ``find(name)`` / ``load(name, pins)`` — the ``organelle.modules``
  entry points (``modules = ["pricing"]`` in an app config loads one by name);
* ``digest(dist)`` / ``parse_pins`` — pinning a distribution's files by hash
  (``[plugins.pins]``);
* ``survey`` — every installed plugin with its version, manifest and pin state;
* ``GuardedKernel`` — the kernel as a module with a manifest sees it.

See ``docs/plugins.md``.
"""

from organelle.plugins._found import (
    GROUP,
    Pins,
    Plugin,
    digest,
    find,
    installed,
    load,
    parse_pins,
    verify,
)
from organelle.plugins._guard import GuardedKernel, GuardedStore
from organelle.plugins._manifest import Manifest, covers, manifest_of
from organelle.plugins._survey import PluginRow, survey

__all__ = [
    "GROUP",
    "GuardedKernel",
    "GuardedStore",
    "Manifest",
    "Pins",
    "Plugin",
    "PluginRow",
    "covers",
    "digest",
    "find",
    "installed",
    "load",
    "manifest_of",
    "parse_pins",
    "survey",
    "verify",
]
