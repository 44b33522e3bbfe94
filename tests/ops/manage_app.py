"""A small app for the management CLI tests: a job that fails once, then works."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel

from organelle import Module, consume, job, rpc


class Chores(Module):
    name = "chores"
    version = "1.0.0"

    class Config(BaseModel):
        kick_on_start: bool = False

    runs: ClassVar[int] = 0
    logged: ClassVar[int] = 0

    async def on_start(self) -> None:
        if self.config.kick_on_start:
            await self.enqueue("chores.sweep", note="start")
            for n in range(3):
                await self.kernel.append("chores-log", {"n": n})

    @rpc
    async def kick(self, note: str) -> str:
        """Enqueue a sweep; the first one of the process fails for good (one attempt)."""
        return await self.enqueue("chores.sweep", note=note)

    @rpc
    async def runs_so_far(self) -> int:
        return Chores.runs

    @job(max_attempts=1)
    async def sweep(self, note: str) -> None:
        Chores.runs += 1
        if Chores.runs == 1:
            raise RuntimeError(f"the broom broke on {note}")

    @consume("chores-log", idempotent=False)  # a replay runs it again
    async def log_entry(self, record: dict[str, int]) -> None:
        Chores.logged += 1
        self.log.info("log entry %d", record["n"])
