"""HTTP gateway: a route that authenticates, validates and calls a local RPC, beside bare Starlette.

    python bench/http_gateway.py            # 3 interleaved rounds of 10 s per server (about 2 minutes)
    python bench/http_gateway.py --quick    # 1 round of 3 s, for a smoke check

Both servers run in their own process on uvicorn with uvloop + httptools, one
worker, access log off, pinned to CPU 1; wrk (1 thread, 50 connections) is
pinned to CPU 0, as in reference/http-bench.md. The bare Starlette endpoint
returns the same JSON (``{"id":42,"name":"item","price":9.99}``, id parsed as
int). The organelle route checks a JWT (HS256) bearer token and a role,
validates ``id`` from its type hint and calls ``items.get_item`` through the
kernel. Peers measured on this machine (reference/http-bench.md): bare
Starlette 14.6 k GET req/s, FastAPI 6.3 k (0.43 x), Litestar 9.9 k (0.68 x).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# This file is named like the stdlib's ``http`` package: keep its folder off the path
# (httpx and uvicorn import ``http.client``) and load ``_common`` by file instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent / "src"))
_spec = importlib.util.spec_from_file_location("_common", HERE / "_common.py")
assert _spec is not None
assert _spec.loader is not None
_common = importlib.util.module_from_spec(_spec)
sys.modules["_common"] = _common
_spec.loader.exec_module(_common)
Row, publish = _common.Row, _common.publish

import msgspec  # noqa: E402 - after the path fix above

from organelle import Kernel, Module  # noqa: E402
from organelle.gateway import Gateway, route  # noqa: E402

SECRET = "bench-secret-with-at-least-32-bytes!!"
BODY = {"id": 42, "name": "item", "price": 9.99}


# servers -------------------------------------------------------------------
def serve_bare(port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def item(request: Request) -> JSONResponse:
        return JSONResponse({"id": int(request.path_params["id"]), "name": "item", "price": 9.99})

    app = Starlette(routes=[Route("/items/{id}", item)])
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


class Item(msgspec.Struct):
    id: int
    name: str
    price: float


class Items(Module):
    name = "items"

    @route.get("/items/{id}", roles=["reader"])
    async def get_item(self, id: int) -> Item:  # noqa: A002 - the benchmark's field name
        return Item(id=id, name="item", price=9.99)


class OpenItems(Module):
    name = "items"

    @route.get("/items/{id}")
    async def get_item(self, id: int) -> Item:  # noqa: A002 - the benchmark's field name
        return Item(id=id, name="item", price=9.99)


def serve_organelle(port: int, auth: bool) -> None:
    import uvloop

    gateway: dict[str, Any] = {"port": port, "docs": False}
    if auth:
        gateway["auth"] = {
            "jwt": {"algorithms": ["HS256"], "secret": SECRET, "issuer": "bench", "audience": "api"}
        }
    config = {
        "kernel": {"storage": "memory://", "log_level": "WARNING"},
        "modules": {"gateway": gateway},
    }

    async def main() -> None:
        async with Kernel([Items if auth else OpenItems, Gateway], config):
            await asyncio.Event().wait()

    uvloop.run(main())


def token() -> str:
    import jwt

    now = int(time.time())
    claims = {
        "sub": "bench",
        "roles": ["reader"],
        "iss": "bench",
        "aud": "api",
        "iat": now,
        "exp": now + 3600,
    }
    return jwt.encode(claims, SECRET, algorithm="HS256")


# measuring -----------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, headers: dict[str, str], timeout_s: float = 20.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/items/42", headers=headers, timeout=1)
            if r.status_code == 200 and r.json() == BODY:
                return
            raise SystemExit(f"server on {port} answered {r.status_code} {r.text!r}")
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"server on {port} did not start")


def parse_wrk(out: str) -> tuple[float, float, float, int]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def lat(pct: str) -> float:
        m = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)\b", out)
        value, unit = float(m.group(1)), m.group(2)  # type: ignore[union-attr]
        return value * {"us": 1, "ms": 1e3, "s": 1e6}[unit]

    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return rps, lat("50"), lat("99"), int(non2xx.group(1)) if non2xx else 0


def measure(kind: str, duration_s: int, warmup_s: int) -> tuple[float, float, float]:
    port = free_port()
    cpus = os.cpu_count() or 1
    pin = ["taskset", "-c", "1"] if cpus > 1 and shutil.which("taskset") else []
    wrk_pin = ["taskset", "-c", "0"] if pin else []
    proc = subprocess.Popen([*pin, sys.executable, __file__, "--serve", kind, "--port", str(port)])
    try:
        headers = {"Authorization": f"Bearer {token()}"} if kind == "organelle" else {}
        wait_ready(port, headers)
        url = f"http://127.0.0.1:{port}/items/42"
        hdr = [a for k, v in headers.items() for a in ("-H", f"{k}: {v}")]
        base = [*wrk_pin, "wrk", "-t1", "-c50", *hdr]
        subprocess.run([*base, f"-d{warmup_s}s", url], check=True, capture_output=True)
        out = subprocess.run(
            [*base, f"-d{duration_s}s", "--latency", url],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        rps, p50, p99, bad = parse_wrk(out)
        if bad:
            raise SystemExit(f"{kind}: {bad} non-2xx responses")
        return rps, p50, p99
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--serve", choices=["bare", "organelle", "organelle-noauth"])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.serve == "bare":
        serve_bare(args.port)
        return
    if args.serve:
        serve_organelle(args.port, auth=args.serve == "organelle")
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    rounds, duration, warmup = (1, 3, 1) if args.quick else (3, 10, 2)
    kinds = ["bare", "organelle", "organelle-noauth"]
    results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in kinds}
    for r in range(rounds):
        order = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]  # rotate the server order
        for kind in order:
            results[kind].append(measure(kind, duration, warmup))
            print(
                f"round {r + 1} {kind}: {results[kind][-1][0]:,.0f} req/s, p99 {results[kind][-1][2] / 1000:.2f} ms"
            )

    def med(kind: str, i: int) -> float:
        return statistics.median(x[i] for x in results[kind])

    bare = med("bare", 0)
    rows = [
        Row(
            "GET /items/{id}",
            "bare Starlette (floor)",
            bare,
            "req/s",
            p50_us=med("bare", 1),
            p99_us=med("bare", 2),
            extra={"runs": [x[0] for x in results["bare"]]},
        ),
        Row(
            "GET /items/{id}",
            "organelle gateway: JWT + role + validation + local RPC",
            med("organelle", 0),
            "req/s",
            baseline="bare Starlette",
            ratio=med("organelle", 0) / bare,
            p50_us=med("organelle", 1),
            p99_us=med("organelle", 2),
            target="≥ 0.70×",
            extra={"runs": [x[0] for x in results["organelle"]]},
        ),
        Row(
            "GET /items/{id}",
            "organelle gateway: validation + local RPC (no auth)",
            med("organelle-noauth", 0),
            "req/s",
            baseline="bare Starlette",
            ratio=med("organelle-noauth", 0) / bare,
            p50_us=med("organelle-noauth", 1),
            p99_us=med("organelle-noauth", 2),
            extra={"runs": [x[0] for x in results["organelle-noauth"]]},
        ),
    ]
    notes = (
        "uvicorn + uvloop + httptools, one worker, access log off; server pinned to CPU 1, wrk "
        f"(1 thread, 50 connections, {duration} s after {warmup} s warm-up) to CPU 0; median of {rounds} "
        "interleaved rounds. Peers on this machine (reference/http-bench.md): FastAPI 0.43×, Litestar 0.68× "
        "of bare Starlette on the same GET.\n"
    )
    publish("http", "HTTP gateway (GET route → local RPC) vs bare Starlette", rows, notes)


if __name__ == "__main__":
    main()
