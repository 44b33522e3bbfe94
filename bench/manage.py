"""The management API's cost beside its floors, over HTTP and over NATS.

    python bench/manage.py            # full run (~30 s; starts its own nats-server)
    python bench/manage.py --quick    # a few seconds

Subjects, measured in one run, rounds interleaved so drift hits all alike:
* HTTP floor — ``GET /health/live`` on the same ops server: a request on a
  fresh connection (the server answers ``Connection: close``) with no work;
* ``GET /manage/modules`` — the same plus the API key check (one SHA-256),
  the route match and the operation;
* ``GET /manage/modules?node=B`` — forwarded to the other node through its
  ``ops`` module over NATS;
* NATS floor — ``kernel.call`` of a trivial RPC served by the other node;
* ``Cluster.call(B, "modules")`` — a management operation on the other node.
Sequential requests (one in flight), latency per request.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

# bench/ holds scripts named like stdlib modules (http.py): look there last, not first.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent / "src"))
sys.path.append(str(_BENCH))

import httpx  # noqa: E402
from _common import Row, median, percentile, publish  # noqa: E402

from organelle import Kernel, Module, rpc  # noqa: E402
from organelle.auth.api_keys import hash_key  # noqa: E402
from organelle.ops import Ops  # noqa: E402
from organelle.ops.cluster import Cluster  # noqa: E402
from organelle.testing import eventually  # noqa: E402
from organelle.testing.servers import NatsServer  # noqa: E402

KEY = "bench-ops-key"


class Echo(Module):
    name = "echo"

    @rpc
    async def ping(self) -> int:
        return 1


def _config(url: str, prefix: str, node: str) -> dict[str, Any]:
    return {
        "kernel": {
            "node": node,
            "transport": url,
            "transport_options": {"prefix": prefix, "heartbeat_s": 0.2},
            "storage": "memory://",
        },
        "ops": {"auth": {"api_keys": {hash_key(KEY): {"id": "bench", "roles": ["ops"]}}}},
    }


async def _time(fn: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - t)
    return samples


async def main(quick: bool) -> None:
    n, rounds = (50, 2) if quick else (300, 5)
    with NatsServer() as nats:
        prefix = f"b{uuid.uuid4().hex[:8]}"
        a = Kernel([], _config(nats.url, prefix, "node-a"))
        b = Kernel([Echo], _config(nats.url, prefix, "node-b"))
        async with Ops(a, port=0) as ops, a, Ops(b, port=None), b:
            cluster = Cluster(a)

            async def ready() -> None:
                assert cluster.nodes() == ["node-a", "node-b"]

            await eventually(ready, timeout_s=10)
            await a.wait_for("echo", 10)
            base = f"http://127.0.0.1:{ops.port}"
            async with httpx.AsyncClient(base_url=base, headers={"x-api-key": KEY}) as http:
                subjects: dict[str, Callable[[], Awaitable[Any]]] = {
                    "HTTP floor: GET /health/live": lambda: http.get("/health/live"),
                    "GET /manage/modules": lambda: http.get("/manage/modules"),
                    "GET /manage/modules?node=B (via NATS)": lambda: http.get(
                        "/manage/modules", params={"node": "node-b"}
                    ),
                    "NATS floor: kernel.call echo.ping on B": lambda: a.call("echo.ping"),
                    'Cluster.call(B, "modules")': lambda: cluster.call("node-b", "modules"),
                }
                samples: dict[str, list[float]] = {k: [] for k in subjects}
                for fn in subjects.values():  # warm up connections and caches
                    await _time(fn, 20)
                for _ in range(rounds):
                    for name, fn in subjects.items():
                        samples[name] += await _time(fn, n)
    rows = []
    floors = {
        "HTTP": "HTTP floor: GET /health/live",
        "NATS": "NATS floor: kernel.call echo.ping on B",
    }
    for name, got in samples.items():
        floor = floors["NATS" if name.startswith(("NATS", "Cluster")) else "HTTP"]
        mid = median(got)
        rows.append(
            Row(
                case="management call",
                subject=name,
                value=1 / mid,
                unit="req/s",
                baseline="" if name == floor else floor.split(":")[0],
                ratio=None if name == floor else median(samples[floor]) / mid,
                p50_us=mid * 1e6,
                p99_us=percentile(got, 99) * 1e6,
            )
        )
    publish(
        "manage",
        "Management API (ops server and NATS)",
        rows,
        notes=(
            "One request in flight; ratio = floor's median latency / subject's (1.00× = as "
            "cheap as the floor). Measured on a shared 2-core machine with other work running, "
            f"{rounds} interleaved rounds of {n} requests: read the ratios, not the absolute "
            "figures. The management operations are for people and scripts, not hot paths; "
            "the figure says what a call costs beyond the transport it rides on.\n"
        ),
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    asyncio.run(main(parser.parse_args().quick))
