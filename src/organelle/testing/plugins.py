"""The plugin test kit: check a plugin against the kernel range and permissions it declares.

``await check_plugin(Pricing)`` (a class, an entry-point name or
``"package.module:Class"``) refuses a plugin without a manifest, one whose
range leaves out this organelle, and one whose handlers subscribe outside it;
then it starts the plugin in a kernel — beside ``modules`` standing in for
what it calls — with every use of the kernel going through the manifest, so
an ``on_start`` that reaches beyond it fails here first. A plugin's own tests
call it once; its other tests run it in ``running(...)`` as any module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from organelle._version import __version__
from organelle.errors import PluginError
from organelle.kernel import Kernel, ModuleRef
from organelle.module import Module, describe
from organelle.plugins import Manifest, covers, manifest_of
from organelle.plugins._guard import GuardedKernel

__all__ = ["PluginCheck", "check_plugin"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PluginCheck:
    """What ``check_plugin`` found: the plugin, the kernel it ran on, and hints."""

    name: str
    version: str
    kernel: str
    manifest: Manifest
    warnings: tuple[str, ...] = ()


def _resolve(plugin: type[Module] | str) -> type[Module]:
    if isinstance(plugin, str):
        from organelle.kernel._plugins import PluginHost

        plugin = PluginHost(None).resolve(plugin, where="check_plugin")
    if not (isinstance(plugin, type) and issubclass(plugin, Module)):
        raise PluginError(f"check_plugin: {plugin!r} is not a Module class")
    return plugin


def _warnings(cls: type[Module], manifest: Manifest) -> list[str]:
    spec = describe(cls)
    found = [
        f"requires {dep.name!r} but may call none of its methods"
        for dep in spec.deps
        if not any(covers(p, f"{dep.name}.*") or p.startswith(f"{dep.name}.") for p in manifest.rpc)
    ]
    if not manifest.kernel:
        found.append("declares no kernel range: every organelle version is accepted")
    if manifest.kernel and "<" not in manifest.kernel and "~=" not in manifest.kernel:
        found.append(f"kernel range {manifest.kernel!r} has no upper bound")
    return found


async def check_plugin(
    plugin: type[Module] | str,
    *,
    modules: Iterable[ModuleRef] = (),
    config: Mapping[str, Any] | None = None,
) -> PluginCheck:
    """Check a plugin's manifest and start it in a kernel under it.

    Args:
        plugin: the module class, an installed plugin's name, or ``"pkg.mod:Class"``.
        modules: what it calls or requires (``organelle.testing.fake_module`` stand-ins).
        config: the app config (default: an in-memory Store, nothing on disk).

    Raises:
        PluginError: no manifest, or a bad one.
        PluginIncompatibleError: this organelle is outside its range.
        PermissionDeniedError: a subscription outside the manifest.
        LifecycleError: it failed to start (its cause: a use outside the manifest, …).
    """
    cls = _resolve(plugin)
    manifest = manifest_of(cls)
    if manifest is None:
        raise PluginError(
            f"plugin module {cls.name!r} declares no manifest: set "
            "manifest = organelle.plugins.Manifest(kernel=..., rpc=..., ...) on its class"
        )
    manifest.check_kernel(cls.name)
    config = config if config is not None else {"kernel": {"storage": "memory://"}}
    async with Kernel([cls, *modules], config) as kernel:
        attached = kernel.module(describe(cls).name).kernel
        if not isinstance(attached, GuardedKernel):  # the kernel must hold it to the manifest
            raise PluginError(f"plugin module {cls.name!r} was not attached under its manifest")
    return PluginCheck(
        name=describe(cls).name,
        version=str(describe(cls).version),
        kernel=__version__,
        manifest=manifest,
        warnings=tuple(_warnings(cls, manifest)),
    )
