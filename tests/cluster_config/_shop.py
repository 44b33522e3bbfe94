"""The module every cluster config test runs: a config, a check and a change hook that can refuse.

``Shop(refuse_limit=…)`` refuses a limit above it in ``on_config_check`` (a
dry-run "no"); ``Shop(fail_region=…)`` fails ``on_config_changed`` for that
region (a failure to apply). ``Shop(hang_region=…)`` hangs applying it, until
killed. Each node writes what it runs on to the store (``seen.<node>``), so a
test reads every node's config, also from other processes.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, SecretStr

from organelle import Module
from organelle.kernel import kernel_of


class ShopConfig(BaseModel):
    limit: int = 10
    region: str = "eu"
    token: SecretStr = SecretStr("")


class Shop(Module):
    name = "shop"
    Config = ShopConfig

    def __init__(
        self, *, refuse_limit: int = 1_000, fail_region: str = "", hang_region: str = ""
    ) -> None:
        super().__init__()
        self.refuse_limit = refuse_limit
        self.fail_region = fail_region
        self.hang_region = hang_region
        self.changes: list[tuple[int, int]] = []

    async def on_start(self) -> None:
        await self._seen()

    async def on_config_check(self, old: ShopConfig, new: ShopConfig) -> None:
        if new.limit > self.refuse_limit:
            raise ValueError(f"limit {new.limit} is over {self.refuse_limit} on this node")

    async def on_config_changed(self, old: ShopConfig, new: ShopConfig) -> None:
        if new.region and new.region == self.hang_region:
            await asyncio.Event().wait()
        if new.region and new.region == self.fail_region:
            raise RuntimeError(f"cannot move to {new.region}")
        self.changes.append((old.limit, new.limit))
        await self._seen()

    async def _seen(self) -> None:
        config: ShopConfig = self.config
        await self.kernel.store.put(
            f"seen.{kernel_of(self).transport.node}",
            {"limit": config.limit, "region": config.region},
        )
