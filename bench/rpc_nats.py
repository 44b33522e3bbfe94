"""RPC and events over NATS between two processes: organelle beside raw nats-py and FastStream.

    python bench/rpc_nats.py            # full run (a couple of minutes)
    python bench/rpc_nats.py --quick    # a few seconds per case

One nats-server (from ``organelle.testing.servers``) on loopback; for each
subject a server process is started, then the client in this process runs
request/reply at 1 and at 100 in flight, and events publish -> handler.
Every peer moves the same JSON object ``{"n": int, "text": str}``:
* raw nats-py: ``nc.request`` + ``json.loads`` / ``json.dumps`` on both sides;
* FastStream (if installed): ``@broker.subscriber`` typed ``dict`` handler,
  ``broker.request`` on the client;
* organelle: ``kernel.call("echo.echo", n=…, text=…)`` to a validated
  ``@rpc`` (params checked, a msgspec Struct returned) on another node.
uvloop is used on both sides when installed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from _common import Row, percentile, publish

from organelle import Kernel, Module, on, rpc
from organelle.testing.servers import NatsServer

PAYLOAD = {"n": 1, "text": "hello organelle"}
PREFIX = "bench"


class Echoed(msgspec.Struct):
    n: int
    text: str


class Echo(Module):
    name = "echo"
    version = "1.0.0"

    async def on_start(self) -> None:
        self.seen = 0

    @rpc
    async def echo(self, n: int, text: str) -> Echoed:
        return Echoed(n=n, text=text)

    @rpc
    async def count(self) -> int:
        return self.seen

    @on("bench.evt")
    async def evt(self, event: Echoed) -> None:  # noqa: ARG002 - validated, then counted
        self.seen += 1


def _loop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _config(url: str, prefix: str = PREFIX) -> dict[str, Any]:
    # Each organelle subject has a registry of its own: a node the previous subject
    # stopped stays listed until its TTL, and per-node routing would try it first.
    return {"kernel": {"transport": url, "transport_options": {"prefix": prefix}}}


# -- the floor: NATS spoken by a bare asyncio protocol -------------------------------------
class _Bare(asyncio.Protocol):
    """The least a Python client can do: ``PUB``/``SUB`` out, ``MSG`` lines parsed in place.

    The floor of a request/reply through the same nats-server from Python: no
    headers, no reconnects, no flow control, one callback per message.
    """

    def __init__(self, on_msg: Callable[[bytes, bytes | None, bytes], None]) -> None:
        self.on_msg = on_msg
        self.buf = b""
        self.out: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.write(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')

    def write(self, data: bytes) -> None:
        """Buffered until the loop's turn ends: one system call for a burst, as a real client."""
        if not self.out:
            asyncio.get_running_loop().call_soon(self.flush)
        self.out.append(data)

    def flush(self) -> None:
        assert self.transport is not None
        self.transport.write(b"".join(self.out))
        self.out.clear()

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        while (eol := buf.find(b"\r\n")) >= 0:
            line = buf[:eol]
            if line.startswith(b"MSG "):
                parts = line.split(b" ")
                size = int(parts[-1])
                if len(buf) < eol + 4 + size:
                    break
                self.on_msg(
                    parts[1], parts[3] if len(parts) == 5 else None, buf[eol + 2 : eol + 2 + size]
                )
                buf = buf[eol + 4 + size :]
                continue
            buf = buf[eol + 2 :]
            if line == b"PING":
                self.write(b"PONG\r\n")
            elif line == b"PONG" and not self.ready.done():
                self.ready.set_result(None)
        self.buf = buf


async def _bare_connect(url: str, on_msg: Callable[[bytes, bytes | None, bytes], None]) -> _Bare:
    host, port = url.removeprefix("nats://").rsplit(":", 1)
    _, proto = await asyncio.get_running_loop().create_connection(
        lambda: _Bare(on_msg), host, int(port)
    )
    await proto.ready
    return proto


