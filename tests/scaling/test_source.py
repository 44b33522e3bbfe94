"""OpsMetrics reads real nodes' /metrics: shared figures counted once, p99 and CPU per interval."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from organelle import Kernel, Module, consume, job, rpc
from organelle.ops import Ops
from organelle.scaling import OpsMetrics, quantile


class Worker(Module):
    name = "worker"

    @job
    async def crunch(self, n: int) -> None:
        pass

    @consume("events")
    async def read(self, n: int) -> None:
        pass

    @rpc
    async def slow(self) -> int:
        await asyncio.sleep(0.02)
        return 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_two_nodes_sampled_together(tmp_path: Path) -> None:
    config = {
        "jobs": f"sqlite:///{tmp_path}/jobs.db",  # one queue both nodes see
        "streams": f"sqlite:///{tmp_path}/streams.db",
        "storage": "memory://",
        "job_worker": False,  # jobs stay queued: a backlog to see
    }
    a = Kernel([Worker], {"kernel": config})
    b = Kernel([Worker], {"kernel": config})
    async with Ops(a, port=0) as ops_a, Ops(b, port=0) as ops_b, a, b:
        urls = [f"http://127.0.0.1:{ops.port}/metrics" for ops in (ops_a, ops_b)]
        urls.append(f"http://127.0.0.1:{_closed_port()}/metrics")  # a node that is gone
        source = OpsMetrics(urls, modules=["worker"], timeout_s=2)
        for n in range(7):
            await a.enqueue("worker.crunch", n=n)
        await asyncio.gather(*(a.call("worker.slow") for _ in range(20)))
        first = await source.sample(time.monotonic())
        deadline = time.process_time() + 0.3
        while time.process_time() < deadline:  # bounded: 0.3 s of CPU
            pass
        await asyncio.gather(*(b.call("worker.slow") for _ in range(10)))
        second = await source.sample(time.monotonic())
        third = await source.sample(time.monotonic())
    assert first.queue_depth == 7  # both nodes report 7: counted once
    assert first.stream_lag == 0
    assert first.rpc_p99_s is not None
    assert 0.01 < first.rpc_p99_s <= 0.05
    assert first.cpu is None  # a rate needs two samples
    assert second.rpc_p99_s is not None  # only the 10 calls since the first sample
    assert 0.01 < second.rpc_p99_s <= 0.05
    assert second.cpu is not None
    assert second.cpu > 0.1
    assert third.rpc_p99_s is None  # no call since: no latency to report


def test_quantile_interpolates_like_prometheus() -> None:
    buckets = [(0.1, 50.0), (0.5, 90.0), (1.0, 100.0), (float("inf"), 100.0)]
    assert quantile(0.5, buckets) == pytest.approx(0.1)
    assert quantile(0.7, buckets) == pytest.approx(0.3)  # halfway through (0.1, 0.5]
    assert quantile(0.99, buckets) == pytest.approx(0.95)
    assert quantile(0.99, [(0.1, 0.0), (float("inf"), 0.0)]) is None
    assert quantile(0.99, [(0.1, 1.0), (float("inf"), 10.0)]) == 0.1  # in +Inf: the last bound
