"""A module the failover tests run on several nodes."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from organelle import Module, rpc


class Work(Module):
    name = "work"
    version = "1.0.0"

    @rpc
    async def job(self, i: int) -> dict[str, Any]:
        await asyncio.sleep(0.005)  # long enough that a kill catches some calls in flight
        return {"i": i, "pid": os.getpid()}