async def _serve_bare(url: str) -> None:
    seen = 0

    def on_msg(subject: bytes, reply: bytes | None, data: bytes) -> None:
        nonlocal seen
        if subject == b"bare.evt":
            json.loads(data)
            seen += 1
            return
        if reply is None:
            return
        if subject == b"bare.echo":
            got = json.loads(data)
            out = json.dumps({"n": got["n"], "text": got["text"]}).encode()
        else:
            out = str(seen).encode()
        proto.write(b"PUB %s %d\r\n%s\r\n" % (reply, len(out), out))

    proto = await _bare_connect(url, on_msg)
    proto.write(b"SUB bare.echo 1\r\nSUB bare.evt 2\r\nSUB bare.count 3\r\nPING\r\n")
    await asyncio.sleep(0.1)
    print("ready", flush=True)
    await asyncio.Event().wait()


# -- server side (a child process) --------------------------------------------------------
async def serve(kind: str, url: str) -> None:
    if kind in ("organelle", "policy"):
        async with Kernel([Echo], _config(url, f"{PREFIX}-{kind}")):
            print("ready", flush=True)
            await asyncio.Event().wait()
    elif kind == "bare":
        await _serve_bare(url)
    elif kind == "raw":
        import nats

        nc = await nats.connect(url)
        seen = 0

        async def echo(msg: Any) -> None:
            data = json.loads(msg.data)
            await msg.respond(json.dumps({"n": data["n"], "text": data["text"]}).encode())

        async def evt(msg: Any) -> None:
            nonlocal seen
            json.loads(msg.data)
            seen += 1

        async def count(msg: Any) -> None:
            await msg.respond(str(seen).encode())

        await nc.subscribe("raw.echo", cb=echo)
        await nc.subscribe("raw.evt", cb=evt, pending_msgs_limit=1_000_000)
        await nc.subscribe("raw.count", cb=count)
        await nc.flush()
        print("ready", flush=True)
        await asyncio.Event().wait()
    else:
        from faststream.nats import NatsBroker

        broker = NatsBroker(url, logger=None)
        fs_seen = 0

        @broker.subscriber("fs.echo")
        async def fs_echo(msg: dict[str, Any]) -> dict[str, Any]:
            return {"n": msg["n"], "text": msg["text"]}

        @broker.subscriber("fs.evt")
        async def fs_evt(msg: dict[str, Any]) -> None:  # noqa: ARG001
            nonlocal fs_seen
            fs_seen += 1

        @broker.subscriber("fs.count")
        async def fs_count(msg: str) -> int:  # noqa: ARG001
            return fs_seen

        await broker.start()
        print("ready", flush=True)
        await asyncio.Event().wait()


# -- client side ----------------------------------------------------------------------------
async def measure(
    call: Callable[[], Awaitable[Any]], n: int, conc: int
) -> tuple[float, list[float]]:
    lat: list[float] = []
    per = n // conc

    async def worker() -> None:
        clock = time.perf_counter
        for _ in range(per):
            t = clock()
            await call()
            lat.append(clock() - t)

    for _ in range(min(200, per)):  # warm up
        await call()
    lat.clear()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    return per * conc / (time.perf_counter() - t0), lat


async def drain_events(
    send: Callable[[], Awaitable[None]], count: Callable[[], Awaitable[int]], n: int
) -> tuple[float, int]:
    """Events per second until all ``n`` arrived, and how many never did (a lossy peer).

    A count request that times out (the subscriber still busy, or reconnecting
    after the server cut it off as a slow consumer) is asked again; after 60 s
    the rate of what arrived is returned with the number lost.
    """

    async def poll() -> int | None:
        try:
            return await count()
        except Exception:  # a busy or reconnecting peer: ask again
            return None

    base = None
    while base is None:
        base = await poll()
    t0 = time.perf_counter()
    for _ in range(n):
        await send()
    deadline = time.perf_counter() + 60
    got = 0
    while got < n:
        seen = await poll()
        if seen is not None:
            got = seen - base
        if time.perf_counter() > deadline:
            break
        await asyncio.sleep(0.002)
    return min(got, n) / (time.perf_counter() - t0), max(0, n - got)


