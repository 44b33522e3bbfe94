"""HTTP gateway: a route that authenticates, checks a role and calls a local RPC, beside bare Starlette.

    python bench/http_gateway.py            # 3 interleaved rounds of 10 s per server (about 5 minutes)
    python bench/http_gateway.py --quick    # 1 round of 3 s, for a smoke check

Every server runs in its own process on uvicorn with uvloop + httptools, one
worker, access log off, pinned to CPU 1; wrk (1 thread, 50 connections) is
pinned to CPU 0, as in reference/http-bench.md. The floor is the same route
written by hand on bare Starlette (``bare_app``): the same PyJWT verification
of an HS256 bearer token (issuer, audience, leeway, ``exp`` required), the
same role, ``id`` parsed as an int, the same handler body, the result encoded
by msgspec. It is measured without and with a token cache like organelle's,
and organelle without and with its cache, so each ratio compares equal work.
The open route (no auth) is compared with the open bare route.
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
from collections.abc import Callable
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
def bare_app(*, auth: bool = True, cache: bool) -> Any:
    """The floor: what a careful Starlette user writes for the same route.

    The same checks as the gateway's route: a Bearer HS256 token verified by
    PyJWT with the same issuer, audience, leeway and required ``exp``; the
    ``reader`` role; ``id`` parsed as an int (422 otherwise); the same handler
    body; the result encoded by msgspec. ``cache`` keeps verified claims per
    token until their ``exp`` (bounded), as organelle's verifier does;
    ``auth=False`` is the open route (no token, no role).
    """
    import jwt
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    verified: dict[str, dict[str, Any]] = {}

    def claims_of(token: str) -> dict[str, Any]:
        hit = verified.get(token)
        if hit is not None and time.time() < hit["exp"] + 30:
            return hit
        claims: dict[str, Any] = jwt.decode(
            token,
            SECRET,
            algorithms=["HS256"],
            audience="api",
            issuer="bench",
            leeway=30,
            options={"require": ["exp"]},
        )
        if cache:
            if len(verified) >= 10_000:
                verified.pop(next(iter(verified)))
            verified[token] = claims
        return claims

    async def get_item(id: int) -> Item:  # noqa: A002 - the benchmark's field name
        return Item(id=id, name="item", price=9.99)

    async def open_item(request: Request) -> Response:
        try:
            id_ = int(request.path_params["id"])
        except ValueError:
            return JSONResponse({"error": "invalid id"}, 422)
        result = await get_item(id_)
        return Response(msgspec.json.encode(result), media_type="application/json")

    async def item(request: Request) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return JSONResponse({"error": "unauthenticated"}, 401)
        try:
            claims = claims_of(token.strip())
        except jwt.PyJWTError:
            return JSONResponse({"error": "unauthenticated"}, 401)
        if "reader" not in claims.get("roles", ()):
            return JSONResponse({"error": "forbidden"}, 403)
        try:
            id_ = int(request.path_params["id"])
        except ValueError:
            return JSONResponse({"error": "invalid id"}, 422)
        result = await get_item(id_)
        return Response(msgspec.json.encode(result), media_type="application/json")

    return Starlette(routes=[Route("/items/{id}", item if auth else open_item)])


def serve_bare(port: int, *, auth: bool, cache: bool) -> None:
    import uvicorn

    uvicorn.run(
        bare_app(auth=auth, cache=cache),
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


def serve_organelle(port: int, *, auth: bool, cache: bool = True) -> None:
    import uvloop

    gateway: dict[str, Any] = {"port": port, "docs": False}
    if auth:
        gateway["auth"] = {
            "jwt": {
                "algorithms": ["HS256"],
                "secret": SECRET,
                "issuer": "bench",
                "audience": "api",
                "cache_size": 10_000 if cache else 0,
            }
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


class PortTakenError(Exception):
    """Our server could not serve its port: another process on this shared machine took it."""


def wait_ready(
    proc: subprocess.Popen[bytes], port: int, headers: dict[str, str], timeout_s: float = 60.0
) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PortTakenError(port)
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/items/42", headers=headers, timeout=5)
            if r.status_code == 200 and r.json() == BODY:
                return
            if r.status_code == 503:
                time.sleep(0.1)
                continue
            raise PortTakenError(f"server on {port} answered {r.status_code} {r.text!r}")
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
    for _ in range(3):  # free_port() races with other processes on a shared machine
        try:
            return measure_once(kind, duration_s, warmup_s)
        except PortTakenError as exc:
            print(f"{kind}: {exc}; again on another port")
    raise SystemExit(f"{kind}: no port of its own after 3 tries")


def measure_once(kind: str, duration_s: int, warmup_s: int) -> tuple[float, float, float]:
    port = free_port()
    cpus = os.cpu_count() or 1
    pin = ["taskset", "-c", "1"] if cpus > 1 and shutil.which("taskset") else []
    wrk_pin = ["taskset", "-c", "0"] if pin else []
    proc = subprocess.Popen([*pin, sys.executable, __file__, "--serve", kind, "--port", str(port)])
    try:
        headers = {"Authorization": f"Bearer {token()}"} if KINDS[kind][1] else {}
        wait_ready(proc, port, headers)
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


KINDS: dict[str, tuple[Callable[[int], None], bool]] = {  # name: (serve it, uses a token)
    "bare": (lambda port: serve_bare(port, auth=True, cache=False), True),
    "bare-cache": (lambda port: serve_bare(port, auth=True, cache=True), True),
    "bare-open": (lambda port: serve_bare(port, auth=False, cache=False), False),
    "organelle": (lambda port: serve_organelle(port, auth=True), True),
    "organelle-nocache": (lambda port: serve_organelle(port, auth=True, cache=False), True),
    "organelle-noauth": (lambda port: serve_organelle(port, auth=False), False),
}
SUBJECTS = {  # name: (row subject, its floor)
    "bare": ("bare Starlette + PyJWT every request (floor)", None),
    "bare-cache": ("bare Starlette + PyJWT + a token cache (floor)", None),
    "bare-open": ("bare Starlette, open route (floor)", None),
    "organelle": ("organelle gateway: JWT (cached) + role + validation + local RPC", "bare-cache"),
    "organelle-nocache": ("organelle gateway: JWT (cache_size = 0) + role + …", "bare"),
    "organelle-noauth": ("organelle gateway: open route, validation + local RPC", "bare-open"),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--serve", choices=list(KINDS))
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.serve:
        KINDS[args.serve][0](args.port)
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    rounds, duration, warmup = (1, 3, 1) if args.quick else (3, 10, 2)
    kinds = list(KINDS)
    results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in kinds}
    load = [os.getloadavg()[0]]
    for r in range(rounds):
        order = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]  # rotate the server order
        for kind in order:
            results[kind].append(measure(kind, duration, warmup))
            rps, _, p99 = results[kind][-1]
            print(f"round {r + 1} {kind}: {rps:,.0f} req/s, p99 {p99 / 1000:.2f} ms")
        load.append(os.getloadavg()[0])

    def med(kind: str, i: int) -> float:
        return statistics.median(x[i] for x in results[kind])

    rows = []
    for kind in kinds:
        subject, floor = SUBJECTS[kind]
        runs = [x[0] for x in results[kind]]
        extra: dict[str, Any] = {"runs": runs}
        if floor is not None:  # the ratio within each round, to show the spread
            extra["round_ratios"] = [
                round(a[0] / b[0], 3) for a, b in zip(results[kind], results[floor], strict=True)
            ]
        rows.append(
            Row(
                "GET /items/{id}",
                subject,
                med(kind, 0),
                "req/s",
                baseline="" if floor is None else SUBJECTS[floor][0].removesuffix(" (floor)"),
                ratio=None if floor is None else med(kind, 0) / med(floor, 0),
                p50_us=med(kind, 1),
                p99_us=med(kind, 2),
                target="" if floor is None or kind == "organelle-noauth" else "≥ 0.90×",
                extra=extra,
            )
        )
    spread = ", ".join(
        f"{k} {min(x[0] for x in results[k]) / 1000:.1f}–{max(x[0] for x in results[k]) / 1000:.1f} k"
        for k in kinds
    )
    notes = (
        "uvicorn + uvloop + httptools, one worker, access log off; server pinned to CPU 1, wrk "
        f"(1 thread, 50 connections, {duration} s after {warmup} s warm-up) to CPU 0; median of {rounds} "
        "interleaved rounds (server order rotated each round). Each organelle row is compared with the "
        "bare route doing the same work: PyJWT on every request, PyJWT behind the same kind of token "
        f"cache, or no auth. Runs per server (req/s): {spread}. Measured on a shared 2-core machine "
        f"with other jobs running (load average {min(load):.1f}–{max(load):.1f} during the run). Peers "
        "on this machine (reference/http-bench.md, open route): FastAPI 0.43×, Litestar 0.68× of bare "
        "Starlette.\n"
    )
    publish("http", "HTTP gateway (GET route → local RPC) vs bare Starlette", rows, notes)


if __name__ == "__main__":
    main()
