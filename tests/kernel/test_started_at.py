"""``Kernel.started_at``: the wall-clock time ``start()`` finished, ``None`` while stopped."""

from __future__ import annotations

import time

from organelle import Kernel, Module


class Idle(Module):
    name = "idle"


def started(kernel: Kernel) -> float | None:
    """Read afresh: mypy would keep an earlier ``is None`` narrowing across ``await``."""
    return kernel.started_at


async def test_started_at_is_set_by_start_and_cleared_by_stop() -> None:
    kernel = Kernel([Idle])
    assert started(kernel) is None
    before = time.time()
    await kernel.start()
    first = started(kernel)
    assert first is not None
    assert before <= first <= time.time()
    await kernel.start()  # already running: unchanged
    assert started(kernel) == first
    await kernel.stop()
    assert started(kernel) is None
    await kernel.start()  # a restart gets a new time
    again = started(kernel)
    assert again is not None
    assert again >= first
    await kernel.stop()
    assert started(kernel) is None


def accepting(kernel: Kernel) -> bool:
    return kernel.accepting


async def test_accepting_and_transport_are_public() -> None:
    kernel = Kernel([Idle])
    assert not accepting(kernel)
    assert kernel.transport.solo  # memory://: one process, one node
    async with kernel:
        assert accepting(kernel)
    assert not accepting(kernel)