class Client:
    """The client of one subject: ``call()``, ``emit()``, ``count()``."""

    async def open(self, url: str) -> None: ...
    async def call(self) -> Any: ...
    async def emit(self) -> None: ...
    async def count(self) -> int: ...
    async def close(self) -> None: ...


class RawClient(Client):
    async def open(self, url: str) -> None:
        import nats

        self.nc = await nats.connect(url)

    async def call(self) -> Any:
        msg = await self.nc.request("raw.echo", json.dumps(PAYLOAD).encode(), timeout=10)
        return json.loads(msg.data)

    async def emit(self) -> None:
        await self.nc.publish("raw.evt", json.dumps(PAYLOAD).encode())

    async def count(self) -> int:
        return int((await self.nc.request("raw.count", b"", timeout=10)).data)

    async def close(self) -> None:
        await self.nc.close()


class BareClient(Client):
    """Requests over ``_Bare``: replies to one wildcard inbox, futures by token."""

    async def open(self, url: str) -> None:
        self.waiting: dict[bytes, asyncio.Future[bytes]] = {}
        self.next = 0
        self.proto = await _bare_connect(url, self._on_msg)
        self.proto.write(b"SUB _BARE.* 1\r\nPING\r\n")
        await asyncio.sleep(0.1)

    def _on_msg(self, subject: bytes, _reply: bytes | None, data: bytes) -> None:
        future = self.waiting.pop(subject[6:], None)
        if future is not None and not future.done():
            future.set_result(data)

    async def _request(self, subject: bytes, data: bytes) -> bytes:
        self.next += 1
        token = b"%d" % self.next
        future = self.waiting[token] = asyncio.get_running_loop().create_future()
        self.proto.write(b"PUB %s _BARE.%s %d\r\n%s\r\n" % (subject, token, len(data), data))
        return await asyncio.wait_for(future, 10)

    async def call(self) -> Any:
        return json.loads(await self._request(b"bare.echo", json.dumps(PAYLOAD).encode()))

    async def emit(self) -> None:
        data = json.dumps(PAYLOAD).encode()
        self.proto.write(b"PUB bare.evt %d\r\n%s\r\n" % (len(data), data))

    async def count(self) -> int:
        return int(await self._request(b"bare.count", b""))

    async def close(self) -> None:
        assert self.proto.transport is not None
        self.proto.transport.close()


class FsClient(Client):
    async def open(self, url: str) -> None:
        from faststream.nats import NatsBroker

        self.broker = NatsBroker(url, logger=None)
        await self.broker.connect()

    async def call(self) -> Any:
        msg = await self.broker.request(PAYLOAD, "fs.echo", timeout=10)
        return await msg.decode()

    async def emit(self) -> None:
        await self.broker.publish(PAYLOAD, "fs.evt")

    async def count(self) -> int:
        msg = await self.broker.request("", "fs.count", timeout=10)
        return int(await msg.decode())  # type: ignore[arg-type]

    async def close(self) -> None:
        await self.broker.stop()


# Issue 13: a timeout + breaker + bulkhead policy costs ≤ 10 % of a remote call.
POLICY = {
    "timeout_s": 10,
    "breaker": {"failures": 5},
    "bulkhead": {"max_concurrent": 1000, "max_queue": 1000},
}


class OrgClient(Client):
    def __init__(self, policy: dict[str, Any] | None = None) -> None:
        self.policy = policy

    async def open(self, url: str) -> None:
        config = _config(url, f"{PREFIX}-{'organelle' if self.policy is None else 'policy'}")
        if self.policy is not None:
            config["policies"] = {"echo.echo": self.policy}
        self.kernel = Kernel([], config)
        await self.kernel.start()
        await self.kernel.wait_for("echo", 10)
        self._call = self.kernel.call

    async def call(self) -> Any:
        return await self._call("echo.echo", n=1, text="hello organelle")

    async def emit(self) -> None:
        await self.kernel.emit("bench.evt", PAYLOAD)

    async def count(self) -> int:
        return int(await self._call("echo.count"))

    async def close(self) -> None:
        await self.kernel.stop()


