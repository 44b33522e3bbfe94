"""Storage backends beside their raw drivers, measured in the same run.

For each backend: single put / get / scan-page latency (one in flight) and
throughput with 32 in flight, next to the raw driver doing the same work
(same table shape, same msgpack-encoded value, same durability settings):
sqlite3 in a one-thread executor (the only way to use it without blocking the
loop), asyncpg on a pool, nats-py KV. Plus SQLite ``put_many`` keys/s with
``synchronous=FULL``, and PostgreSQL put with 32 in flight and ``notify=True``
(what opting into cross-process watch costs; no target). And the cost of the
current-transaction lookup every operation makes (``store.transaction()``:
plain calls join the context's transaction): MemoryStore get/put beside the
same store with the lookup taken out, interleaved runs, best of each, and the
lookup alone in ns. Run: ``python bench/storage.py`` (a few minutes), or
``python bench/storage.py --lookup`` for the lookup rows alone (printed, not
published). ``--redis`` runs RedisStore beside raw redis-py (``SET`` / ``GET``
/ ``ZRANGEBYLEX`` + ``MGET``: no revision, no index upkeep, no change feed) in
its own section, ``storage_redis``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _common import Row, percentile, publish

# Scripts beside this one (bench/http.py) would shadow stdlib modules of the
# same name, which the drivers import; only _common is needed from here.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from organelle.storage import (  # noqa: E402
    MemoryStore,
    NatsKvStore,
    PostgresStore,
    RedisStore,
    SqliteStore,
    Store,
)
from organelle.storage._tx import any_tx  # noqa: E402
from organelle.testing.servers import NatsServer, PostgresServer, RedisServer  # noqa: E402

VALUE = {"sku": "A-1", "qty": 3, "tags": ["x", "y"], "price": 9.99}
ENC = msgspec.msgpack.encode
Op = Callable[[int], Awaitable[Any]]


async def seq(op: Op, n: int) -> tuple[float, float, float]:
    """Ops/s, p50 µs, p99 µs with one operation in flight."""
    lat = []
    start = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        await op(i)
        lat.append((time.perf_counter() - t) * 1e6)
    total = time.perf_counter() - start
    return n / total, percentile(lat, 50), percentile(lat, 99)


async def conc(op: Op, n: int, width: int = 32) -> float:
    """Ops/s with ``width`` operations in flight."""
    it = iter(range(n))

    async def worker() -> None:
        for i in it:
            await op(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(width)))
    return n / (time.perf_counter() - start)


class RawSqlite:
    def __init__(self, path: str) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(1)
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute(
            "CREATE TABLE kv (key TEXT PRIMARY KEY, kind INTEGER, value BLOB, rev INTEGER, "
            "expires_at REAL) WITHOUT ROWID"
        )
        self.rev = 0

    def _put(self, key: str, data: bytes) -> int:
        self.rev += 1
        self.conn.execute(
            "INSERT INTO kv VALUES (?, 1, ?, ?, NULL) ON CONFLICT(key) DO UPDATE SET "
            "value=excluded.value, rev=excluded.rev",
            (key, data, self.rev),
        )
        return self.rev

    def _get(self, key: str) -> Any:
        row = self.conn.execute(
            "SELECT value, rev, expires_at FROM kv WHERE key = ? "
            "AND (expires_at IS NULL OR expires_at > ?)",
            (key, time.time()),
        ).fetchone()
        return msgspec.msgpack.decode(row[0])

    def _scan(self, start: str) -> Any:
        rows = self.conn.execute(
            "SELECT key, kind, value, rev, expires_at FROM kv WHERE key > ? "
            "AND (expires_at IS NULL OR expires_at > ?) ORDER BY key LIMIT 101",
            (start, time.time()),
        ).fetchall()
        return [msgspec.msgpack.decode(r[2]) for r in rows]

    def _put_many(self, items: dict[str, bytes]) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        base = self.rev
        self.rev += len(items)
        self.conn.executemany(
            "INSERT INTO kv VALUES (?, 1, ?, ?, NULL) ON CONFLICT(key) DO UPDATE SET "
            "value=excluded.value, rev=excluded.rev",
            [(k, v, base + i) for i, (k, v) in enumerate(items.items())],
        )
        self.conn.execute("COMMIT")

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def put(self, key: str, value: Any) -> int:
        return int(await self.run(self._put, key, ENC(value)))

    async def get(self, key: str) -> Any:
        return await self.run(self._get, key)

    async def scan(self, start: str) -> Any:
        return await self.run(self._scan, start)


class RawPg:
    def __init__(self, pool: Any, table: str) -> None:
        self.pool, self.t = pool, table

    @classmethod
    async def open(cls, dsn: str) -> RawPg:
        import asyncpg

        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=10)
        table = f"raw_{uuid.uuid4().hex[:8]}"
        await pool.execute(
            f'CREATE TABLE {table} (key text COLLATE "C" PRIMARY KEY, kind smallint, value bytea, '
            f"rev bigint, expires_at float8); CREATE SEQUENCE {table}_rev"
        )
        return cls(pool, table)

    async def put(self, key: str, value: Any) -> int:
        return int(
            await self.pool.fetchval(
                f"INSERT INTO {self.t} VALUES ($1, 1, $2, nextval('{self.t}_rev'), NULL) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, rev = EXCLUDED.rev "
                "RETURNING rev",
                key,
                ENC(value),
            )
        )

    async def get(self, key: str) -> Any:
        row = await self.pool.fetchrow(
            f"SELECT value, rev, expires_at FROM {self.t} WHERE key = $1 "
            "AND (expires_at IS NULL OR expires_at > extract(epoch from clock_timestamp()))",
            key,
        )
        return msgspec.msgpack.decode(row["value"])

    async def scan(self, start: str) -> Any:
        rows = await self.pool.fetch(
            f"SELECT key, kind, value, rev, expires_at FROM {self.t} WHERE key > $1 AND "
            "(expires_at IS NULL OR expires_at > extract(epoch from clock_timestamp())) "
            "ORDER BY key LIMIT 101",
            start,
        )
        return [msgspec.msgpack.decode(r["value"]) for r in rows]


class RawNats:
    def __init__(self, nc: Any, kv: Any) -> None:
        self.nc, self.kv = nc, kv

    @classmethod
    async def open(cls, url: str) -> RawNats:
        import nats

        nc = await nats.connect(url)
        kv = await nc.jetstream().create_key_value(
            bucket=f"raw{uuid.uuid4().hex[:8]}", history=1, direct=True
        )
        return cls(nc, kv)

    async def put(self, key: str, value: Any) -> int:
        return int(await self.kv.put(key, ENC(value)))

    async def get(self, key: str) -> Any:
        return msgspec.msgpack.decode((await self.kv.get(key)).value)

    scan = None  # nats-py has no ordered listing (kv.keys() is unordered and racy)


class RawRedis:
    """What a hand-written redis-py store does: a value per key and a lex index for scans."""

    def __init__(self, client: Any) -> None:
        self.r = client

    async def put(self, key: str, value: Any) -> int:
        pipe = self.r.pipeline(transaction=False)
        pipe.set(b"raw:" + key.encode(), ENC(value))
        pipe.zadd(b"raw-idx", {key: 0})
        await pipe.execute()
        return 1

    async def get(self, key: str) -> Any:
        return msgspec.msgpack.decode(await self.r.get(b"raw:" + key.encode()))

    async def scan(self, start: str) -> Any:
        keys = await self.r.zrangebylex(b"raw-idx", b"(" + start.encode(), b"+", start=0, num=100)
        values = await self.r.mget([b"raw:" + k for k in keys])
        return [msgspec.msgpack.decode(v) for v in values if v is not None]


async def redis_only() -> None:
    """RedisStore beside raw redis-py on one redis-server (no persistence on either side)."""
    import redis.asyncio

    with RedisServer() as server:
        store = RedisStore(server.url, prefix="bench")
        raw = redis.asyncio.Redis.from_url(server.url)
        rows = await compare("RedisStore", store, RawRedis(raw), n_put=1500, n_get=3000, n_scan=500)
        await store.close()
        await raw.aclose()
    publish(
        "storage_redis",
        "Storage on Redis: RedisStore vs raw redis-py",
        rows,
        notes="One redis-server without persistence, both sides on it, same msgpack value. "
        "Raw: `SET` + `ZADD` (pipelined) per put, `GET`, `ZRANGEBYLEX` + `MGET` per page; "
        "RedisStore: one Lua script per put (revision counter, hash, key index, expiry index, "
        "`PUBLISH` of the change), `HMGET` per get, one script per scan page. Measured on a "
        "shared 2-core machine with other jobs running: compare the ratios.\n",
    )


async def compare(
    name: str, store: Store, raw: Any, *, n_put: int, n_get: int, n_scan: int
) -> list[Row]:
    rows: list[Row] = []
    keys = [f"k.{i:06d}" for i in range(n_put)]

    async def o_put(i: int) -> Any:
        return await store.put(keys[i % n_put], VALUE)

    async def r_put(i: int) -> Any:
        return await raw.put(keys[i % n_put], VALUE)

    async def o_get(i: int) -> Any:
        return await store.get(keys[i % n_put])

    async def r_get(i: int) -> Any:
        return await raw.get(keys[i % n_put])

    async def o_scan(i: int) -> Any:
        return await store.scan("k.", limit=100, cursor=keys[(i * 37) % (n_put - 200)])

    async def r_scan(i: int) -> Any:
        return await raw.scan(keys[(i * 37) % (n_put - 200)])

    cases = [
        ("put", o_put, r_put, n_put),
        ("get", o_get, r_get, n_get),
        ("scan 100", o_scan, r_scan, n_scan),
    ]
    for case, mine, theirs, n in cases:
        if case == "scan 100" and raw.scan is None:
            await mine(0)
            o_ops, o_p50, o_p99 = await seq(mine, n)
            rows.append(
                Row(
                    f"{case} (1 in flight)", name, o_ops, "ops/s", "no raw scan", None, o_p50, o_p99
                )
            )
            continue
        await theirs(0)  # warm up both
        await mine(0)
        r_ops, r_p50, r_p99 = await seq(theirs, n)
        o_ops, o_p50, o_p99 = await seq(mine, n)
        rows.append(
            Row(
                f"{case} (1 in flight)",
                name,
                o_ops,
                "ops/s",
                f"{r_ops:,.0f} raw",
                o_ops / r_ops,
                o_p50,
                o_p99,
                "≥ 0.7×",
                {"raw_p50_us": r_p50, "raw_p99_us": r_p99},
            )
        )
        print(rows[-1])
    for case, mine, theirs, n in cases[:2]:
        r_ops = await conc(theirs, n * 2)
        o_ops = await conc(mine, n * 2)
        rows.append(
            Row(
                f"{case} (32 in flight)",
                name,
                o_ops,
                "ops/s",
                f"{r_ops:,.0f} raw",
                o_ops / r_ops,
                target="≥ 0.7×",
            )
        )
        print(rows[-1])
    return rows


async def pg_notify_puts(dsn: str, raw: RawPg) -> list[Row]:
    """What opting into cross-process watch costs: put with 32 in flight, notify on."""
    store = PostgresStore(dsn, table="bench_notify", notify=True)
    keys = [f"k.{i:06d}" for i in range(1500)]

    async def o_put(i: int) -> Any:
        return await store.put(keys[i % len(keys)], VALUE)

    async def r_put(i: int) -> Any:
        return await raw.put(keys[i % len(keys)], VALUE)

    await o_put(0)
    r_ops = await conc(r_put, 3000)
    o_ops = await conc(o_put, 3000)
    await store.close()
    row = Row(
        "put (32 in flight), notify=true",
        "PostgresStore",
        o_ops,
        "ops/s",
        f"{r_ops:,.0f} raw",
        o_ops / r_ops,
        target="opt-in: no target",
    )
    print(row)
    return [row]


async def sqlite_batches(tmp: str) -> list[Row]:
    store = SqliteStore(f"{tmp}/batch.db")
    raw = RawSqlite(f"{tmp}/batch-raw.db")
    batch, rounds = 1000, 40
    start = time.perf_counter()
    for r in range(rounds):
        await store.put_many({f"b.{r:03d}.{i:04d}": VALUE for i in range(batch)})
    mine = batch * rounds / (time.perf_counter() - start)
    start = time.perf_counter()
    for r in range(rounds):
        await raw.run(raw._put_many, {f"b.{r:03d}.{i:04d}": ENC(VALUE) for i in range(batch)})
    theirs = batch * rounds / (time.perf_counter() - start)
    await store.close()
    return [
        Row(
            "put_many ×1000, synchronous=FULL",
            "SqliteStore",
            mine,
            "keys/s",
            f"{theirs:,.0f} raw",
            mine / theirs,
            target="≥ 50 k keys/s",
        )
    ]


class _NoLookupMemory(MemoryStore):
    """MemoryStore as it was before transactions: no current-transaction lookup."""

    async def get(self, key: str, *, type: Any = None) -> Any:  # noqa: A002
        key = self._key(key)
        self._check_open()
        rec = self._live(key, time.time())
        return None if rec is None else self._entry(key, rec, type)

    async def _apply(self, fn: Any) -> Any:
        self._check_open()
        return fn(self)


def _lookup_alone_ns(store: MemoryStore, n: int = 200_000) -> float:
    """ns per ``any_tx() and store._current()`` with no transaction open: what each op adds."""
    best = float("inf")
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(n):
            any_tx() and store._current()
        empty = time.perf_counter()
        for _ in range(n):
            pass
        best = min(best, ((empty - start) - (time.perf_counter() - empty)) / n * 1e9)
    return best


async def lookup_cost() -> list[Row]:
    """MemoryStore get/put with and without the current-transaction lookup (interleaved).

    The memory backend is where a few dozen ns show: a SQLite or PostgreSQL
    operation takes 40+ µs of thread hand-off or round trip, in which the
    lookup (the last row, measured alone) is lost in the noise.
    """
    keys = [f"k.{i:05d}" for i in range(1000)]
    rows: list[Row] = []
    with_it, without = MemoryStore(), _NoLookupMemory()
    for store in (with_it, without):
        await store.put_many(dict.fromkeys(keys, VALUE))
    for case in ("get", "put"):

        def op(store: Store, case: str = case) -> Callable[[int], Awaitable[Any]]:
            if case == "get":
                return lambda i: store.get(keys[i % 1000])
            return lambda i: store.put(keys[i % 1000], VALUE)

        best = {"with": float("inf"), "without": float("inf")}
        for _ in range(9):  # interleaved, best of each: the machine is shared and noisy
            for label, store in (("with", with_it), ("without", without)):
                ops, _, _ = await seq(op(store), 20_000)
                best[label] = min(best[label], 1e6 / ops)
        rows.append(
            Row(
                f"{case}, current-tx lookup (1 in flight)",
                "MemoryStore",
                1e6 / best["with"],
                "ops/s",
                f"{1e6 / best['without']:,.0f} without it",
                best["without"] / best["with"],
                target="≥ 0.95×",
                extra={"us_with": best["with"], "us_without": best["without"]},
            )
        )
        print(rows[-1])
    ns = _lookup_alone_ns(with_it)
    rows.append(Row("current-tx lookup alone, none open", "BaseStore", ns, "ns/op"))
    print(rows[-1])
    for store in (with_it, without):
        await store.close()
    return rows


async def main() -> None:
    rows: list[Row] = []
    if "--lookup" in sys.argv:
        await lookup_cost()
        return
    if "--redis" in sys.argv:
        await redis_only()
        return
    rows += await lookup_cost()
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(f"{tmp}/kv.db")
        rows += await compare(
            "SqliteStore", store, RawSqlite(f"{tmp}/raw.db"), n_put=400, n_get=3000, n_scan=300
        )
        await store.close()
        rows += await sqlite_batches(tmp)
    with PostgresServer() as pg:
        store = PostgresStore(pg.dsn, table="bench")
        raw_pg = await RawPg.open(pg.dsn)
        rows += await compare("PostgresStore", store, raw_pg, n_put=1500, n_get=3000, n_scan=500)
        await store.close()
        rows += await pg_notify_puts(pg.dsn, raw_pg)
        await raw_pg.pool.close()
    with NatsServer() as ns:
        store = NatsKvStore(servers=ns.url, bucket="bench")
        raw_nats = await RawNats.open(ns.url)
        rows += await compare("NatsKvStore", store, raw_nats, n_put=1500, n_get=3000, n_scan=20)
        await store.close()
        await raw_nats.nc.close()
    publish(
        "storage",
        "Storage: organelle backends vs raw drivers",
        rows,
        notes="Same value (msgpack, ~40 bytes), same table shape and durability on both sides. "
        "Raw sqlite3 runs in a one-thread executor; organelle's SqliteStore uses its own "
        "writer/reader threads with group commit. PostgresStore runs with notify off (the "
        "default); the notify=true row shows the cost of opting into cross-process watch. "
        "NATS KV scan = list keys + get a page.\n",
    )


if __name__ == "__main__":
    asyncio.run(main())
