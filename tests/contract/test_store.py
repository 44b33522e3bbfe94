"""One behaviour suite for every ``Store`` backend: memory, SQLite, PostgreSQL, NATS KV, Redis."""

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

from organelle.errors import (
    ConflictError,
    TransactionClosedError,
    TransactionError,
    TransactionUnsupportedError,
    ValidationError,
)
from organelle.storage import (
    MemoryStore,
    NamespacedStore,
    NatsKvStore,
    PostgresStore,
    RedisStore,
    SqliteStore,
    Store,
    current_tx,
)
from organelle.testing import eventually
from organelle.testing.servers import NatsServer, PostgresServer, RedisServer

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

    async def test_concurrent_creates_have_one_winner(self, store: Store) -> None:
        """``compare_and_set(revision=None)`` racing on an absent (or deleted) key: one write wins."""
        for round_ in range(6):
            key = f"new{round_ // 2}"
            if round_ % 2:
                await store.delete(key)  # the second race on each key starts from a delete
            results = await asyncio.gather(
                *(store.compare_and_set(key, i, revision=None) for i in range(8)),
                return_exceptions=True,
            )
            wins = [r for r in results if isinstance(r, int)]
            assert len(wins) == 1, results
            assert all(isinstance(r, ConflictError) for r in results if not isinstance(r, int))
            entry = await store.get(key)
            assert entry is not None
            assert entry.revision == wins[0]

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


