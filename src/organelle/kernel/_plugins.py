"""The kernel's side of plugins: names resolved through entry points, manifests held.

A module reference without a colon (``"pricing"``) is a plugin's entry-point
name (``organelle.plugins``). A module class with a ``manifest`` is checked
when its slot is made — the kernel's version in its range, each ``@on`` topic
and ``@consume`` stream inside what it declares — and attached to a
``GuardedKernel``; every other module is attached to the kernel itself, so
the permission checks cost nothing where no manifest is declared.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from organelle.config import import_object

if TYPE_CHECKING:
    from organelle.module import KernelAPI, ModuleSpec
    from organelle.plugins import Pins

__all__ = ["PluginHost"]


class PluginHost:
    """Resolves module references and admits plugin modules, for one kernel."""

    def __init__(self, section: Any) -> None:
        self._section = section
        self._pins: Pins | None = None

    @property
    def pins(self) -> Pins:
        """The ``[plugins]`` section, validated on first use."""
        if self._pins is None:
            from organelle.plugins import parse_pins

            self._pins = parse_pins(self._section)
        return self._pins

    def resolve(self, ref: str, *, where: str = "") -> Any:
        """Import ``ref``: a plugin name, or ``"package.module:Class"`` (pins checked first).

        Raises:
            PluginError: no such plugin; ``PluginPinError``: its files differ from the pin.
            ConfigError: an import string that cannot be imported.
        """
        if ":" not in ref:
            from organelle.plugins import load

            return load(ref, self.pins, where=where)
        if self._section:
            self._verify_package(ref.partition(":")[0].partition(".")[0])
        return import_object(ref, where=where)

    def _verify_package(self, package: str) -> None:
        """A pinned distribution is checked however its module is named (also by import string)."""
        pins = self.pins
        if not pins.pins:
            return
        from importlib import metadata

        from organelle.plugins import Plugin, verify

        for dist_name in metadata.packages_distributions().get(package, []):
            if pins.of(dist_name) is not None:
                verify(Plugin(package, package, metadata.distribution(dist_name)), pins)

    @staticmethod
    def admit(spec: ModuleSpec) -> None:
        """Check a module class's manifest, if it has one, against this kernel and its handlers.

        Raises:
            PluginIncompatibleError: this organelle is outside its declared range.
            PermissionDeniedError: an ``@on`` topic or ``@consume`` stream it did not declare.
            PluginError: ``manifest`` is not a ``Manifest``.
        """
        if getattr(spec.cls, "manifest", None) is None:
            return
        from organelle.plugins import manifest_of
        from organelle.plugins._guard import denied

        manifest = manifest_of(spec.cls)
        assert manifest is not None  # noqa: S101 - checked above
        manifest.check_kernel(spec.name)
        subscribe = manifest.rule("subscribe")
        for sub in spec.subscriptions:
            if not subscribe.covers(sub.spec.pattern):
                raise denied(spec.name, "subscribe", sub.spec.pattern)
        streams = manifest.rule("streams")
        for consumer in spec.consumers:
            if not streams.admits(consumer.options.stream):
                raise denied(spec.name, "streams", consumer.options.stream)

    @staticmethod
    def api_for(kernel: KernelAPI, cls: type, name: str) -> KernelAPI:
        """What a module instance is attached to: the kernel, or a guard over it."""
        if getattr(cls, "manifest", None) is None:
            return kernel
        from organelle.plugins import GuardedKernel, manifest_of

        manifest = manifest_of(cls)
        assert manifest is not None  # noqa: S101 - checked above
        return GuardedKernel(kernel, name, manifest)

    @staticmethod
    def guard_call(api: KernelAPI, call: Callable[..., Any]) -> Callable[..., Any]:
        """``call`` (a caller's policy path) behind the module's RPC rule, if it has one."""
        guard = getattr(api, "guard_call", None)
        return call if guard is None else guard(call)
