"""The transactional outbox and the atomic inbox, on one node (memory and SQLite Stores)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from organelle import Envelope, Kernel, Module, consume, event, job, on
from organelle.envelope import wire_name
from organelle.kernel import _outbox
from organelle.kernel._outbox import PREFIX
from organelle.testing import eventually


@event("ob.order.placed", key=("order_id",))
class OrderPlaced(msgspec.Struct):
    order_id: str
    total: int


class Shop(Module):
    name = "shop"

    def __init__(self) -> None:
        self.placed: list[Envelope[OrderPlaced]] = []
        self.records: list[Any] = []
        self.jobs: list[str] = []
        self.fail_once = False

    @on(OrderPlaced)
    async def on_placed(self, env: Envelope[OrderPlaced]) -> None:
        self.placed.append(env)

    @consume("ob-orders")
    async def on_record(self, placed: OrderPlaced) -> None:
        self.records.append(placed.order_id)

    @job
    async def ship(self, order_id: str) -> None:
        self.jobs.append(order_id)

    @on("ob.paid", idempotent=True)
    async def on_paid(self, payload: dict[str, Any]) -> None:
        await self.store.incr("paid")
        if self.fail_once:
            self.fail_once = False
            raise RuntimeError("after the write: the transaction rolls back")

    async def place(self, order_id: str, *, fail: bool = False) -> str:
        async with self.transaction() as tx:
            await tx.store.put(f"order.{order_id}", {"total": 5})
            await self.store.incr("orders")  # a plain call joins the transaction
            event_id = await tx.emit(OrderPlaced(order_id=order_id, total=5))
            await tx.append("ob-orders", OrderPlaced(order_id=order_id, total=5), key=order_id)
            await tx.enqueue("shop.ship", order_id=order_id)
            if fail:
                raise RuntimeError("changed my mind")
        return event_id


@pytest.fixture(params=["memory", "sqlite"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    storage = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/store.db"
    return {
        "kernel": {
            "storage": storage,
            "jobs": f"sqlite:///{tmp_path}/jobs.db",
            "streams": f"sqlite:///{tmp_path}/streams.db",
            "outbox_interval_s": 0.05,
        }
    }


async def settle(kernel: Kernel) -> None:
    await kernel._outbox.settle()
    await kernel.drain()
    await kernel.drain_streams()
    await kernel.drain_jobs()


async def test_a_committed_transaction_sends_everything_once(config: dict[str, Any]) -> None:
    async with Kernel([Shop], config) as kernel:
        shop: Shop = kernel.module("shop")  # type: ignore[assignment]
        event_id = await shop.place("o-1")
        await settle(kernel)
        assert [e.id for e in shop.placed] == [event_id]
        assert shop.placed[0].data == OrderPlaced(order_id="o-1", total=5)
        assert shop.records == ["o-1"]
        assert shop.jobs == ["o-1"]
        assert (await shop.store.get("order.o-1")).value == {"total": 5}  # type: ignore[union-attr]
        assert (await shop.store.get("orders")).value == 1  # type: ignore[union-attr]
        assert (await kernel.store.scan(PREFIX)).items == []  # rows deleted once sent


async def test_a_rolled_back_transaction_sends_nothing(config: dict[str, Any]) -> None:
    async with Kernel([Shop], config) as kernel:
        shop: Shop = kernel.module("shop")  # type: ignore[assignment]
        with pytest.raises(RuntimeError, match="changed my mind"):
            await shop.place("o-2", fail=True)
        await settle(kernel)
        assert (shop.placed, shop.records, shop.jobs) == ([], [], [])
        assert await shop.store.get("order.o-2") is None
        assert await shop.store.get("orders") is None
        assert (await kernel.store.scan(PREFIX)).items == []


async def test_rows_a_crash_left_are_relayed_with_their_ids(config: dict[str, Any]) -> None:
    async with Kernel([Shop], config) as kernel:
        shop: Shop = kernel.module("shop")  # type: ignore[assignment]
        # What a transaction leaves when the process dies right after its commit.
        async with kernel.store.transaction() as stx:
            await stx.put(
                PREFIX + "0190d0d0-0000-7000-8000-000000000001",
                {
                    "kind": "emit",
                    "target": "ob.order.placed",
                    "payload": {"order_id": "o-3", "total": 7},
                    "type": "ob.order.placed@1",
                    "id": "fixed-id-3",
                },
            )
        await kernel._outbox.relay()
        await settle(kernel)
        # Sent once, by this call or by the periodic relay (every 0.05 s here) if it came first.
        assert kernel._outbox.relayed == 1
        assert [(e.id, e.data) for e in shop.placed] == [
            ("fixed-id-3", OrderPlaced(order_id="o-3", total=7))
        ]
        assert await kernel._outbox.relay() == 0  # sent once, then deleted


async def test_the_periodic_relay_finds_leftovers(config: dict[str, Any]) -> None:
    async with Kernel([Shop], config) as kernel:
        shop: Shop = kernel.module("shop")  # type: ignore[assignment]
        await kernel.store.put(
            PREFIX + "0190d0d0-0000-7000-8000-000000000002",
            {"kind": "enqueue", "target": "shop.ship", "payload": {"order_id": "o-4"}},
        )
        await eventually(lambda: shop.jobs == ["o-4"])


async def test_an_idempotent_handler_and_its_inbox_row_commit_together(
    config: dict[str, Any],
) -> None:
    async with Kernel([Shop], config) as kernel:
        shop: Shop = kernel.module("shop")  # type: ignore[assignment]
        shop.fail_once = True
        paid = {"invoice": "i-1"}
        await kernel.emit("ob.paid", paid)  # fails after its write: both roll back
        await kernel.drain()
        assert await shop.store.get("paid") is None
        stats = {s.handler: s for s in kernel.subscriptions()}["on_paid"]
        assert stats.failed == 1
        # The same event again (a keyless event is a new id each emit, so send one id twice).
        env_id = "pay-1"
        for _ in range(3):
            await kernel._dispatcher.python_emit("ob.paid", paid, event_id=env_id)
        await kernel.drain()
        assert (await shop.store.get("paid")).value == 1  # type: ignore[union-attr]
        assert (stats.delivered, stats.duplicates) == (1, 2)


async def test_an_outbox_block_inside_a_rolled_back_savepoint_sends_nothing(
    config: dict[str, Any],
) -> None:
    async with Kernel([Shop], config) as kernel:
        shop: Shop = kernel.module("shop")  # type: ignore[assignment]
        async with kernel.store.transaction():
            with pytest.raises(KeyError):
                async with kernel.store.transaction():  # a savepoint
                    await shop.place("o-5")  # its block ends normally, inside the savepoint
                    raise KeyError
            await shop.place("o-6")
        await settle(kernel)
        assert [e.data.order_id for e in shop.placed] == ["o-6"]
        assert (shop.records, shop.jobs) == (["o-6"], ["o-6"])
        assert await shop.store.get("order.o-5") is None
        assert (await kernel.store.scan(PREFIX)).items == []


async def test_a_sweep_leaves_committed_rows_that_wait_for_the_relay_task(
    config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Sent rows are deleted only by settle() here: a batched delete during the
    # sweep's scan (a slow machine) would make a sent row look unsent to it.
    monkeypatch.setattr(_outbox, "DELETE_AFTER_S", 60.0)
    async with Kernel([Shop], config) as kernel:
        shop: Shop = kernel.module("shop")  # type: ignore[assignment]
        rows: list[tuple[str, dict[str, Any]]] = []
        for n in range(3):  # as three commits leave them: in the Store, handed to the relay
            placed = OrderPlaced(order_id=f"w-{n}", total=n)
            row = {
                "kind": "emit",
                "target": "ob.order.placed",
                "payload": {"order_id": placed.order_id, "total": n},
                "type": wire_name(placed),
                "id": f"0190d0d0-0000-7000-8000-00000000010{n}",
            }
            row_id = f"0190d0d0-0000-7000-8000-00000000020{n}"
            await kernel.store.put(PREFIX + row_id, row)
            rows.append((row_id, row))
        kernel._outbox._soon(rows)  # the relay task has not run yet
        assert await kernel._outbox.relay() == 0  # the sweep leaves them to it
        await settle(kernel)
        assert [e.data.order_id for e in shop.placed] == ["w-0", "w-1", "w-2"]  # once each
        assert (await kernel.store.scan(PREFIX)).items == []
