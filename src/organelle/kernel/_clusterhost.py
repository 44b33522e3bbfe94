"""The kernel's side of cluster config: the layer between the file and the local overrides.

Precedence, lowest first: the config file (or the dict the kernel was built
with) → the cluster layer → ``ORGANELLE__…`` variables → ``--set`` overrides.
Local overrides stay on top so one node can still be pinned while debugging;
the cluster layer is what every node shares.

With ``[kernel] cluster_config = true`` the node reads the layer when it starts
(before modules load, so they start on it) and then follows it
(``organelle.cluster_config.ConfigNode``): it validates proposals with the
same checks as a reload plus each changed module's ``on_config_check(old,
new)``, and applies them through ``reload_config`` — so a module's
``on_config_changed`` failing rolls this node back, and the proposer the cluster.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from organelle.config.loader import merge
from organelle.errors import ConfigError
from organelle.kernel import _states as lc
from organelle.kernel._reload import Reloadable, _apply, _plan
from organelle.kernel._states import ModuleState

if TYPE_CHECKING:
    from organelle.cluster_config import ConfigNode
    from organelle.storage import Store
    from organelle.transport import Transport

__all__ = ["ClusterHost"]


class Hosting(Reloadable, Protocol):
    """What cluster config needs of the kernel (the façade hands itself over)."""

    _config_layered: Callable[[Mapping[str, Any]], dict[str, Any]] | None

    @property
    def store(self) -> Store: ...

    @property
    def transport(self) -> Transport: ...

    async def reload_config(self, config: Mapping[str, Any] | None = None) -> Any: ...

    async def _announce(self, topic: str, payload: dict[str, Any]) -> None: ...


class ClusterHost:
    """Reads the layer at start, then keeps this node on it (a lifecycle ``Service``)."""

    def __init__(self, kernel: Hosting) -> None:
        self._kernel = kernel
        self._base = dict(kernel._secrets.source)  # a dict-built kernel: its config as written
        self.layer: dict[str, Any] = {}  # the cluster layer in effect here
        self._node: ConfigNode | None = None

    def effective(self, layer: Mapping[str, Any]) -> dict[str, Any]:
        """The whole config as written with ``layer`` in its place between file and overrides."""
        layered = self._kernel._config_layered
        return layered(layer) if layered is not None else merge(self._base, layer)

    def _make_node(self) -> ConfigNode:
        from organelle.cluster_config import ConfigNode

        kernel = self._kernel
        return ConfigNode(
            lambda: kernel.store,
            lambda: kernel.transport.node,
            validate=self.validate,
            apply=self.apply,
            announce=kernel._announce,
        )

    async def open(self) -> None:
        """Before modules load: put the stored layer in effect, then follow it.

        Raises:
            ConfigError: this node cannot run the stored layer (it does not start).
        """
        node = self._node = self._node or self._make_node()
        revision, layer = await node.read()
        if layer or self.layer:
            kernel = self._kernel
            source = self.effective(layer)
            try:  # start holds the lifecycle lock, and no module is active yet: no hooks
                await _apply(kernel, _plan(kernel, await kernel._secrets.resolve_async(source)))
            except ConfigError as exc:
                raise ConfigError(
                    f"the cluster config (revision {revision}) does not fit this node: {exc}",
                    details={"revision": revision, **exc.details},
                ) from exc
            kernel._secrets.adopt(source)
            self.layer = layer
        node.adopted(revision)
        await node.open()

    async def close(self) -> None:
        """Stop following (after modules stopped); the layer stays in effect."""
        if self._node is not None:
            await self._node.close()

    async def validate(self, layer: dict[str, Any]) -> None:
        """Could this node run ``layer``? Touches nothing.

        Raises:
            ConfigError: an invalid section or an unresolvable reference.
            LifecycleError: a module's ``on_config_check`` refused its new section.
        """
        kernel = self._kernel
        source = self.effective(layer)
        resolution = await asyncio.to_thread(kernel._secrets.resolve, source)
        resolved = source if resolution is None else resolution.config
        async with kernel._life.lock:
            plan = _plan(kernel, resolved)
            for step in plan.steps:
                rec = step.rec
                if kernel._life.running and rec.state is ModuleState.ACTIVE:
                    await lc.run_hook(
                        rec, "on_config_check", kernel._life.timeout(rec), step.old, step.new
                    )

    async def apply(self, layer: dict[str, Any]) -> None:
        """Put ``layer`` in effect (a reload), or raise having rolled this node back."""
        await self._kernel.reload_config(self.effective(layer))
        self.layer = layer
