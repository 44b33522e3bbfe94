"""Reloading the config when its file changes (watchfiles).

The folder is watched, not the file: editors and config managers replace a
file by renaming a new one over it, which ends a watch on the old inode. A
burst of writes is one change (watchfiles debounces), and a change that does
not parse is rejected by the reload like any other bad config.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from organelle.errors import ConfigError

if TYPE_CHECKING:
    from organelle.kernel import Kernel

__all__ = ["watch_config"]

log = logging.getLogger("organelle.config")


async def watch_config(
    kernel: Kernel,
    path: str | os.PathLike[str],
    *,
    stop: asyncio.Event | None = None,
    debounce_ms: int = 200,
    force_polling: bool | None = None,
) -> None:
    """Call ``kernel.reload_config()`` each time ``path`` changes, until ``stop`` is set."""
    from watchfiles import awatch

    target = _resolve(path)

    def relevant(_change: object, changed: str) -> bool:
        return _resolve(changed) == target

    log.info("watching %s for config changes", target)
    async for _changes in awatch(
        target.parent,
        watch_filter=relevant,
        stop_event=stop,
        debounce=debounce_ms,
        step=50,
        force_polling=force_polling,
        recursive=False,
    ):
        with contextlib.suppress(ConfigError):  # logged and announced by the reload itself
            await kernel.reload_config()


def _resolve(path: str | os.PathLike[str]) -> Path:
    return Path(path).resolve()
