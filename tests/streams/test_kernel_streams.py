"""Durable streams inside a kernel: @consume groups, Module.append, ordering, retries, dead letters."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

from organelle import ConfigError, Kernel, Module, consume, context, rpc
from organelle.errors import DefinitionError
from organelle.testing.servers import NatsServer


class Placed(msgspec.Struct):
    order: str
    n: int


def cfg(tmp_path: Path, **kernel: Any) -> dict[str, Any]:
    return {
        "kernel": {
            "streams": f"sqlite:///{tmp_path}/streams.db",
            "stream_specs": {"orders": {"partitions": 3}},
            **kernel,
        }
    }


class Shop(Module):
    name = "shop"

    @rpc
    async def place(self, order: str, n: int) -> list[int]:
        part, off = await self.append("orders", Placed(order=order, n=n), key=order)
        return [part, off]


class Billing(Module):
    name = "billing"

    async def on_start(self) -> None:
        self.seen: list[tuple[str, int]] = []
        self.causes: list[str | None] = []

    @consume("orders")
    async def bill(self, event: Placed) -> None:
        self.seen.append((event.order, event.n))
        self.causes.append(context().causation_id)


class Audit(Module):
    name = "audit"

    async def on_start(self) -> None:
        self.count = 0

    @consume("orders", group="audit-log")
    async def record(self, event: dict[str, Any]) -> None:
        self.count += 1


async def test_every_group_gets_every_record_in_key_order(tmp_path: Path) -> None:
    async with Kernel([Shop, Billing, Audit], cfg(tmp_path)) as kernel:
        for n in range(20):
            await kernel.call("shop.place", order=f"o{n % 4}", n=n)
        await kernel.drain_streams(timeout_s=10)
        billing = kernel.module("billing")
        audit = kernel.module("audit")
        assert isinstance(billing, Billing)
        assert isinstance(audit, Audit)
        assert sorted(n for _, n in billing.seen) == list(range(20))
        for order in ("o0", "o1", "o2", "o3"):  # one key, one partition: in order
            ns = [n for o, n in billing.seen if o == order]
            assert ns == sorted(ns)
        assert audit.count == 20
        assert all(c is not None for c in billing.causes)  # linked to the appending call
        info = await kernel.streams.info("orders")
        assert info.spec.partitions == 3
        assert {g.group for g in info.groups} == {"billing", "audit-log"}
        assert all(g.lag == 0 for g in info.groups)
        stats = {s.group: s for s in kernel.consumers()}
        assert stats["billing"].done == 20


class Flaky(Module):
    name = "flaky"

    async def on_start(self) -> None:
        self.tries: dict[int, int] = {}
        self.done: list[int] = []

    @consume("jobs-ish", max_attempts=3, backoff_s=0.01)
    async def handle(self, n: int) -> None:
        self.tries[n] = self.tries.get(n, 0) + 1
        if n == 1 and self.tries[n] < 2:
            raise RuntimeError("transient")
        if n == 2:
            raise ValueError("poison")
        self.done.append(n)


async def test_failures_are_retried_then_dead_lettered_without_stalling(tmp_path: Path) -> None:
    async with Kernel([Flaky], cfg(tmp_path)) as kernel:
        for n in range(4):
            await kernel.append("jobs-ish", n)
        await kernel.drain_streams(timeout_s=10)
        mod = kernel.module("flaky")
        assert isinstance(mod, Flaky)
        assert mod.done == [0, 1, 3]
        assert mod.tries[1] == 2
        assert mod.tries[2] == 3
        (letter,) = await kernel.streams.dead_letters("flaky", "jobs-ish")
        assert "ValueError: poison" in str(letter["error"])
        (stats,) = kernel.consumers()
        assert (stats.done, stats.dead, stats.failed) == (3, 1, 4)


async def test_a_memory_log_serves_groups_within_the_process() -> None:
    config = {"kernel": {"streams": "memory://", "stream_specs": {"orders": {"partitions": 3}}}}
    async with Kernel([Shop, Billing, Flaky], config) as kernel:
        for n in range(12):
            await kernel.call("shop.place", order=f"o{n % 3}", n=n)
        for n in range(4):
            await kernel.append("jobs-ish", n)
        await kernel.drain_streams(timeout_s=10)
        billing, flaky = kernel.module("billing"), kernel.module("flaky")
        assert isinstance(billing, Billing)
        assert isinstance(flaky, Flaky)
        assert sorted(n for _, n in billing.seen) == list(range(12))
        assert flaky.done == [0, 1, 3]
        (letter,) = await kernel.streams.dead_letters("flaky", "jobs-ish")
        assert "ValueError: poison" in str(letter["error"])
        info = await kernel.streams.info("orders")
        assert all(g.lag == 0 for g in info.groups)


async def test_records_survive_a_restart_and_consumption_resumes(tmp_path: Path) -> None:
    async with Kernel([Shop], cfg(tmp_path)) as producer:
        for n in range(5):
            await producer.call("shop.place", order="a", n=n)
    async with Kernel([Billing], cfg(tmp_path)) as consumer:
        await consumer.drain_streams(timeout_s=10)
        billing = consumer.module("billing")
        assert isinstance(billing, Billing)
        assert [n for _, n in billing.seen] == [0, 1, 2, 3, 4]
    async with Kernel([Billing], cfg(tmp_path)) as again:  # committed: not delivered twice
        await again.drain_streams(timeout_s=10)
        billing = again.module("billing")
        assert isinstance(billing, Billing)
        assert billing.seen == []


async def test_without_a_log_append_says_why(tmp_path: Path) -> None:
    async with Kernel([Shop], {"kernel": {}}) as kernel:
        with pytest.raises(ConfigError, match="no stream log"):
            await kernel.append("orders", 1)


def test_consume_is_checked_where_it_is_written() -> None:
    with pytest.raises(DefinitionError, match="stream name"):
        consume("bad name")
    with pytest.raises(DefinitionError, match="async def"):

        class Bad(Module):
            name = "bad"

            @consume("s")  # type: ignore[type-var]
            def sync(self, x: int) -> None: ...

    with pytest.raises(DefinitionError, match="two @consume"):

        class Twice(Module):
            name = "twice"

            @consume("s")
            async def a(self, x: int) -> None: ...

            @consume("s")
            async def b(self, x: int) -> None: ...

        Kernel([Twice])


async def test_bad_stream_specs_fail_the_start(tmp_path: Path) -> None:
    bad = cfg(tmp_path)
    bad["kernel"]["stream_specs"] = {"orders": {"partitions": 0}}
    with pytest.raises(ConfigError, match="stream_specs.orders"):
        async with Kernel([Billing], bad):
            pass


async def test_two_nodes_share_a_group_over_jetstream(nats_server: NatsServer) -> None:
    prefix = f"K{uuid.uuid4().hex[:8].upper()}"
    config = {
        "kernel": {
            "streams": f"{nats_server.url}?prefix={prefix}",
            "stream_specs": {"orders": {"partitions": 4}},
        }
    }
    async with Kernel([Shop], config) as shop, Kernel([Billing], config) as one:
        async with Kernel([Billing], config) as two:
            for n in range(40):
                await shop.call("shop.place", order=f"o{n % 8}", n=n)
            await one.drain_streams(timeout_s=20)
            await two.drain_streams(timeout_s=20)
            members = [one.module("billing"), two.module("billing")]
            seen = [s for m in members for s in m.seen]  # type: ignore[attr-defined]
            assert sorted(n for _, n in seen) == list(range(40))  # each record once
            for m in members:  # within a member, each key's records stay in order
                for order in {o for o, _ in m.seen}:  # type: ignore[attr-defined]
                    ns = [n for o, n in m.seen if o == order]  # type: ignore[attr-defined]
                    assert ns == sorted(ns)
