"""The networked curves of ``bench/scale.py``: the NATS registry and idle gateway clients.

* registry: one real node (``NatsRegistry`` + ``Announcer``) among N - 1
  simulated ones (one connection writing their heartbeats, 10 modules each);
  discovery = from its start until its view lists every node; traffic = its
  own connection's message and byte counters at the server (``/connz``) over
  whole heartbeat periods, divided by the heartbeats it made: what it sends
  (its requests: one put a beat, whatever the size) and, in all, with the
  other nodes' heartbeats its watch is pushed (one per node per period: every
  node knows every node).
* clients: memory of the serving process per idle SSE / WebSocket client.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Any

from _common import Row

HEARTBEAT_S = 1.0


def connz(port: int, name: str) -> dict[str, Any]:
    """The NATS server's counters of the connection called ``name``."""
    url = f"http://127.0.0.1:{port}/connz?limit=100000"
    with urllib.request.urlopen(url, timeout=5) as reply:
        data: dict[str, Any] = json.load(reply)
    return next(c for c in data["connections"] if c.get("name") == name)


async def registry_size(url: str, http_port: int, n: int, periods: int) -> dict[str, float]:
    """One real node among ``n - 1`` simulated ones: its discovery time and its traffic."""
    from organelle.transport._nats_options import NatsOptions
    from organelle.transport.nats_connect import Server
    from organelle.transport.registry import Announcer, ModuleEntry, NatsRegistry, NodeInfo

    host, port = url.removeprefix("nats://").split(":")
    prefix = f"reg{n}"

    def options(node: str) -> NatsOptions:
        return NatsOptions(
            node=node,
            prefix=prefix,
            servers=(Server(host, int(port)),),
            heartbeat_s=HEARTBEAT_S,
            registry_ttl_s=5 * HEARTBEAT_S,
        )

    modules = {
        f"mod{j}": ModuleEntry(version="1.0.0", methods=["get", "put"], events=["x.y"])
        for j in range(10)
    }
    beats = 0

    class Counted(NatsRegistry):
        async def put(self, info: Any) -> None:
            nonlocal beats
            beats += 1
            await super().put(info)

    # The simulated nodes: one connection writing each one's heartbeat, as a node does.
    sim = NatsRegistry(options("simulated"))
    await sim.open()

    async def simulate() -> None:
        while True:
            now = time.time()
            await asyncio.gather(
                *(
                    sim.put(
                        NodeInfo(node=f"node{i}", ts=now, ttl_s=5 * HEARTBEAT_S, modules=modules)
                    )
                    for i in range(1, n)
                )
            )
            await asyncio.sleep(HEARTBEAT_S)

    beating = asyncio.get_running_loop().create_task(simulate())
    registry = Counted(options("node0"))
    node = Announcer(registry, lambda: modules)
    try:
        await asyncio.sleep(2 * HEARTBEAT_S)  # every simulated node listed
        await registry.open()
        began = time.perf_counter()
        node.start()  # a node joining: until its own view lists the whole cluster
        deadline = began + 60
        while len(node.view) < n:
            assert time.perf_counter() < deadline, "the registry never listed every node"
            await asyncio.sleep(0.001)
        discovery_s = time.perf_counter() - began
        await asyncio.sleep(HEARTBEAT_S)
        name = "organelle-registry:node0"
        before, first = connz(http_port, name), beats
        await asyncio.sleep(periods * HEARTBEAT_S)
        after, made = connz(http_port, name), beats - first
    finally:
        beating.cancel()
        await node.stop()
        await registry.close()
        await sim.close()
    # The server's view: "in" is what the node sent (its requests), "out" what it was sent.
    sent = after["in_msgs"] - before["in_msgs"]
    pushed = after["out_msgs"] - before["out_msgs"]
    data = (after["in_bytes"] - before["in_bytes"]) + (after["out_bytes"] - before["out_bytes"])
    return {
        "discovery_s": discovery_s,
        "sent": sent / made,
        "msgs": (sent + pushed) / made,
        "bytes": data / made,
        "beats": made,
    }


async def registry_curve(quick: bool) -> list[Row]:
    from organelle.testing.servers import NatsServer

    sizes = [5, 15] if quick else [10, 30, 100]
    periods = 2 if quick else 5
    server = NatsServer().start()
    try:
        results = {n: await registry_size(server.url, server.http_port, n, periods) for n in sizes}
    finally:
        server.close()
    rows: list[Row] = []
    for n, r in results.items():
        rows += [
            Row(
                f"registry discovery, {n} nodes",
                "a joining node's view lists every node",
                r["discovery_s"] * 1e3,
                unit="ms",
            ),
            Row(
                f"registry requests per heartbeat, {n} nodes",
                "messages one node sends",
                r["sent"],
                unit="msgs",
                baseline="its own put: 1 msg",
                ratio=r["sent"],
                extra={"heartbeats": r["beats"]},
            ),
            Row(
                f"registry traffic per heartbeat, {n} nodes",
                "one node's messages in + out",
                r["msgs"],
                unit="msgs",
                baseline="its own put: 2 msgs",
                ratio=r["msgs"] / 2,
                extra={"bytes": r["bytes"], "heartbeats": r["beats"]},
            ),
            Row(
                f"registry bytes per heartbeat, {n} nodes",
                "one node's bytes in + out",
                r["bytes"] / 1024,
                unit="KiB",
            ),
        ]
    lo, hi = sizes[0], sizes[-1]
    rows.append(
        Row(
            f"registry requests per heartbeat, {hi} vs {lo} nodes",
            "cost ratio, largest / smallest size",
            results[hi]["sent"] / results[lo]["sent"],
            unit="×",
            target="≤ 1.2× (flat)",
        )
    )
    rows.append(
        Row(
            f"registry traffic per heartbeat, {hi} vs {lo} nodes",
            "cost ratio, largest / smallest size (pushed heartbeats included)",
            results[hi]["msgs"] / results[lo]["msgs"],
            unit="×",
            target=f"≤ {hi / lo:g}× (one push per node's beat)",
        )
    )
    return rows


