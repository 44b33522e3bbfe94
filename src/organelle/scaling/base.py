"""The scaler port: read and set a target's replica count; ``MemoryScaler`` beside it.

A target is whatever the backend scales by name — a Deployment for
``KubernetesScaler``. Two async methods, so a backend for another platform
(Nomad, ECS, a process supervisor) is a small class.
"""

from __future__ import annotations

from typing import Protocol

from organelle.errors import NotFoundError

__all__ = ["MemoryScaler", "Scaler"]


class Scaler(Protocol):
    """Reads and sets replica counts."""

    async def replicas(self, target: str) -> int:
        """The target's desired replica count now. Raises ``NotFoundError``."""
        ...

    async def scale(self, target: str, replicas: int) -> None:
        """Set the target's replica count. Raises ``NotFoundError``."""
        ...


class MemoryScaler:
    """Counts in a dict, every change kept in ``history`` (for tests and dry runs)."""

    def __init__(self, counts: dict[str, int] | None = None) -> None:
        self.counts = dict(counts or {})
        self.history: list[tuple[str, int]] = []

    async def replicas(self, target: str) -> int:
        """The count set last (``NotFoundError`` for an unknown target)."""
        try:
            return self.counts[target]
        except KeyError:
            raise NotFoundError(f"no scaling target {target!r}") from None

    async def scale(self, target: str, replicas: int) -> None:
        """Set and record the count."""
        if target not in self.counts:
            raise NotFoundError(f"no scaling target {target!r}")
        self.counts[target] = replicas
        self.history.append((target, replicas))
