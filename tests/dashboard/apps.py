"""Modules the dashboard tests watch, and a kernel + gateway + client to watch them with."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pydantic

from organelle import Kernel, Module, NotFoundError, cron, job, on, rpc
from organelle.gateway import Gateway

API = "/_dashboard/api"


class Calc(Module):
    """RPC methods that succeed (after suspending, so they are timed) and fail."""

    name = "calc"
    version = "2.1.0"

    class Config(pydantic.BaseModel):
        db_password: pydantic.SecretStr = pydantic.SecretStr("hunter2")
        api_token: str = "plain-token-value"  # noqa: S105 - a test value, masked by its name
        precision: int = 2

    @rpc
    async def add(self, a: int, b: int) -> int:
        await asyncio.sleep(0)  # suspends: the call is timed
        return a + b

    @rpc
    async def lookup(self, key: str) -> str:
        raise NotFoundError(f"no key {key!r}")


class Audit(Module):
    """Listens to calc events; fails on the ones marked bad."""

    name = "audit"
    version = "1.0.0"
    requires = ("calc",)

    @on("calc.*")
    async def record(self, payload: dict[str, Any]) -> None:
        if payload.get("bad"):
            raise RuntimeError("audit log is full")


class Feed(Module):
    """Background work that crashes on demand: the module turns ``failed`` until restarted."""

    name = "feed"
    version = "0.3.0"

    @rpc
    async def break_down(self) -> None:
        self.spawn(self._lose())

    async def _lose(self) -> None:
        raise RuntimeError("feed connection lost")


class Mail(Module):
    """Durable jobs: one that works, one that always fails, one on a schedule."""

    name = "mail"
    version = "1.0.0"

    @job(max_attempts=3)
    async def send(self, to: str) -> str:
        return f"sent to {to}"

    @job(max_attempts=1)
    async def bounce(self, to: str, password: str = "") -> None:
        raise ConnectionError(f"smtp refused {to}")

    @cron("0 3 * * *")
    async def digest(self) -> None:
        return None


def config(
    dashboard: Mapping[str, Any] | None = None,
    gateway: Mapping[str, Any] | None = None,
    **kernel: Any,
) -> dict[str, Any]:
    gw: dict[str, Any] = {"port": 0, **(gateway or {})}
    if dashboard is not None:
        gw["dashboard"] = dict(dashboard)
    return {"kernel": {"storage": "memory://", **kernel}, "modules": {"gateway": gw}}


@asynccontextmanager
async def serve(
    *modules: Any,
    dashboard: Mapping[str, Any] | None = None,
    gateway: Mapping[str, Any] | None = None,
    **kernel: Any,
) -> AsyncIterator[tuple[Kernel, httpx.AsyncClient]]:
    """``modules`` plus a gateway on a free port with ``dashboard`` config, and a client."""
    gw = Gateway()
    k = Kernel([*modules, gw], config(dashboard, gateway, **kernel))
    async with k, httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
        yield k, client


ON: dict[str, Any] = {"enabled": True}
