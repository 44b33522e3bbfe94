"""The networked curves of ``bench/scale.py``: the NATS registry and idle gateway clients."""

from __future__ import annotations

from _common import Row


async def registry_curve(quick: bool) -> list[Row]:
    return []


async def clients_curve(quick: bool) -> list[Row]:
    return []
