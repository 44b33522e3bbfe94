"""Modules the transport tests run on their nodes."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from organelle import Module, OrganelleError, on, rpc
from organelle.context import context


class OutOfCoffeeError(OrganelleError):
    """A user error with its own code: must come back as this class."""

    code = "test.out_of_coffee"


class Item(msgspec.Struct):
    sku: str
    qty: int


class Server(Module):
    name = "server"
    version = "1.2.3"

    async def on_start(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.sleeping = asyncio.Event()  # set once a ``sleep`` call is being served

    @rpc
    async def echo(self, sku: str, qty: int = 1) -> Item:
        return Item(sku=sku, qty=qty)

    @rpc
    async def blob(self, data: bytes) -> bytes:
        return data[::-1]

    @rpc
    async def fail(self, kind: str) -> None:
        if kind == "coffee":
            raise OutOfCoffeeError("no coffee left", details={"left": 0})
        raise ValueError("plain bug")

    @rpc
    async def sleep(self, seconds: float) -> float | None:
        remaining = context().remaining_s()
        self.sleeping.set()
        await asyncio.sleep(seconds)
        return remaining

    @rpc
    async def whoami(self) -> dict[str, Any]:
        ctx = context()
        principal = ctx.principal
        return {
            "request_id": ctx.request_id,
            "correlation_id": ctx.correlation_id,
            "causation_id": ctx.causation_id,
            "meta": ctx.meta,
            "principal": None if principal is None else principal.id,
            "roles": [] if principal is None else sorted(principal.roles),
            "remaining": ctx.remaining_s(),
        }

    @rpc(roles=("admin",))
    async def admin_only(self) -> str:
        return "ok"

    @rpc
    async def relay(self) -> dict[str, Any]:
        """A nested call to another node: ids and deadline must follow."""
        mine = context()
        theirs: dict[str, Any] = await self.call("peer.whoami")
        return {"mine": mine.request_id, "corr": mine.correlation_id, "theirs": theirs}

    @on("shop.*.created")
    async def on_created(self, event: dict[str, Any]) -> None:
        self.seen.append(event)


class Peer(Module):
    name = "peer"
    version = "1.0.0"

    async def on_start(self) -> None:
        self.balanced: list[dict[str, Any]] = []
        self.broadcast: list[dict[str, Any]] = []

    @rpc
    async def whoami(self) -> dict[str, Any]:
        ctx = context()
        return {
            "request_id": ctx.request_id,
            "correlation_id": ctx.correlation_id,
            "causation_id": ctx.causation_id,
            "remaining": ctx.remaining_s(),
        }

    @on("peer.work")
    async def work(self, event: dict[str, Any]) -> None:
        self.balanced.append(event)

    @on("peer.news", delivery="broadcast")
    async def news(self, event: dict[str, Any]) -> None:
        self.broadcast.append(event)
