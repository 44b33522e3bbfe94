"""Bounded waiting for the transport tests (events cross a broker: no drain() reaches them)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def eventually(check: Callable[[], bool], timeout_s: float = 5.0, what: str = "") -> None:
    """Poll ``check`` until true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout_s}s: {what or check}")
        await asyncio.sleep(0.01)
