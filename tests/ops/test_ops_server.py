"""The ops HTTP server: probes, /metrics in Prometheus format, bad requests."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from organelle import Kernel, Module, on, rpc
from organelle.health import CheckResult, Status
from organelle.ops import Ops
from organelle.testing import eventually


class Shop(Module):
    name = "shop"

    @rpc
    async def buy(self, sku: str) -> str:
        await self.emit(f"order.{sku}.placed", {"sku": sku})
        return sku

    @on("order.*.placed")
    async def placed(self, event: dict[str, Any]) -> None:
        pass


async def request(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


async def get(port: int, path: str) -> tuple[int, bytes]:
    status, _, body = await request(port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return status, body


@dataclass
class Switch:
    name: str = "database"
    required: bool = True
    ok: bool = True

    async def check(self) -> CheckResult:
        return CheckResult(status=Status.HEALTHY if self.ok else Status.UNHEALTHY)


async def test_probes_and_metrics_over_http() -> None:
    kernel = Kernel([Shop])
    async with Ops(kernel, port=0) as ops:
        assert ops.port
        status, body = await get(ops.port, "/health/ready")
        assert status == 503
        assert json.loads(body)["reason"] == "not started"
        async with kernel:
            for sku in ("a1", "b2", "c3"):
                await kernel.call("shop.buy", sku=sku)
            await kernel.drain()
            status, body = await get(ops.port, "/health/live")
            assert (status, json.loads(body)["status"]) == (200, "alive")
            status, body = await get(ops.port, "/health/ready")
            assert status == 200
            assert json.loads(body)["checks"]["module:shop"]["status"] == "healthy"
            status, body = await get(ops.port, "/metrics")
            assert status == 200
            families = {f.name: f for f in text_string_to_metric_families(body.decode())}
            calls = families["organelle_rpc_calls"].samples
            assert [(s.labels, s.value) for s in calls] == [({"method": "shop.buy"}, 3.0)]
            emitted = families["organelle_events_emitted"].samples
            # three raw topics, one bounded label: the pattern they route to
            assert [(s.labels, s.value) for s in emitted] == [({"pattern": "order.*.placed"}, 3.0)]
            hist = families["organelle_rpc_duration_seconds"]
            count = [s for s in hist.samples if s.name.endswith("_count")]
            assert count[0].value == 3.0
            states = {
                s.labels["state"]: s.value for s in families["organelle_module_state"].samples
            }
            assert states["active"] == 1.0
            status, body = await get(ops.port, "/config")
            assert json.loads(body)["kernel"]["ops_host"] == "127.0.0.1"


async def test_readiness_follows_a_required_check_within_one_probe_period() -> None:
    probe_period_s = 0.5
    kernel = Kernel([Shop])
    switch = Switch()
    async with Ops(kernel, port=0, metrics=False) as ops, kernel:
        ops.health.add(switch)
        port = ops.port
        assert port
        assert (await get(port, "/health/ready"))[0] == 200

        async def not_ready() -> None:
            status, body = await get(port, "/health/ready")
            assert status == 503
            assert json.loads(body)["reason"] == "required check failing: database"

        async def ready() -> None:
            assert (await get(port, "/health/ready"))[0] == 200

        for _ in range(3):
            switch.ok = False
            await eventually(not_ready, timeout_s=probe_period_s)  # by the next probe
            assert (await get(port, "/health/live"))[0] == 200  # liveness never follows it
            switch.ok = True
            await eventually(ready, timeout_s=probe_period_s)
        status, _ = await get(port, "/metrics")
        assert status == 404  # metrics off


async def test_bad_requests_get_4xx_and_the_server_goes_on() -> None:
    kernel = Kernel([Shop])
    async with Ops(kernel, port=0, metrics=False) as ops:
        port = ops.port
        assert port
        assert (await get(port, "/nope"))[0] == 404
        assert (await request(port, b"POST /metrics HTTP/1.1\r\n\r\n"))[0] == 405
        assert (await request(port, b"garbage\r\n\r\n"))[0] == 400
        assert (await request(port, b"GET / HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n"))[
            0
        ] == 400
        status, headers, body = await request(port, b"HEAD /health/live HTTP/1.1\r\n\r\n")
        assert (status, body) == (200, b"")
        assert int(headers["Content-Length"]) > 0
        # a client that connects and says nothing does not block others
        _, idle = await asyncio.open_connection("127.0.0.1", port)
        assert (await get(port, "/health/live"))[0] == 200
        idle.close()


async def test_ops_server_is_off_by_default() -> None:
    kernel = Kernel([Shop])
    async with Ops(kernel) as ops:
        assert ops.port is None
        assert ops.metrics is not None
