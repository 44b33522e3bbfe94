"""One behaviour suite for every ``Store`` backend: memory, SQLite, PostgreSQL, NATS KV."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from organelle.errors import ConflictError, ValidationError
from organelle.storage import (
    MemoryStore,
    NamespacedStore,
    NatsKvStore,
    PostgresStore,
    SqliteStore,
    Store,
)
from organelle.testing import eventually
from organelle.testing.servers import NatsServer, PostgresServer

pytestmark = pytest.mark.timeout(30)

ODD_KEYS = [
    "a",
    "a.b",
    "a..b",
    ".lead",
    "trail.",
    "é.ü",
    "sp ace",
    "eq=ual",
    "st*r",
    "gt>",
    "$x",
    "日本",
]


@dataclasses.dataclass
class Item:
    sku: str
    qty: int


class StoreContract:
    """The contract; subclasses only say how to build a fresh, isolated store."""

    def make(self, **opts: Any) -> Store:
        raise NotImplementedError

    @pytest.fixture
    async def store(self) -> AsyncIterator[Store]:
        store = self.make(max_value_bytes=64 * 1024, sweep_interval_s=0.1)
        yield store
        await store.close()

    # -- basics ------------------------------------------------------------------

    async def test_roundtrip_values(self, store: Store) -> None:
        values: list[Any] = [
            {"a": [1, 2.5, None, True]},
            "text",
            42,
            -1.5,
            None,
            [],
            b"\x00raw\xff",
            b"",
        ]
        for i, value in enumerate(values):
            rev = await store.put(f"v{i}", value)
            entry = await store.get(f"v{i}")
            assert entry is not None
            assert entry.value == value
            assert type(entry.value) is type(value)
            assert entry.revision == rev
            assert entry.key == f"v{i}"
            assert entry.expires_at is None

    async def test_missing_and_typed_get(self, store: Store) -> None:
        assert await store.get("nope") is None
        await store.put("item", Item(sku="x", qty=2))
        entry = await store.get("item", type=Item)
        assert entry is not None
        assert entry.value == Item(sku="x", qty=2)
        assert (await store.get("item")).value == {"sku": "x", "qty": 2}  # type: ignore[union-attr]

    async def test_revisions_increase(self, store: Store) -> None:
        r1 = await store.put("k", 1)
        r2 = await store.put("k", 2)
        r3 = await store.put("other", 3)
        assert 0 < r1 < r2 < r3
        assert (await store.get("k")).revision == r2  # type: ignore[union-attr]

    async def test_concurrent_puts_leave_the_latest_revision(self, store: Store) -> None:
        revs = await asyncio.gather(*(store.put("race", i) for i in range(40)))
        entry = await store.get("race")
        assert entry is not None
        assert entry.revision == max(revs)
        assert entry.value == revs.index(max(revs))

    async def test_delete(self, store: Store) -> None:
        await store.put("k", 1)
        assert await store.delete("k") is True
        assert await store.delete("k") is False
        assert await store.get("k") is None
        assert await store.delete("never") is False

    async def test_batch(self, store: Store) -> None:
        revs = await store.put_many({f"b{i}": i for i in range(30)})
        assert sorted(revs) == sorted(f"b{i}" for i in range(30))
        assert len(set(revs.values())) == 30
        got = await store.get_many([*(f"b{i}" for i in range(0, 30, 3)), "missing"])
        assert {k: e.value for k, e in got.items()} == {f"b{i}": i for i in range(0, 30, 3)}
        assert await store.delete_many(["b0", "b1", "missing"]) == 2
        assert await store.get_many(["b0", "b1"]) == {}
        assert await store.put_many({}) == {}
        assert await store.get_many([]) == {}

    # -- scan --------------------------------------------------------------------

    async def test_scan_order_prefix_and_pages(self, store: Store) -> None:
        keys = [f"p.{i:03d}" for i in range(25)] + ["p", "q.1", "o.9", "p.é", "p.Z"]
        await store.put_many({k: k for k in keys})
        seen: list[str] = []
        cursor = None
        for _ in range(10):
            page = await store.scan("p.", limit=7, cursor=cursor)
            assert len(page.items) <= 7
            seen += [e.key for e in page.items]
            cursor = page.cursor
            if cursor is None:
                break
        expected = sorted(k for k in keys if k.startswith("p."))
        assert seen == expected
        everything = await store.scan(limit=1000)
        assert [e.key for e in everything.items] == sorted(keys)
        assert everything.cursor is None
        assert (await store.scan("zz")).items == []

    async def test_scan_stable_under_concurrent_writes(self, store: Store) -> None:
        base = [f"s.{i:03d}" for i in range(0, 60, 2)]
        await store.put_many(dict.fromkeys(base, 0))
        rng = random.Random(7)
        seen: list[str] = []
        cursor = None
        for _ in range(50):
            page = await store.scan("s.", limit=4, cursor=cursor)
            seen += [e.key for e in page.items]
            extra = f"s.{rng.randrange(1, 60, 2):03d}"  # odd: not in base
            await store.put(extra, 1)
            if rng.random() < 0.5:
                await store.delete(extra)
            await store.put(rng.choice(base), 2)  # rewriting must not move keys
            cursor = page.cursor
            if cursor is None:
                break
        assert len(seen) == len(set(seen)), "a key was returned twice"
        assert set(base) <= set(seen), "a key that existed for the whole scan was skipped"
        assert seen == sorted(seen)

    async def test_odd_keys_roundtrip_and_scan(self, store: Store) -> None:
        await store.put_many({k: k for k in ODD_KEYS})
        for key in ODD_KEYS:
            assert (await store.get(key)).value == key  # type: ignore[union-attr]
        page = await store.scan(limit=100)
        assert [e.key for e in page.items] == sorted(ODD_KEYS)
        for prefix in ["a", "a.", "a..", "é", ".", "tr", "日"]:
            got = [e.key for e in (await store.scan(prefix, limit=100)).items]
            assert got == sorted(k for k in ODD_KEYS if k.startswith(prefix)), prefix

    # -- compare-and-set and incr -----------------------------------------------

    async def test_cas(self, store: Store) -> None:
        r1 = await store.compare_and_set("c", 1, revision=None)
        with pytest.raises(ConflictError) as info:
            await store.compare_and_set("c", 2, revision=None)
        assert info.value.code == "organelle.storage.conflict"
        with pytest.raises(ConflictError):
            await store.compare_and_set("c", 2, revision=r1 + 1000)
        assert (await store.get("c")).value == 1  # type: ignore[union-attr]
        r2 = await store.compare_and_set("c", 2, revision=r1)
        assert r2 > r1
        with pytest.raises(ConflictError):
            await store.compare_and_set("c", 3, revision=r1)
        await store.delete("c")
        with pytest.raises(ConflictError):
            await store.compare_and_set("c", 3, revision=r2)
        assert await store.compare_and_set("c", 4, revision=0) > r2

    async def test_concurrent_cas_no_lost_update(self, store: Store) -> None:
        await store.put("n", 0)
        wins = 0

        async def worker() -> None:
            nonlocal wins
            for _ in range(6):
                entry = await store.get("n")
                assert entry is not None
                try:
                    await store.compare_and_set("n", entry.value + 1, revision=entry.revision)
                except ConflictError:
                    continue
                wins += 1

        await asyncio.gather(*(worker() for _ in range(8)))
        assert wins > 0
        assert (await store.get("n")).value == wins  # type: ignore[union-attr]

    async def test_incr(self, store: Store) -> None:
        assert await store.incr("i") == 1
        assert await store.incr("i", 10) == 11
        assert await store.incr("i", -2) == 9
        await asyncio.gather(*(store.incr("j") for _ in range(40)))
        assert (await store.get("j")).value == 40  # type: ignore[union-attr]
        await store.put("s", "text")
        with pytest.raises(ValidationError):
            await store.incr("s")
        assert (await store.get("s")).value == "text"  # type: ignore[union-attr]

    # -- TTL ---------------------------------------------------------------------

    async def test_ttl_never_returns_expired(self, store: Store) -> None:
        ttls = {f"t.{i:02d}": 0.05 + 0.03 * i for i in range(15)}
        for key, ttl in ttls.items():
            await store.put(key, key, ttl_s=ttl)
        await store.put("t.forever", 1)

        async def all_gone() -> None:
            """Read while keys expire; an expired read fails at once, not retried."""
            before = time.time()
            got = await store.get_many(list(ttls))
            page = await store.scan("t.", limit=100)
            singles = {k: await store.get(k) for k in list(ttls)[::4]}
            for entry in [*got.values(), *page.items, *(e for e in singles.values() if e)]:
                if entry.key != "t.forever" and (
                    entry.expires_at is None or entry.expires_at <= before - 0.001
                ):
                    pytest.fail(f"expired read of {entry.key}: {entry.expires_at}")
            assert not got, f"{len(got)} keys not expired yet"

        await eventually(all_gone, timeout_s=5, interval_s=0.03)
        assert await store.get_many(list(ttls)) == {}
        assert [e.key for e in (await store.scan("t.")).items] == ["t.forever"]
        assert await store.compare_and_set("t.00", "again", revision=None) > 0
        assert await store.incr("t.01") == 1

    async def test_ttl_expiry_and_sweep(self, store: Store) -> None:
        await store.put("e", 1, ttl_s=0.05)
        entry = await store.get("e")
        assert entry is not None
        assert entry.expires_at is not None
        assert entry.expires_at > time.time()
        await asyncio.sleep(0.25)  # the sweeper (every 0.1 s) had its chance
        assert await store.get("e") is None
        assert await store.delete("e") is False
        assert await store.sweep() >= 0  # type: ignore[attr-defined]

    # -- bad input ---------------------------------------------------------------

    async def test_bad_input_is_typed_and_changes_nothing(self, store: Store) -> None:
        await store.put("keep", "v")
        rev = (await store.get("keep")).revision  # type: ignore[union-attr]
        bad_calls: list[Any] = [
            store.put("", 1),
            store.put(123, 1),  # type: ignore[arg-type]
            store.put("nul\x00", 1),
            store.put("x" * 5000, 1),
            store.put("\ud800", 1),
            store.put("keep", object()),
            store.put("keep", b"x" * (64 * 1024 + 1)),
            store.put("keep", 2, ttl_s=0),
            store.put("keep", 2, ttl_s=-1),
            store.put("keep", 2, ttl_s=math.nan),
            store.put("keep", 2, ttl_s="1"),  # type: ignore[arg-type]
            store.put_many({"ok": 1, "keep": object()}),
            store.put_many({"ok": 1, "": 2}),
            store.compare_and_set("keep", 2, revision=-1),
            store.compare_and_set("keep", 2, revision="1"),  # type: ignore[arg-type]
            store.compare_and_set("keep", object(), revision=rev),
            store.get_many("keep"),
            store.delete_many([""]),
            store.scan(limit=0),
            store.scan(cursor=5),  # type: ignore[arg-type]
            store.incr("keep", by=1.5),  # type: ignore[arg-type]
            store.get(""),
        ]
        for call in bad_calls:
            with pytest.raises(ValidationError):
                await call
        entry = await store.get("keep")
        assert entry is not None
        assert (entry.value, entry.revision) == ("v", rev)
        assert await store.get("ok") is None

    # -- watch -------------------------------------------------------------------

    async def test_watch(self, store: Store) -> None:
        async with store.watch("w.") as changes:
            await store.put("w.1", {"n": 1})
            await store.put("other", 0)
            await store.put("w.2", 2)
            await store.delete("w.1")
            got = [await asyncio.wait_for(anext(changes), 5) for _ in range(3)]
        assert [(c.key, c.op) for c in got] == [("w.1", "put"), ("w.2", "put"), ("w.1", "delete")]
        assert got[0].value == {"n": 1}
        assert got[2].value is None
        assert got[0].revision < got[1].revision < got[2].revision

    # -- namespaces --------------------------------------------------------------

    async def test_namespaces(self, store: Store) -> None:
        inv = NamespacedStore(store, "inventory")
        orders = inv.namespace("orders")
        await inv.put("config", 1)
        await orders.put("config", 2)
        assert (await inv.get("config")).value == 1  # type: ignore[union-attr]
        assert (await orders.get("config")).value == 2  # type: ignore[union-attr]
        assert [e.key for e in (await inv.scan()).items] == ["config"]
        assert (await store.get("inventory.config")).value == 1  # type: ignore[union-attr]
        assert await inv.incr("n") == 1
        assert set(await inv.get_many(["config", "n"])) == {"config", "n"}
        with pytest.raises(ValidationError):
            NamespacedStore(store, "bad.name")


class TestMemoryStore(StoreContract):
    def make(self, **opts: Any) -> Store:
        return MemoryStore(**opts)


class TestSqliteStore(StoreContract):
    @pytest.fixture(autouse=True)
    def _dir(self, tmp_path: Path) -> None:
        self.path = str(tmp_path / "kv.db")

    def make(self, **opts: Any) -> Store:
        return SqliteStore(self.path, **opts)


class TestSqliteMemoryStore(StoreContract):
    def make(self, **opts: Any) -> Store:
        return SqliteStore(":memory:", **opts)


class TestPostgresStore(StoreContract):
    @pytest.fixture(autouse=True)
    def _server(self, postgres_server: PostgresServer) -> None:
        self.dsn = postgres_server.dsn
        self.table = f"kv_{uuid.uuid4().hex[:12]}"

    def make(self, **opts: Any) -> Store:
        return PostgresStore(self.dsn, table=self.table, max_size=4, **opts)


class TestPostgresNotifyStore(TestPostgresStore):
    """The same contract with ``pg_notify`` on every write (cross-process watch)."""

    def make(self, **opts: Any) -> Store:
        return super().make(notify=True, **opts)


class TestNatsKvStore(StoreContract):
    @pytest.fixture(autouse=True)
    def _server(self, nats_server: NatsServer) -> None:
        self.url = nats_server.url
        self.bucket = f"t{uuid.uuid4().hex[:12]}"

    def make(self, **opts: Any) -> Store:
        return NatsKvStore(servers=self.url, bucket=self.bucket, **opts)
