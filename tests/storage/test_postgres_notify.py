"""PostgreSQL notifications are opt-in; watch works in-process without them."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from organelle.errors import ConfigError
from organelle.storage import Change, PostgresStore
from organelle.storage.postgres import split_notify
from organelle.storage.url import store_backend
from organelle.testing import eventually
from organelle.testing.servers import PostgresServer

pytestmark = pytest.mark.timeout(30)


def test_notify_is_off_by_default_and_read_from_the_url() -> None:
    assert PostgresStore("postgresql://u@h/db").notify is False
    store = store_backend("postgresql://u:p@h:5/db?sslmode=disable&notify=true")
    assert isinstance(store, PostgresStore)
    assert store.notify is True
    assert store.dsn == "postgresql://u:p@h:5/db?sslmode=disable"  # asyncpg never sees it
    off = PostgresStore("postgres://u@h/db?notify=off", notify=False)
    assert (off.notify, off.dsn) == (False, "postgres://u@h/db")
    assert PostgresStore("postgresql://u@h/db", notify=True).notify is True
    assert split_notify("host=h dbname=db") == ("host=h dbname=db", None)  # libpq form untouched
    with pytest.raises(ConfigError, match="maybe"):
        PostgresStore("postgresql://u@h/db?notify=maybe")
    with pytest.raises(ConfigError, match="contradicts"):
        PostgresStore("postgresql://u@h/db?notify=true", notify=False)


async def test_writes_do_not_notify_unless_asked(postgres_server: PostgresServer) -> None:
    import asyncpg

    table = f"n_{uuid.uuid4().hex[:10]}"
    quiet = PostgresStore(postgres_server.dsn, table=table)
    loud = PostgresStore(postgres_server.dsn, table=table, notify=True)
    conn = await asyncpg.connect(postgres_server.dsn)
    notes: asyncio.Queue[str] = asyncio.Queue()
    try:
        await conn.add_listener(loud.channel, lambda *a: notes.put_nowait(a[3]))
        await quiet.put("q.1", 1)
        await quiet.put_many({"q.2": 2, "q.3": 3})
        await quiet.compare_and_set("q.4", 4, revision=None)
        await quiet.incr("q.5")
        await quiet.delete("q.1")
        await loud.put("loud", 1)  # notifications arrive in commit order: this one comes first
        first = json.loads(await asyncio.wait_for(notes.get(), 5))
        assert first[:3] == ["loud", first[1], "put"]
        assert notes.empty()
    finally:
        await conn.close()
        await quiet.close()
        await loud.close()


@pytest.mark.parametrize("notify", [False, True])
async def test_watch_sees_every_kind_of_write(
    postgres_server: PostgresServer, notify: bool
) -> None:
    store = PostgresStore(
        postgres_server.dsn,
        table=f"w_{uuid.uuid4().hex[:10]}",
        notify=notify,
        max_size=4,
        sweep_interval_s=60,  # the test sweeps by hand
    )
    try:
        async with store.watch("w.") as changes:
            await store.put("w.a", {"n": 1})
            await store.put_many({"w.b": "b", "other": 0})
            rev = await store.compare_and_set("w.c", 1, revision=None)
            await store.compare_and_set("w.c", 2, revision=rev)
            await store.incr("w.n", 5)
            await store.delete("w.a")
            await store.put("w.t", 0, ttl_s=0.05)

            async def swept() -> None:
                assert await store.sweep() == 1  # 0 until the key has expired

            await eventually(swept, timeout_s=0.1)  # it expires at 0.05 s
            got: list[Change] = [await asyncio.wait_for(anext(changes), 5) for _ in range(8)]
        seen: list[tuple[str, Any, str]] = [(c.key, c.value, c.op) for c in got]
        assert seen == [
            ("w.a", {"n": 1}, "put"),
            ("w.b", "b", "put"),
            ("w.c", 1, "put"),
            ("w.c", 2, "put"),
            ("w.n", 5, "put"),
            ("w.a", None, "delete"),
            ("w.t", 0, "put"),
            ("w.t", None, "expire"),
        ]
        revs = [c.revision for c in got]
        assert revs == sorted(revs)
        assert len(set(revs)) == len(revs)
    finally:
        await store.close()


async def test_local_watch_ends_when_the_store_closes(postgres_server: PostgresServer) -> None:
    store = PostgresStore(postgres_server.dsn, table=f"c_{uuid.uuid4().hex[:10]}")
    async with store.watch() as changes:
        await store.put("k", 1)
        assert (await asyncio.wait_for(anext(changes), 5)).key == "k"
        await store.close()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(changes), 5)