def start_server(kind: str, url: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, "--url", url],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "ready" not in line:
        proc.kill()
        raise RuntimeError(f"{kind} server did not start")
    return proc


async def run_rpc_rounds(
    clients: dict[str, Client], sizes: dict[str, int], rounds: int
) -> dict[str, dict[str, list[tuple[float, list[float]]]]]:
    """Every subject's RPC cases, measured in interleaved rounds (the order rotates).

    Why rounds: on a shared machine the load moves from minute to minute; a
    ratio taken within one round compares like with like, and the median of
    the rounds is what is reported (with the spread).
    """
    out: dict[str, dict[str, list[tuple[float, list[float]]]]] = {
        kind: {"c1": [], "c100": []} for kind in clients
    }
    kinds = list(clients)
    for r in range(rounds):
        order = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]
        for case, conc in (("c1", 1), ("c100", 100)):
            for kind in order:
                out[kind][case].append(await measure(clients[kind].call, sizes[case], conc))
        print(
            f"round {r + 1}/{rounds}",
            {k: [round(v[c][-1][0]) for c in ("c1", "c100")] for k, v in out.items()},
            flush=True,
        )
    return out


def _row(  # noqa: PLR0917
    case: str,
    subject: str,
    rate: float,
    lat: list[float] | None,
    base: float | None,
    target: str = "",
) -> Row:
    return Row(
        case=case,
        subject=subject,
        value=rate,
        unit="req/s" if lat is not None else "events/s",
        baseline="raw nats-py" if base else "",
        ratio=rate / base if base else None,
        p50_us=percentile(lat, 50) * 1e6 if lat else None,
        p99_us=percentile(lat, 99) * 1e6 if lat else None,
        target=target,
    )


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _rpc_rows(
    rpc: dict[str, dict[str, list[tuple[float, list[float]]]]], names: dict[str, str]
) -> list[Row]:
    """Median rate, ratio and latency over the rounds; the ratio's spread in the subject."""
    targets = {"c1": "≥ 1.5× raw, p99 < 800 µs", "c100": "≥ 2× raw (Moleculer: 1.49×)"}
    raw = rpc["raw"]
    rows = []
    for case, label in (("c1", "RPC, 1 in flight"), ("c100", "RPC, 100 in flight")):
        for kind, cases in rpc.items():
            runs = cases[case]
            ratios = [run[0] / base[0] for run, base in zip(runs, raw[case], strict=True)]
            spread = "" if kind == "raw" else f" (rounds {min(ratios):.2f}–{max(ratios):.2f}×)"
            rows.append(
                Row(
                    case=label,
                    subject=names[kind] + spread,
                    value=_median([run[0] for run in runs]),
                    unit="req/s",
                    baseline="" if kind == "raw" else "raw nats-py",
                    ratio=None if kind == "raw" else _median(ratios),
                    p50_us=_median([percentile(run[1], 50) for run in runs]) * 1e6,
                    p99_us=_median([percentile(run[1], 99) for run in runs]) * 1e6,
                    target=targets[case] if kind == "organelle" else "",
                    extra={"rounds": [run[0] for run in runs], "ratios": ratios},
                )
            )
        if "policy" in rpc and "organelle" in rpc:
            ratios = [
                p[0] / o[0]
                for p, o in zip(rpc["policy"][case], rpc["organelle"][case], strict=True)
            ]
            rows.append(
                Row(
                    case=label,
                    subject=f"policy vs no policy (rounds {min(ratios):.2f}–{max(ratios):.2f}×)",
                    value=_median(ratios),
                    unit="×",
                    baseline="organelle, no policy",
                    ratio=_median(ratios),
                    target="≥ 0.9× (≤ 10 % more)",
                )
            )
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--serve")
    parser.add_argument("--url")
    parser.add_argument(
        "--only", help="comma-separated subjects: bare,raw,faststream,organelle,policy"
    )
    parser.add_argument("--rounds", type=int, help="interleaved RPC rounds (5; quick: 3)")
    args = parser.parse_args()
    if args.serve:
        await serve(args.serve, args.url)
        return
    sizes = (
        {"c1": 1_000, "c100": 10_000, "events": 50_000}
        if args.quick
        else {"c1": 4_000, "c100": 40_000, "events": 200_000}
    )
    rounds = args.rounds or (3 if args.quick else 5)
    subjects: dict[str, Client] = {
        "bare": BareClient(),
        "raw": RawClient(),
        "organelle": OrgClient(),
        "policy": OrgClient(POLICY),
    }
    try:
        import faststream  # noqa: F401

        subjects["faststream"] = FsClient()
    except ImportError:
        print("FastStream not installed: pip install 'faststream[nats]' to compare")
    if args.only:
        subjects = {k: v for k, v in subjects.items() if k in args.only.split(",") or k == "raw"}
    events: dict[str, tuple[float, int]] = {}
    load = os.getloadavg()
    async with NatsServer() as server:
        procs = {kind: start_server(kind, server.url) for kind in subjects}
        try:
            for client in subjects.values():
                await client.open(server.url)
            rpc = await run_rpc_rounds(subjects, sizes, rounds)
            for kind, client in subjects.items():
                if kind != "policy":
                    events[kind] = await drain_events(client.emit, client.count, sizes["events"])
                    print(kind, "events", events[kind], flush=True)
            for client in subjects.values():
                await client.close()
        finally:
            for proc in procs.values():
                proc.terminate()
                proc.wait(10)
    peak = [max(a, b) for a, b in zip(load, os.getloadavg(), strict=True)]
    names = {
        "bare": "bare asyncio protocol (floor: no headers, no reconnects)",
        "raw": "raw nats-py",
        "faststream": "FastStream 0.7 (NATS)",
        "organelle": "organelle",
        "policy": "organelle, timeout + breaker + bulkhead policy",
    }
    rows = _rpc_rows(rpc, names)
    raw_events = events["raw"][0]
    for kind, (rate, lost) in events.items():
        base = None if kind == "raw" else raw_events
        rows.append(
            _row(
                "event publish → handler",
                names[kind] + (f" (lost {lost} of {sizes['events']})" if lost else ""),
                rate,
                None,
                base,
                "≥ 0.8× raw" if kind == "organelle" else "",
            )
        )
    publish(
        "rpc_nats",
        "RPC and events over NATS, two processes",
        rows,
        notes=(
            "Client in one process, server in another, one nats-server, all on this machine "
            "(2 vCPUs shared by the three). JSON `{n, text}` in and out, decoded on both sides; "
            "organelle validates the params and returns a msgspec Struct. RPC: every subject's "
            f"server runs at once and the subjects are measured in {rounds} interleaved rounds "
            f"({sizes['c1']} calls at 1 in flight, {sizes['c100']} at 100, the order rotating); "
            "rates, ratios and p50/p99 are the medians of the rounds, the spread of the ratio "
            "is in the subject. Events: the publisher "
            "sends N events, then polls the subscriber's count until all arrived. "
            f"{'Quick run. ' if args.quick else ''}uvloop on both sides when installed. "
            "Each organelle event is a CloudEvent (binary mode: ~8 `ce-*` headers); raw nats-py "
            "sends bare messages. Measured on a shared machine (other work running; load "
            f"average up to {peak[0]:.1f} / {peak[1]:.1f} / {peak[2]:.1f} during the run): the "
            "raw rate moves 40–83 k events/s between runs, so compare within one run.\n"
        ),
    )


if __name__ == "__main__":
    _loop()
    asyncio.run(main())
