"""Modules and helpers the gateway tests serve."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
import jwt
import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from organelle import Kernel, Module, NotFoundError, context, rpc
from organelle.gateway import Gateway, Header, Query, route

SECRET = "test-secret-that-is-at-least-32-bytes-long"  # noqa: S105 - a test key
ISSUER = "https://issuer.test"
AUDIENCE = "organelle-tests"

_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PRIVATE_PEM = _KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)
RSA_PUBLIC_PEM = (
    _KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)

RS256_AUTH = {
    "jwt": {
        "algorithms": ["RS256"],
        "public_key": RSA_PUBLIC_PEM,
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "leeway_s": 5,
    }
}
RBAC = {
    "roles": {"reader": ["things.read"], "writer": ["things.write", "things.read"], "admin": ["*"]},
    "inherits": {"admin": ["writer"], "writer": ["reader"]},
}


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "ada",
        "roles": ["reader"],
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def rs256(**overrides: Any) -> str:
    return jwt.encode(claims(**overrides), RSA_PRIVATE_PEM, algorithm="RS256")


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


class Thing(msgspec.Struct):
    id: int
    name: str
    tags: list[str] = []


@dataclass
class Counter:
    calls: int = 0


class Things(Module):
    """A module exercising every kind of binding, guard and failure."""

    name = "things"
    version = "1.0.0"

    async def on_start(self) -> None:
        self.counter = Counter()
        self.items: dict[int, Thing] = {1: Thing(id=1, name="one")}

    @route.get("/things/{id}")
    async def get_thing(self, id: int, verbose: bool = False) -> Thing:  # noqa: A002
        """Read one thing."""
        self.counter.calls += 1
        found = self.items.get(id)
        if found is None:
            raise NotFoundError(f"no thing {id}")
        return found if not verbose else Thing(id=found.id, name=found.name, tags=["verbose"])

    @route.get("/search")
    async def search(self, tag: list[str] | None = None, limit: int = 10) -> list[int]:
        """Query parameters, one of them repeated."""
        return [len(tag or []), limit]

    @route.post("/things", roles=["writer"], status_code=201)
    async def create(self, thing: Thing, note: Annotated[str, Query()] = "") -> Thing:
        """A JSON body holding a Struct, plus a query parameter."""
        self.items[thing.id] = thing
        return thing

    @route.get("/whoami", roles=["reader"])
    async def whoami(self, tenant: Annotated[str, Header("x-tenant")] = "none") -> dict[str, Any]:
        """The principal as the handler sees it."""
        p = context().principal
        return {"id": p.id, "roles": sorted(p.roles), "tenant": tenant}

    @route.delete("/things/{id}", permissions=["things.delete"])
    async def remove(self, id: int) -> bool:  # noqa: A002
        """Needs a permission only admin has."""
        return self.items.pop(id, None) is not None

    @rpc(roles=["admin"])
    async def secret(self) -> str:
        """An RPC exposed by pattern, for admins only."""
        return "s3cret"

    @route.get("/slow", timeout_s=0.2)
    async def slow(self, seconds: float = 1.0) -> str:
        await asyncio.sleep(seconds)
        return "done"

    @route.get("/crash")
    async def crash(self) -> str:
        raise RuntimeError("database password is hunter2")

    @route.get("/limited", rate_limit="5/minute", rate_key="global")
    async def limited(self) -> str:
        return "ok"

    @route.get("/cached", cache_ttl_s=30)
    async def cached(self, q: str = "") -> dict[str, Any]:
        self.counter.calls += 1
        who = context().principal
        return {"calls": self.counter.calls, "q": q, "who": who.id if who else None}

    @rpc
    async def add(self, a: int, b: int) -> int:
        return a + b

    @rpc
    async def fail(self) -> int:
        raise NotFoundError("nothing here")


def base_config(**gateway: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {"port": 0, **gateway}
    return {"kernel": {"storage": "memory://"}, "modules": {"gateway": cfg}}


@asynccontextmanager
async def serve(
    *modules: Any, gateway: Mapping[str, Any] | None = None, **gateway_options: Any
) -> AsyncIterator[tuple[Kernel, httpx.AsyncClient]]:
    """A kernel with ``modules`` and a gateway on a free port, and a client for it."""
    gw = Gateway(**gateway_options)
    kernel = Kernel([*modules, gw], base_config(**(gateway or {})))
    async with kernel:
        async with httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
            yield kernel, client
