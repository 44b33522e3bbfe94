"""The orchestrating process of the saga crash test: started, SIGKILLed and restarted by it.

``python _app.py <config-json> <sagas> <seed>`` starts sagas ``0 … n-1``
(key ``o<i>``, idempotent, so a restart starts nothing twice) and runs them.
Each saga has four steps on the ``stock`` module, whose effects are Store
rows written in one transaction with their marker:

* ``do.<step key>`` — the action's effect; an action finding it returns at
  once (the idempotent answer), else it may fail: permanently for a fifth of
  the steps (chosen by the step key), transiently for a tenth of attempts;
* ``n_do.<key>`` / ``n_undo.<key>`` — how often each effect was applied (must be 1);
* ``undo.<step key>`` — the compensation's effect, written once; a
  compensation of a step with no ``do`` row is recorded as ``bad.<key>``;
* ``replays.do`` / ``replays.undo`` count the calls of a step whose effect
  was already there (a kill between the effect and the saga's record).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import sys
from typing import Any

from organelle import Kernel, Module, rpc
from organelle.jobs import Backoff
from organelle.sagas import Saga, Step, step_key

STEPS = ("a", "b", "c", "d")
FAIL_SHARE = 0.2
TRANSIENT_SHARE = 0.1
FAST = Backoff(base_s=0.02, max_s=0.2, jitter=0.2)


def fails_for_good(key: str) -> bool:
    """A fifth of the steps, chosen by their stable key (so every retry agrees)."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < FAIL_SHARE


class Stock(Module):
    name = "stock"

    async def on_start(self) -> None:
        self.rng = random.Random()

    @rpc
    async def apply(self, order: int) -> str:
        key = step_key()
        assert key is not None
        if await self.store.get(f"do.{key}") is not None:
            await self.store.incr("replays.do")
            return key  # done before a crash: the same answer again
        if fails_for_good(key):
            raise RuntimeError(f"order {order}: refused")
        if self.rng.random() < TRANSIENT_SHARE:
            raise ConnectionError("flaky")
        async with self.store.transaction() as tx:
            if await tx.get(f"do.{key}") is None:
                await tx.put(f"do.{key}", order)
                await tx.incr(f"n_do.{key}")
        return key

    @rpc
    async def undo(self, order: int) -> None:
        key = step_key()
        assert key is not None
        if self.rng.random() < TRANSIENT_SHARE:
            raise ConnectionError("flaky")
        async with self.store.transaction() as tx:
            if await tx.get(f"do.{key}") is None:
                await tx.put(f"bad.{key}", order)
            elif await tx.get(f"undo.{key}") is None:
                await tx.put(f"undo.{key}", order)
                await tx.incr(f"n_undo.{key}")
            else:
                await tx.incr("replays.undo")


class Orders(Module):
    name = "orders"
    requires = ("stock",)

    order = Saga(
        "order",
        steps=[
            Step(
                name,
                action="stock.apply",
                compensate="stock.undo",
                max_attempts=3,
                compensate_attempts=12,
                backoff=FAST,
                timeout_s=10,
            )
            for name in STEPS
        ],
        lease_s=2.0,
    )

    async def on_start(self) -> None:
        self.spawn(self.start_all())

    async def start_all(self) -> None:
        if await self.store.get("started") is None:
            n = int(sys.argv[2])
            for first in range(0, n, 50):
                await asyncio.gather(
                    *(
                        self.sagas.start("order", {"order": i}, key=f"o{i}")
                        for i in range(first, min(n, first + 50))
                    )
                )
            await self.store.put("started", n)
        print("started", flush=True)


async def main(config: dict[str, Any]) -> None:
    async with Kernel([Stock, Orders], config):
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
