"""A flag change reaches three nodes within a second, on each cluster store (real servers).

Three kernels share one store: NATS KV (a cross-process watch), PostgreSQL
with and without ``notify`` (watch, or the polled change counter) and one
SQLite file (the polled counter). Each kernel has its own store object, so
nothing reaches a node except through the store.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from organelle import Kernel, Module
from organelle.auth.base import Principal
from organelle.flags._cache import watch_is_shared
from organelle.testing import Captured, capture, eventually
from organelle.testing.servers import NatsServer, PostgresServer

pytestmark = pytest.mark.timeout(60)

Configs = Callable[[int], dict[str, Any]]


class ShopFlags(BaseModel):
    new_checkout: bool = False
    discount_pct: int = 0


def shop_module(module_name: str) -> type[Module]:
    class Shop(Module):
        name = module_name
        Flags = ShopFlags

    return Shop


@asynccontextmanager
async def nodes(configs: Configs) -> AsyncIterator[tuple[str, list[Kernel], list[Captured]]]:
    name = f"shop{uuid.uuid4().hex[:8]}"  # a store shared with other tests: keys of our own
    async with AsyncExitStack() as stack:
        kernels = []
        for i in range(3):
            kernel = Kernel([shop_module(name)], configs(i))
            await kernel.start()
            stack.push_async_callback(kernel.stop)
            kernels.append(kernel)
        yield name, kernels, [capture(k, "kernel.flags.changed") for k in kernels]


async def reaches_every_node(configs: Configs, *, watched: bool) -> None:
    async with nodes(configs) as (name, kernels, events):
        assert all(watch_is_shared(k.store) is watched for k in kernels)
        sets = [k.module(name).flags for k in kernels]
        for round_, pct in enumerate((5, 10, 15), 1):
            started = time.monotonic()
            await kernels[round_ % 3].flags.set(f"{name}.discount_pct", pct, by=f"ops{round_}")

            def seen(pct: int = pct) -> None:
                assert [s.discount_pct for s in sets] == [pct] * 3

            await eventually(seen, timeout_s=1.0, interval_s=0.005)
            assert time.monotonic() - started < 1.0
        # Rules travel too, and every node announced every change it saw, old and new.
        started = time.monotonic()
        await kernels[0].flags.rule(f"{name}.new_checkout", [{"value": True, "roles": ["beta"]}])
        tester = Principal(id="t1", roles=frozenset({"beta"}))

        def ruled() -> None:
            assert [s.value("new_checkout", principal=tester) for s in sets] == [True] * 3

        await eventually(ruled, timeout_s=1.0, interval_s=0.005)
        assert time.monotonic() - started < 1.0

        def audited() -> None:
            for captured in events:
                assert [p["by"] for _, p in captured][:3] == ["ops1", "ops2", "ops3"]
                assert len(captured) == 4

        await eventually(audited, timeout_s=2.0)
        for captured in events:
            last = captured[2][1]
            assert (last["old"], last["new"]) == (
                {"value": 10, "rules": []},
                {"value": 15, "rules": []},
            )


async def test_nats_kv(nats_server: NatsServer) -> None:
    host_port = nats_server.url.removeprefix("nats://")
    bucket = f"flags{uuid.uuid4().hex[:8]}"
    prefix = f"f{uuid.uuid4().hex[:8]}"

    def config(i: int) -> dict[str, Any]:
        return {
            "kernel": {
                "node": f"n{i}",
                "transport": nats_server.url,
                "transport_options": {"prefix": prefix, "heartbeat_s": 0.2},
                "storage": f"nats-kv://{host_port}/{bucket}",
            }
        }

    await reaches_every_node(config, watched=True)


@pytest.mark.parametrize("notify", [False, True])
async def test_postgres(postgres_server: PostgresServer, notify: bool) -> None:
    sep = "&" if "?" in postgres_server.dsn else "?"
    dsn = f"{postgres_server.dsn}{sep}notify={'true' if notify else 'false'}"
    await reaches_every_node(
        lambda i: {"kernel": {"node": f"n{i}", "storage": dsn}}, watched=notify
    )


async def test_sqlite_shared_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cluster.db'}"
    await reaches_every_node(lambda i: {"kernel": {"node": f"n{i}", "storage": url}}, watched=False)
