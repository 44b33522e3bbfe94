"""The optional C hot path (``organelle._speedups``), when it is built and not disabled.

Built by the package's build hook where a compiler is found. ``ORGANELLE_PURE=1``
in the environment makes organelle ignore it (the pure Python path behaves the
same; the test suite runs the core tests both ways).
"""

from __future__ import annotations

import os
from types import ModuleType

__all__ = ["speedups"]


def _load() -> ModuleType | None:
    if os.environ.get("ORGANELLE_PURE", "") not in ("", "0"):
        return None
    try:
        from organelle import _speedups
    except ImportError:
        return None
    return _speedups


speedups = _load()