class TransactionContract(StoreContract):
    """``transaction()`` on the backends that have transactions (all but NATS KV)."""

    serializable = True  # a read inside a transaction stays true until it commits
    outside_reads_wait = False  # reads from outside wait for the commit (one connection)

    async def test_tx_commit(self, store: Store) -> None:
        await store.put("keep", 0)
        async with store.transaction() as tx:
            r1 = await tx.put("a", 1)
            revs = await tx.put_many({"b": 2, "c": 3})
            assert await tx.delete("keep") is True
            assert await tx.delete("never") is False
            assert await tx.incr("n", 5) == 5
            assert await tx.delete_many(["c", "never"]) == 1
        got = await store.get_many(["a", "b", "c", "keep", "n"])
        assert {k: e.value for k, e in got.items()} == {"a": 1, "b": 2, "n": 5}
        assert got["a"].revision == r1
        assert got["b"].revision == revs["b"]
        assert r1 < min(revs.values())
        assert await store.put("later", 0) > got["n"].revision > max(revs.values())

    async def test_tx_rolls_back_on_exception(self, store: Store) -> None:
        rev = await store.put("keep", "v")
        with pytest.raises(RuntimeError, match="boom"):
            async with store.transaction() as tx:
                await tx.put("new", 1)
                await tx.put("keep", "changed")
                await tx.put_many({"m1": 1, "m2": 2})
                await tx.incr("n")
                await tx.delete("keep")
                raise RuntimeError("boom")
        assert await store.get_many(["new", "m1", "m2", "n"]) == {}
        entry = await store.get("keep")
        assert entry is not None
        assert (entry.value, entry.revision) == ("v", rev)

    async def test_tx_reads_its_own_writes(self, store: Store) -> None:
        await store.put_many({"r.a": 1, "r.b": 2, "r.c": 3})
        async with store.transaction() as tx:
            await tx.put("r.b", 20)
            await tx.delete("r.c")
            await tx.put_many({"r.d": 4, "r.0": 0})
            assert (await tx.get("r.b")).value == 20  # type: ignore[union-attr]
            assert await tx.get("r.c") is None
            got = await tx.get_many(["r.a", "r.b", "r.c", "r.d"])
            assert {k: e.value for k, e in got.items()} == {"r.a": 1, "r.b": 20, "r.d": 4}
            page = await tx.scan("r.", limit=2)
            assert [e.key for e in page.items] == ["r.0", "r.a"]
            rest = await tx.scan("r.", limit=2, cursor=page.cursor)
            assert [(e.key, e.value) for e in rest.items] == [("r.b", 20), ("r.d", 4)]
            assert rest.cursor is None

    async def test_tx_isolation(self, store: Store) -> None:
        await store.put("iso", "old")
        opened = asyncio.Event()

        async def read() -> Any:
            await opened.wait()
            return (await store.get("iso")).value  # type: ignore[union-attr]

        async def write() -> int:
            await opened.wait()
            return await store.put("iso", "outside")

        # Started before the block: their context holds no transaction, so they do not join.
        reader, writer = asyncio.create_task(read()), asyncio.create_task(write())
        async with store.transaction() as tx:
            await tx.put("iso", "inside")
            opened.set()
            if not self.outside_reads_wait:
                assert await asyncio.wait_for(reader, 5) == "old"  # never the uncommitted value
            done, _ = await asyncio.wait({writer}, timeout=0.2)
            assert not done, "a write from outside did not wait for the transaction"
        rev = await asyncio.wait_for(writer, 5)
        assert await asyncio.wait_for(reader, 5) in {"old", "inside"}
        entry = await store.get("iso")
        assert entry is not None
        assert (entry.value, entry.revision) == ("outside", rev)

    async def test_tx_cas_and_incr(self, store: Store) -> None:
        r1 = await store.put("c", 1)
        async with store.transaction() as tx:
            r2 = await tx.compare_and_set("c", 2, revision=r1)
            with pytest.raises(ConflictError):  # caught: the transaction goes on
                await tx.compare_and_set("c", 3, revision=r1)
            assert await tx.compare_and_set("fresh", 1, revision=None) > r2
            assert await tx.incr("n") == 1
            assert await tx.incr("n", 4) == 5
        got = await store.get_many(["c", "fresh", "n"])
        assert {k: e.value for k, e in got.items()} == {"c": 2, "fresh": 1, "n": 5}
        assert got["c"].revision == r2
        with pytest.raises(ConflictError):  # not caught: everything rolls back
            async with store.transaction() as tx:
                await tx.put("other", 1)
                await tx.compare_and_set("c", 9, revision=r1)
        assert await store.get("other") is None
        assert (await store.get("c")).revision == r2  # type: ignore[union-attr]

    async def test_tx_ttl(self, store: Store) -> None:
        await store.put("ctr", 1, ttl_s=60)
        async with store.transaction() as tx:
            await tx.put("t", 1, ttl_s=0.3)
            entry = await tx.get("t")
            assert entry is not None
            assert entry.expires_at is not None
            assert entry.expires_at > time.time()
            assert await tx.incr("ctr") == 2
        ctr = await store.get("ctr")
        assert ctr is not None
        assert ctr.expires_at is not None  # incr keeps the expiry, inside a transaction too

        async def gone() -> None:
            assert await store.get("t") is None

        await eventually(gone, timeout_s=5, interval_s=0.05)

    async def test_tx_watch_sees_only_committed(self, store: Store) -> None:
        async with store.watch("w.") as changes:
            with pytest.raises(RuntimeError):
                async with store.transaction() as tx:
                    await tx.put("w.rolled", 1)
                    raise RuntimeError
            async with store.transaction() as tx:
                await tx.put("w.a", 1)
                await tx.put("w.b", 2)
                with pytest.raises(TimeoutError):  # nothing before the commit
                    await asyncio.wait_for(anext(changes), 0.1)
            await store.put("w.after", 3)
            got = [await asyncio.wait_for(anext(changes), 5) for _ in range(3)]
        assert [(c.key, c.value) for c in got] == [("w.a", 1), ("w.b", 2), ("w.after", 3)]

    async def test_tx_used_after_its_block_is_a_typed_error(self, store: Store) -> None:
        async with store.transaction() as tx:
            await tx.put("a", 1)
        with pytest.raises(RuntimeError):
            async with store.transaction() as rolled:
                raise RuntimeError
        for done in (tx, rolled):
            calls: list[Any] = [
                done.get("a"),
                done.get_many(["a"]),
                done.put("b", 2),
                done.put_many({"b": 2}),
                done.delete("a"),
                done.delete_many(["a"]),
                done.scan(),
                done.compare_and_set("a", 2, revision=None),
                done.incr("n"),
            ]
            for call in calls:
                with pytest.raises(TransactionClosedError) as info:
                    await call
                assert info.value.code == "organelle.storage.tx_closed"
            with pytest.raises(TransactionClosedError):
                done.on_end(lambda _committed: None)
        assert await store.get_many(["b", "n"]) == {}
        assert (await store.get("a")).value == 1  # type: ignore[union-attr]

    async def test_tx_plain_calls_and_views_join_the_current_one(self, store: Store) -> None:
        view = NamespacedStore(store, "mod")
        assert current_tx(store) is None
        with pytest.raises(RuntimeError):
            async with store.transaction() as tx:
                await store.put("plain", 1)
                await view.put("k", 2)
                assert (await tx.get("mod.k")).value == 2  # type: ignore[union-attr]
                assert (await view.get("k")).value == 2  # type: ignore[union-attr]
                assert (await store.get("plain")).value == 1  # type: ignore[union-attr]
                assert current_tx(store) is not None
                joined = current_tx(view)
                assert joined is not None
                assert (await joined.get("k")).value == 2  # type: ignore[union-attr]
                # tasks started inside the block carry its context: they join too
                assert sorted(await asyncio.gather(store.incr("g"), view.incr("g"))) == [1, 1]
                raise RuntimeError
        assert await store.get_many(["plain", "mod.k", "g", "mod.g"]) == {}
        assert current_tx(store) is None
        async with view.transaction() as vtx:  # a view's transaction prefixes its keys
            await vtx.put("v", 1)
            await store.put("bare", 1)
            assert (await store.get("mod.v")).value == 1  # type: ignore[union-attr]
        got = await store.get_many(["mod.v", "bare"])
        assert {k: e.value for k, e in got.items()} == {"mod.v": 1, "bare": 1}

    async def test_tx_nested_is_a_savepoint(self, store: Store) -> None:
        async with store.transaction() as outer:
            await outer.put("o", 1)
            with pytest.raises(RuntimeError):
                async with store.transaction() as inner:
                    await inner.put("i", 1)
                    await outer.put("o", 2)
                    raise RuntimeError
            assert await outer.get("i") is None
            assert (await outer.get("o")).value == 1  # type: ignore[union-attr]
            async with NamespacedStore(store, "v").transaction() as inner:
                await inner.put("j", 1)
            with pytest.raises(TransactionClosedError):
                await inner.put("x", 1)
            assert (await outer.get("v.j")).value == 1  # type: ignore[union-attr]

            async def nest_from_a_child() -> None:
                async with store.transaction():
                    pass

            with pytest.raises(TransactionError):
                await asyncio.create_task(nest_from_a_child())
        got = await store.get_many(["o", "i", "v.j"])
        assert {k: e.value for k, e in got.items()} == {"o": 1, "v.j": 1}

    async def test_concurrent_transactions_count_exactly(self, store: Store) -> None:
        async def worker() -> None:
            for _ in range(10):
                async with store.transaction() as tx:
                    await tx.incr("n")
                    if self.serializable:  # read-modify-write holds where reads are serializable
                        entry = await tx.get("m")
                        await tx.put("m", 1 + (0 if entry is None else entry.value))

        await asyncio.gather(*(worker() for _ in range(20)))
        assert (await store.get("n")).value == 200  # type: ignore[union-attr]
        if self.serializable:
            assert (await store.get("m")).value == 200  # type: ignore[union-attr]


