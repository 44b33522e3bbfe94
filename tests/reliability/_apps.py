"""The modules the reliability tests run in child processes (and in the test process).

``python _apps.py consumer CONFIG_JSON`` runs a kernel with ``Counter`` (a
``@consume`` handler that counts what it handles in the Store) until killed;
``python _apps.py producer CONFIG_JSON N`` runs a kernel whose ``Producer``
commits outbox transactions ``0 .. N-1``, reading where it got to from the
Store, so a restarted producer continues. Each prints ``ready`` (and the
producer ``done``) on stdout.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any, NoReturn

import msgspec

from organelle import Kernel, Module, consume, event, on

STREAM = "rel"
FAIL_EVERY = 7  # the producer rolls back every 7th transaction's first attempt on purpose


@event("rel.tick", key=("n",))
class Tick(msgspec.Struct):
    """One numbered event; its id is derived from ``n`` (a retry has the same id)."""

    n: int
    pid: int = 0  # who sent it (not part of the key)


class Counter(Module):
    """Counts the ticks it consumes: one Store increment per event, inbox on (the default)."""

    name = "counter"

    @consume(STREAM, lease_s=1.0)
    async def count(self, tick: Tick) -> None:
        await self.store.incr("count")


class Receiver(Module):
    """Records which transaction's event it got (idempotent), from a stream or an emit."""

    name = "receiver"

    async def _got(self, tick: Tick) -> None:
        await self.store.incr(f"got.{tick.n}")
        await self.store.put(f"pid.{tick.n}", tick.pid)
        await self.store.incr("total")

    @consume(STREAM, lease_s=1.0)
    async def from_stream(self, tick: Tick) -> None:
        await self._got(tick)

    @on(Tick, idempotent=True)
    async def from_emit(self, tick: Tick) -> None:
        await self._got(tick)


class RolledBackError(Exception):
    """Raised inside a transaction to roll it back."""


def roll_back() -> NoReturn:
    raise RolledBackError


class Producer(Module):
    """Commits transactions ``progress .. n-1``: a Store row, the progress and one event."""

    name = "producer"

    async def produce(self, n: int, how: str) -> None:
        progress = await self.store.get("progress")
        i = 0 if progress is None else int(progress.value)
        pid = os.getpid()
        while i < n:
            fail = i % FAIL_EVERY == 0 and await self.store.get(f"failed.{i}") is None
            if fail:  # recorded first, so the retry after it commits
                await self.store.put(f"failed.{i}", pid)
            try:
                async with self.transaction() as tx:
                    await tx.store.put(f"row.{i}", pid)
                    await tx.store.put("progress", i + 1)
                    tick = Tick(n=i, pid=-pid if fail else pid)  # a leak would show
                    if how == "emit":
                        await tx.emit(tick)
                    else:
                        await tx.append(STREAM, tick, key=str(i))
                    if fail:
                        roll_back()
            except RolledBackError:
                continue
            i += 1


async def main(role: str, config: dict[str, Any], *args: str) -> None:
    roles: dict[str, list[type[Module]]] = {"consumer": [Counter], "producer": [Producer]}
    modules = roles[role]
    async with Kernel(modules, config) as kernel:
        print("ready", flush=True)
        if role == "producer":
            producer: Producer = kernel.module("producer")  # type: ignore[assignment]
            await producer.produce(int(args[0]), args[1])
            await kernel._outbox.settle()
            print("done", flush=True)
        await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], json.loads(sys.argv[2]), *sys.argv[3:]))
