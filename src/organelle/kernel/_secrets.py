"""The kernel's secret references: resolved when built, on each reload, and on an interval.

Construction resolves synchronously (``Kernel(config)`` is not a coroutine); a
reload resolves in a worker thread so a slow Vault does not stall the loop.
With ``[secrets] refresh_s`` a task re-reads the references; when a value
differs from the one in effect (or one no longer resolves) it runs a normal
reload, so a rotated secret reaches ``on_config_changed`` — or the reload is
rejected and the old config kept, as for any other change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from organelle.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from organelle.secrets._resolve import Key, Resolution

__all__ = ["Secrets"]

log = logging.getLogger("organelle.config")
_PREFIX = "secret://"


class Reloading(Protocol):
    """What re-reading needs of the kernel (the façade hands itself over)."""

    config: dict[str, Any]
    config_loader: Callable[[], dict[str, Any]] | None

    async def reload_config(self, config: Mapping[str, Any] | None = None) -> Any:
        """Apply a config, or raise ``ConfigError`` and keep the old one."""
        ...


def _mentions(config: Mapping[str, Any]) -> bool:
    """Whether a config has a ``[secrets]`` section or a reference (none: nothing imported)."""
    return "secrets" in config or _scan(config)


def _scan(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any(_scan(v) for v in value.values())
    if isinstance(value, list):
        return any(_scan(v) for v in value)
    return isinstance(value, str) and value.startswith(_PREFIX)


def _at(config: Mapping[str, Any], key: Key) -> Any:
    node: Any = config
    for part in key:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


class Secrets:
    """Resolution and rotation for one kernel.

    Args:
        base: the config file's folder (``secret://file/`` paths are relative to it).
    """

    def __init__(self, base: Path) -> None:
        self.base = base
        self.source: dict[str, Any] = {}  # the config as written, references unresolved
        self.refresh_s: float | None = None
        self._last: Resolution | None = None  # the latest resolution, adopted once applied
        self._task: asyncio.Task[None] | None = None

    def resolve(self, config: Mapping[str, Any]) -> Resolution | None:
        """Resolve ``config``'s references (``None``: it has none).

        Raises:
            ConfigError: a reference that cannot be resolved (key and reference named).
        """
        if not _mentions(config):
            return None
        from organelle.secrets._resolve import resolve_config

        return resolve_config(config, base_path=self.base)

    def load(self, config: dict[str, Any]) -> dict[str, Any]:
        """At construction: keep ``config`` as the source and return it resolved."""
        self._last = self.resolve(config)
        self.adopt(config)
        return config if self._last is None else self._last.config

    async def resolve_async(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """``resolve`` in a worker thread; the resolved config (``config`` when it has none)."""
        self._last = None
        if not _mentions(config):
            return dict(config)
        self._last = await asyncio.to_thread(self.resolve, config)
        return dict(config) if self._last is None else self._last.config

    def adopt(self, source: Mapping[str, Any]) -> None:
        """The config last resolved took effect: re-read its references from now on."""
        self.source = dict(source)
        self.refresh_s = None if self._last is None else self._last.refresh_s

    def start(self, kernel: Reloading) -> None:
        """Start re-reading (every ``refresh_s``, once set) when the config has references."""
        if self._task is None and _mentions(self.source):
            self._task = asyncio.get_running_loop().create_task(
                self._run(kernel), name="organelle-secrets-refresh"
            )

    async def stop(self) -> None:
        """Stop re-reading (before modules stop)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self, kernel: Reloading) -> None:
        while True:
            await asyncio.sleep(self.refresh_s or 1.0)  # off: look again whether a reload set it
            if self.refresh_s is not None:
                await self.refresh(kernel)

    async def refresh(self, kernel: Reloading) -> bool:
        """Re-read the references; reload when one changed or fails. Whether it reloaded."""
        try:
            source = kernel.config_loader() if kernel.config_loader is not None else self.source
            fresh = await asyncio.to_thread(self.resolve, source)
        except ConfigError:
            changed = True  # the reload reports it (logged, announced) and keeps the old config
        else:
            refs = {} if fresh is None else fresh.refs
            changed = fresh is not None and any(
                _at(fresh.config, key) != _at(kernel.config, key) for key in refs
            )
        if not changed:
            return False
        with contextlib.suppress(ConfigError):  # logged and announced by the reload itself
            await kernel.reload_config(None if kernel.config_loader is not None else self.source)
        return True
