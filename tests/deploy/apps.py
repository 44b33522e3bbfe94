"""Modules of the app the deploy tests render: jobs, a stream consumer, a port of its own."""

from __future__ import annotations

from pydantic import BaseModel

from organelle import Module, consume, job, rpc


class Billing(Module):
    name = "billing"

    @job
    async def charge(self, order: str) -> None:
        self.log.info("charged %s", order)

    @consume("orders", group="billing")
    async def on_order(self, order: str) -> None:
        await self.enqueue("billing.charge", order=order)


class Ledger(Module):
    name = "ledger"

    @consume("orders")  # the group defaults to the module's name
    async def record(self, order: str) -> None:
        self.log.info("recorded %s", order)


class Front(Module):
    """Listens on a port of its own, as the gateway does (``host`` and ``port`` in its config)."""

    name = "front"

    class Config(BaseModel):
        host: str = "127.0.0.1"
        port: int = 8080
        db_password: str = ""

    @rpc
    async def hello(self) -> str:
        return "hello"
