"""``Core``: what the kernel's parts read of the kernel they belong to.

The job host, stream host and runtime changes are handed the kernel and type
it against this Protocol, so no part imports the façade (``_kernel.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from organelle.config.settings import KernelSettings
    from organelle.kernel._dispatch import CallNext
    from organelle.kernel._lifecycle import Record
    from organelle.module import Module

__all__ = ["Core"]


class Core(Protocol):
    """The shared state of one kernel, as its parts see it."""

    settings: KernelSettings
    config: dict[str, Any]
    _records: dict[str, Record]
    job_spans: list[Callable[[str, str | None], str | None]]

    @property
    def running(self) -> bool:
        """Whether the kernel has started and not yet stopped."""
        ...

    @property
    def _chain(self) -> CallNext | None:
        """The middleware onion, ``None`` when there is none."""
        ...

    def module(self, name: str) -> Module:
        """The live instance of module ``name``."""
        ...