# -- idle SSE / WebSocket clients ----------------------------------------------------


def serve(kind: str, port: int) -> None:
    """The server process: the gateway (``organelle``) or bare Starlette (``floor``).

    Prints ``ready``, then answers each ``rss`` line on stdin with its RSS in KiB.
    """
    import sys

    async def main() -> None:
        import uvicorn

        if kind == "organelle":
            from organelle import Kernel
            from organelle.gateway import Gateway

            gateway = {"port": port, "docs": False, "stream": {"topics": ["x.>"]}}
            kernel = Kernel([Gateway], {"modules": {"gateway": gateway}})
            await kernel.start()
        else:
            from starlette.applications import Starlette
            from starlette.responses import StreamingResponse
            from starlette.routing import Route, WebSocketRoute

            never = asyncio.Event()

            async def events(_: Any) -> StreamingResponse:
                async def body() -> Any:
                    yield b": hello\n\n"
                    await never.wait()

                return StreamingResponse(body(), media_type="text/event-stream")

            async def ws(socket: Any) -> None:
                await socket.accept()
                await socket.receive()

            app = Starlette(routes=[Route("/events", events), WebSocketRoute("/events/ws", ws)])
            config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
            server = uvicorn.Server(config)
            asyncio.get_running_loop().create_task(server.serve())
            while not server.started:
                await asyncio.sleep(0.01)
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            if line.strip() == "rss":
                pages = int(open("/proc/self/statm").read().split()[1])  # noqa: SIM115 - Linux
                print(pages * 4, flush=True)

    asyncio.run(main())


SSE_REQUEST = (
    b"GET /events?topics=x.a HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
)
WS_REQUEST = (
    b"GET /events/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def connect_idle(port: int, request: bytes, expect: bytes) -> asyncio.StreamWriter:
    """One client: sends the request, waits for the answer's status line, then stays idle."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    status = await asyncio.wait_for(reader.readline(), 30)
    if expect not in status:
        raise RuntimeError(f"unexpected answer {status!r}")
    return writer


def server_rss(proc: Any) -> float:
    """The server process's RSS in KiB, as it reports it."""
    proc.stdin.write("rss\n")
    proc.stdin.flush()
    return float(proc.stdout.readline())


async def clients_size(kind: str, sizes: list[int]) -> dict[str, dict[int, float]]:
    """KiB per idle client of each protocol at each size, on a fresh server per protocol."""
    import subprocess
    import sys

    from organelle.testing.servers import free_port

    out: dict[str, dict[int, float]] = {}
    for proto, request, expect in (("sse", SSE_REQUEST, b" 200 "), ("ws", WS_REQUEST, b" 101 ")):
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, __file__, "serve", kind, str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdin is not None
        assert proc.stdout is not None
        clients: list[asyncio.StreamWriter] = []

        try:
            assert proc.stdout.readline().strip() == "ready"
            # Warm the path: the first clients allocate what every later one shares.
            clients += [await connect_idle(port, request, expect) for _ in range(20)]
            await asyncio.sleep(0.2)
            base, held = server_rss(proc), len(clients)
            out[proto] = {}
            for size in sizes:
                while len(clients) < size + held:
                    batch = min(200, size + held - len(clients))
                    clients += await asyncio.gather(
                        *(connect_idle(port, request, expect) for _ in range(batch))
                    )
                await asyncio.sleep(0.5)
                out[proto][size] = (server_rss(proc) - base) / size
        finally:
            for writer in clients:
                writer.close()
            proc.kill()
            proc.wait(10)
    return out


async def clients_curve(quick: bool) -> list[Row]:
    import resource

    sizes = [50, 200] if quick else [100, 1000, 10_000]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    room = min(hard, 2 * sizes[-1] + 1000)
    if soft < room:
        resource.setrlimit(resource.RLIMIT_NOFILE, (room, hard))  # the server inherits it
    sizes = [n for n in sizes if n + 1000 <= room]
    ours = await clients_size("organelle", sizes)
    floor = await clients_size("floor", sizes)
    rows: list[Row] = []
    names = {"sse": "SSE", "ws": "WebSocket"}
    for proto, label in names.items():
        rows += [
            Row(
                f"idle {label} client, {n:,} connected",
                "gateway process RSS per client",
                ours[proto][n],
                unit="KiB",
                baseline="bare Starlette + uvicorn (ratio: ours / its)",
                ratio=ours[proto][n] / floor[proto][n] if floor[proto][n] > 0 else None,
                extra={"floor_kib": floor[proto][n]},
            )
            for n in sizes
        ]
        lo, hi = sizes[0], sizes[-1]
        rows.append(
            Row(
                f"memory per idle {label} client, {hi:,} vs {lo} connected",
                "cost ratio, largest / smallest size",
                ours[proto][hi] / ours[proto][lo],
                unit="×",
                target="≤ 1.2× (flat)",
            )
        )
    return rows


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent / "src"))
    if sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
