"""Modules the isolation tests run in child processes (importable by name, as isolation needs)."""

from __future__ import annotations

import asyncio
import ctypes
import os
from typing import Any

from pydantic import BaseModel

from organelle import Module, on, rpc
from organelle.plugins import Manifest


class Worker(Module):
    """Misbehaves on request: segfault, runaway loop, allocation past its limit."""

    name = "worker"
    requires = ("ledger",)

    class Config(BaseModel):
        greeting: str = "hello"

    @rpc
    async def hello(self, who: str) -> str:
        return f"{self.config.greeting} {who} from {os.getpid()}"

    @rpc
    async def pid(self) -> int:
        return os.getpid()

    @rpc
    async def nap(self, s: float) -> float:
        await asyncio.sleep(s)
        return s

    @rpc
    async def segfault(self) -> None:
        ctypes.string_at(0)

    @rpc
    async def spin(self) -> None:
        while True:
            pass

    @rpc
    async def allocate(self, mb: int) -> int:
        return len(bytearray(mb << 20))

    @rpc
    async def record(self, amount: int) -> int:
        """Calls back into the parent's module, and emits there."""
        total: int = await self.call("ledger.add", amount=amount)
        await self.emit("worker.recorded", {"amount": amount, "total": total})
        return total

    async def health(self) -> dict[str, Any]:
        return {"status": "degraded", "detail": "tired", "pid": os.getpid()}

    @on("ledger.changed")
    async def changed(self, payload: dict[str, Any]) -> None:
        await self.call("ledger.note", text=f"worker saw {payload['total']}")


class GuardedWorker(Worker):
    """A plugin-style module whose manifest lets it call ``ledger.add`` but not emit."""

    manifest = Manifest(rpc=("ledger.add",), subscribe=("ledger.changed",))