class TestMemoryStore(TransactionContract):
    def make(self, **opts: Any) -> Store:
        return MemoryStore(**opts)


class TestSqliteStore(TransactionContract):
    @pytest.fixture(autouse=True)
    def _dir(self, tmp_path: Path) -> None:
        self.path = str(tmp_path / "kv.db")

    def make(self, **opts: Any) -> Store:
        return SqliteStore(self.path, **opts)


class TestSqliteMemoryStore(TransactionContract):
    outside_reads_wait = True  # one connection serves reads and writes

    def make(self, **opts: Any) -> Store:
        return SqliteStore(":memory:", **opts)


class TestPostgresStore(TransactionContract):
    serializable = False  # READ COMMITTED: read-modify-write needs incr or compare_and_set

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

    async def test_transactions_are_refused(self, store: Store) -> None:
        with pytest.raises(TransactionUnsupportedError) as info:
            async with store.transaction():
                pytest.fail("NATS KV opened a transaction")
        assert info.value.code == "organelle.storage.tx_unsupported"
        assert info.value.details == {"backend": "NatsKvStore"}
        assert "no multi-key transactions" in str(info.value)
        with pytest.raises(TransactionUnsupportedError):
            NamespacedStore(store, "mod").transaction()
        assert current_tx(store) is None
        assert await store.put("still", 1) > 0  # every other operation works as before


class TestRedisStore(StoreContract):
    @pytest.fixture(autouse=True)
    def _server(self, redis_server: RedisServer) -> None:
        self.url = redis_server.url
        self.prefix = f"t{uuid.uuid4().hex[:12]}"

    def make(self, **opts: Any) -> Store:
        return RedisStore(self.url, prefix=self.prefix, **opts)

    async def test_transactions_are_refused(self, store: Store) -> None:
        with pytest.raises(TransactionUnsupportedError) as info:
            async with store.transaction():
                pytest.fail("Redis opened a transaction")
        assert info.value.details == {"backend": "RedisStore"}
        assert current_tx(store) is None
        assert await store.put("still", 1) > 0
