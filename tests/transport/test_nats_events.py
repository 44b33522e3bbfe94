"""Events over NATS: wildcards, balanced vs broadcast delivery, never twice."""

from __future__ import annotations

from organelle import Kernel, Module, on
from organelle.testing import eventually

from .conftest import Config
from .nodes import Peer, Server


async def test_wildcards_and_local_subscribers_get_each_event_once(config: Config) -> None:
    async with Kernel([Server], config()) as kernel:
        server = kernel.module("server")
        await kernel.emit("shop.tea.created", {"n": 1})
        await kernel.emit("shop.tea.deleted", {"n": 2})  # does not match shop.*.created
        await kernel.emit("shop.created", {"n": 3})  # '*' is exactly one token
        await kernel.emit("shop.cake.created", {"n": 4})
        await kernel.drain()  # every event came back over NATS and ran, duplicates too
        assert server.seen == [{"n": 1}, {"n": 4}]  # type: ignore[attr-defined]


async def test_balanced_goes_to_one_instance_broadcast_to_all(config: Config) -> None:
    async with (
        Kernel([Peer], config()) as one,
        Kernel([Peer], config()) as two,
        Kernel([Server], config()) as emitter,
    ):
        peers = [one.module("peer"), two.module("peer")]
        for i in range(100):
            await emitter.emit("peer.work", {"i": i})
            await emitter.emit("peer.news", {"i": i})

        def total(attr: str) -> list[int]:
            return [len(getattr(p, attr)) for p in peers]

        await eventually(lambda: sum(total("balanced")) == 100 and total("broadcast") == [100, 100])
        # A PING round trip on each receiver's own connection: whatever the server
        # routed to it before (a duplicate included) has been read and handled.
        await one.drain()
        await two.drain()
        assert sum(total("balanced")) == 100
        assert min(total("balanced")) > 10  # both instances took a share
        assert total("broadcast") == [100, 100]
        got = sorted(e["i"] for p in peers for e in p.balanced)  # type: ignore[attr-defined]
        assert got == list(range(100))


class Chain(Module):
    """Each event on chain.step emits the next one, over NATS, until n reaches 0."""

    name = "chain"

    async def on_start(self) -> None:
        self.steps: list[int] = []

    @on("chain.step")
    async def step(self, n: int) -> None:
        self.steps.append(n)
        if n > 0:
            await self.emit("chain.step", n - 1)


async def test_drain_waits_for_own_events_over_nats_and_what_they_cause(config: Config) -> None:
    async with Kernel([Server, Chain], config()) as kernel:
        server = kernel.module("server")
        chain = kernel.module("chain")
        assert isinstance(chain, Chain)
        for i in range(50):
            await kernel.emit("shop.tea.created", {"n": i})
        await kernel.emit("chain.step", 5)
        await kernel.drain()  # no sleeping, no polling: every event came back and ran
        assert [e["n"] for e in server.seen] == list(range(50))  # type: ignore[attr-defined]
        assert chain.steps == [5, 4, 3, 2, 1, 0]
