"""Small apps the CLI tests run: healthy, cyclic, failing, slow to stop."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

from organelle import Kernel, Module, consume, cron, job, route, rpc


class Greeter(Module):
    name = "greeter"
    version = "1.4.0"

    class Config(BaseModel):
        greeting: str = "hello"
        times: int = 1

    async def on_start(self) -> None:
        self.log.info("greeter ready: %s x%d", self.config.greeting, self.config.times)

    async def on_stop(self) -> None:
        self.log.info("greeter stopped cleanly")

    @rpc
    async def greet(self, who: str) -> str:
        return f"{self.config.greeting} {who}"


class Audience(Module):
    name = "audience"
    version = "0.3.0"
    requires = ("greeter>=1,<2",)


class CycleA(Module):
    name = "cycle-a"
    requires = ("cycle-b",)


class CycleB(Module):
    name = "cycle-b"
    requires = ("cycle-a",)


class Broken(Module):
    name = "broken"

    async def on_start(self) -> None:
        raise RuntimeError("disk on fire")


class SlowStop(Module):
    name = "slow"

    async def on_stop(self) -> None:
        self.log.info("slow: stopping takes a while")
        await asyncio.sleep(30)


kernel = Kernel([Greeter, Audience])
not_a_kernel = 42


def make_kernel() -> Kernel:
    return Kernel([Greeter, Audience], {"modules": {"greeter": {"greeting": "hi"}}})


def make_nothing() -> int:
    return 1


def make_badly() -> Kernel:
    raise ZeroDivisionError("division by zero")


class Busy(Module):
    """A module with one of each handler ``organelle check`` lists."""

    name = "busy"

    @job(max_attempts=4)
    async def rebuild(self, n: int) -> int:
        return n

    @cron("*/5 * * * *")
    async def sweep(self) -> None:
        return None

    @consume("orders")
    async def tally(self, record: dict[str, object]) -> None:
        return None

    @route.get("/busy/{n}")
    async def show(self, n: int) -> int:
        return n
