"""Metrics: lean accumulators exported through a per-kernel registry, bounded labels."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from organelle import Kernel, Module, NotFoundError, job, on, rpc
from organelle.observability.metrics import Metrics
from organelle.transport._memory_broker import broker_named


class Svc(Module):
    name = "svc"

    @rpc
    async def ok(self, n: int) -> int:
        await self.store.put(f"k{n}", n)
        await self.emit(f"item.{n}.seen", n)
        return n

    @rpc
    async def missing(self) -> None:
        raise NotFoundError("nothing here")

    @rpc
    async def crash(self) -> None:
        raise RuntimeError("bug")

    @on("item.*.seen")
    async def seen(self, n: int) -> None:
        if n == 2:
            raise ValueError("bad item")


def samples(metrics: Metrics) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


async def run_calls(kernel: Kernel) -> None:
    for n in range(4):
        await kernel.call("svc.ok", n=n)
    for target in ("svc.missing", "svc.crash"):
        with pytest.raises(Exception):  # noqa: B017
            await kernel.call(target)
    await kernel.drain()


async def test_rpc_events_storage_and_states() -> None:
    kernel = Kernel([Svc], {"kernel": {"storage": "memory://"}})
    metrics = Metrics(kernel)
    metrics.install()
    async with kernel:
        await run_calls(kernel)
        got = samples(metrics)
    assert ({"method": "svc.ok"}, 4.0) in got["organelle_rpc_calls_total"]
    errors = got["organelle_rpc_errors_total"]
    assert ({"method": "svc.missing", "code": "organelle.not_found"}, 1.0) in errors
    assert ({"method": "svc.crash", "code": "organelle.internal"}, 1.0) in errors
    buckets = [
        v
        for labels, v in got["organelle_rpc_duration_seconds_bucket"]
        if labels["method"] == "svc.ok"
    ]
    assert buckets == sorted(buckets)
    assert buckets[-1] == 4.0
    assert got["organelle_events_emitted_total"] == [({"pattern": "item.*.seen"}, 4.0)]
    deliveries = {lab["outcome"]: v for lab, v in got["organelle_event_deliveries_total"]}
    assert deliveries == {"handled": 3.0, "failed": 1.0, "skipped": 0.0, "duplicate": 0.0}
    puts = [
        v for lab, v in got["organelle_storage_op_duration_seconds_count"] if lab["op"] == "put"
    ]
    assert puts == [4.0]
    states = {lab["state"]: v for lab, v in got["organelle_module_state"] if lab["module"] == "svc"}
    assert states["active"] == 1.0
    # no id ever becomes a label: no key, no raw topic
    values = {v for rows in got.values() for labels, _ in rows for v in labels.values()}
    assert not values & {"k0", "k1", "item.0.seen", "item.1.seen"}


class Once(Module):
    name = "once"

    @on("pay.done", idempotent=True)
    async def apply(self, payload: dict[str, int]) -> None:
        pass


async def test_duplicates_an_idempotent_handler_skipped_are_counted() -> None:
    kernel = Kernel([Once], {"kernel": {"storage": "memory://"}})
    metrics = Metrics(kernel)
    metrics.install()
    async with kernel:
        for _ in range(3):  # one event, delivered three times (the same id)
            await kernel._dispatcher.python_emit("pay.done", {"n": 1}, event_id="pay-7")
        await kernel.drain()
        got = samples(metrics)
    deliveries = {lab["outcome"]: v for lab, v in got["organelle_event_deliveries_total"]}
    assert (deliveries["handled"], deliveries["duplicate"]) == (1.0, 2.0)


async def test_each_kernel_has_its_own_registry() -> None:
    k1, k2 = Kernel([Svc]), Kernel([Svc])
    m1, m2 = Metrics(k1), Metrics(k2)
    m1.install()
    m2.install()
    assert m1.registry is not m2.registry
    async with k1, k2:
        with pytest.raises(NotFoundError):
            await k1.call("svc.missing")
    # Every served method is listed (zeros included); only k1's counters moved.
    assert 'organelle_rpc_calls_total{method="svc.missing"} 1.0' in m1.render().decode()
    assert 'organelle_rpc_calls_total{method="svc.missing"} 0.0' in m2.render().decode()


class Chores(Module):
    name = "chores"

    @job(max_attempts=2, backoff_s=0.01, backoff_max_s=0.01)
    async def sweep(self, fail: bool) -> None:
        if fail:
            raise ValueError("broken broom")


async def test_jobs_transport_and_queue_depth_come_from_the_listener() -> None:
    kernel = Kernel([Chores], {"kernel": {"jobs": "memory://"}})
    metrics = Metrics(kernel)
    metrics.install()
    async with kernel:
        await kernel.enqueue("chores.sweep", fail=False)
        await kernel.enqueue("chores.sweep", fail=True)
        async with asyncio.timeout(10):
            while metrics.jobs.get(("chores.sweep", "dead")) != 1:
                await asyncio.sleep(0.01)
        kernel.connection_event("disconnected")
        kernel.connection_event("reconnected")
        await metrics.refresh()
        assert metrics.queue_depth == await kernel.jobs.backlog()  # read at scrape time
        got = samples(metrics)
    events = {lab["event"]: v for lab, v in got["organelle_jobs_total"]}
    # the failing job: failed, retried, failed again, dead
    assert events == {"enqueued": 2.0, "succeeded": 1.0, "failed": 2.0, "retried": 1.0, "dead": 1.0}
    assert got["organelle_job_duration_seconds_count"] == [({"job": "chores.sweep"}, 3.0)]
    assert got["organelle_transport_reconnects_total"] == [({}, 1.0)]
    assert got["organelle_transport_disconnects_total"] == [({}, 1.0)]


async def test_uninstalled_metrics_stop_counting() -> None:
    kernel = Kernel([Svc], {"kernel": {"storage": "memory://"}})
    metrics = Metrics(kernel)
    metrics.install()
    async with kernel:
        await kernel.call("svc.ok", n=1)
        metrics.uninstall()
        assert kernel.call_stats is None  # nobody asks for the counters any more
        await kernel.call("svc.ok", n=2)
        await kernel.drain()
    got = samples(metrics)
    assert got["organelle_events_emitted_total"] == [({"pattern": "item.*.seen"}, 1.0)]
    puts = [
        v for lab, v in got["organelle_storage_op_duration_seconds_count"] if lab["op"] == "put"
    ]
    assert puts == [1.0]


async def test_unrouted_topics_share_one_label() -> None:
    kernel = Kernel([Svc])
    metrics = Metrics(kernel)
    metrics.install()
    async with kernel:
        for i in range(5):
            await kernel.emit(f"nobody.listens.{i}", i)
    assert samples(metrics)["organelle_events_emitted_total"] == [({"pattern": "(unrouted)"}, 5.0)]


async def test_stream_consumers_are_counted(tmp_path: Any) -> None:
    from organelle import consume

    class Reader(Module):
        name = "reader"

        @consume("ledger", max_attempts=1)
        async def read(self, n: int) -> None:
            if n == 2:
                raise ValueError("bad record")

    kernel = Kernel([Reader], {"kernel": {"streams": f"sqlite:///{tmp_path}/s.db"}})
    metrics = Metrics(kernel)
    metrics.install()
    async with kernel:
        for n in range(4):
            await kernel.append("ledger", n)
        await kernel.drain_streams(timeout_s=10)
        await metrics.refresh()
        got = samples(metrics)
    outcomes = {lab["outcome"]: v for lab, v in got["organelle_stream_records_total"]}
    assert outcomes == {"done": 3.0, "failed": 1.0, "dead": 1.0, "lost": 0.0, "duplicates": 0.0}
    assert got["organelle_stream_in_flight"] == [({"stream": "ledger", "group": "reader"}, 0.0)]
    assert got["organelle_stream_lag"] == [({"stream": "ledger", "group": "reader"}, 0.0)]


async def test_stream_lag_counts_records_a_group_has_not_handled(tmp_path: Any) -> None:
    from organelle import consume

    release = asyncio.Event()

    class Slow(Module):
        name = "slow"

        @consume("orders", group="billing")
        async def read(self, n: int) -> None:
            await release.wait()

    kernel = Kernel([Slow], {"kernel": {"streams": f"sqlite:///{tmp_path}/s.db"}})
    metrics = Metrics(kernel)
    metrics.install()
    async with kernel:
        for n in range(5):
            await kernel.append("orders", n)
        await metrics.refresh()
        behind = samples(metrics)["organelle_stream_lag"]
        release.set()
        await kernel.drain_streams(timeout_s=10)
        await metrics.refresh()
        caught_up = samples(metrics)["organelle_stream_lag"]
    # Records in flight are not acknowledged yet: they still count as lag.
    assert behind == [({"stream": "orders", "group": "billing"}, 5.0)]
    assert caught_up == [({"stream": "orders", "group": "billing"}, 0.0)]


async def test_events_the_transport_rejects_are_counted_by_reason() -> None:
    name = f"metrics-{uuid.uuid4().hex[:8]}"
    security = {"require_signatures": True, "keys": {"k1": "a-shared-secret-for-metrics"}}
    config = {"transport": f"memory://{name}", "transport_options": {"security": security}}
    kernel = Kernel([Svc], {"kernel": {**config, "storage": "memory://"}})
    metrics = Metrics(kernel)
    metrics.install()
    async with kernel:
        for member, module, handler in broker_named(name).deliveries("item.a.seen"):
            member.take_event(module, handler, "item.a.seen", b'{"n": 1}', {})
        got = samples(metrics)
    assert got["organelle_events_rejected_total"] == [({"reason": "unsigned"}, 1.0)]


class Shaky(Module):
    name = "shaky"

    @rpc(idempotent=True, policy={"retry": {"attempts": 2, "backoff_s": 0.001}})
    async def once(self) -> None:
        raise RuntimeError("always")

    @rpc(policy={"breaker": {"failures": 1, "reset_s": 60}, "fallback_value": "spare"})
    async def breaks(self) -> None:
        raise RuntimeError("always")


async def test_call_policies_breakers_retries_and_fallbacks() -> None:
    kernel = Kernel([Shaky], {"kernel": {"storage": "memory://"}})
    metrics = Metrics(kernel)
    metrics.install()
    async with kernel:
        with pytest.raises(Exception):  # noqa: B017
            await kernel.call("shaky.once")
        with pytest.raises(Exception):  # noqa: B017
            await kernel.call("shaky.breaks")  # opens the breaker: not a fallback error
        assert await kernel.call("shaky.breaks") == "spare"  # refused: the fallback answers
        got = samples(metrics)
    state = {lab["state"]: v for lab, v in got["organelle_breaker_state"]}
    assert state == {"closed": 0.0, "open": 1.0, "half_open": 0.0}
    opened = [v for lab, v in got["organelle_breaker_transitions_total"] if lab["state"] == "open"]
    assert opened == [1.0]
    assert got["organelle_policy_retries_total"] == [({"target": "shaky.once"}, 1.0)]
    assert got["organelle_policy_fallbacks_total"] == [({"target": "shaky.breaks"}, 1.0)]
