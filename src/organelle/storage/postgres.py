"""``PostgresStore``: shared durable storage on PostgreSQL (asyncpg pool).

One table per store (``key text COLLATE "C"`` so ordering is by code point,
as on every backend), revisions from one sequence, expiry computed with the
server's clock so clients with skewed clocks agree. Every write is a single
statement (``incr`` is one short transaction), atomic across processes.
Writes also ``pg_notify`` (key, revision, op) in the same transaction, which
``watch`` turns into changes: a watcher reads the value back, so fast
successive puts of one key may be seen once, at the latest value.
"""

# Table names are interpolated into SQL only after matching _IDENT; values are
# always bound parameters.
# ruff: noqa: S608

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from organelle.errors import ConfigError
from organelle.storage._common import WATCH_QUEUE_MAX, BaseStore, prefix_upper
from organelle.storage.base import Change, Entry, Page, StorageUnavailableError, Subscription, Watch
from organelle.storage.retry import retrying

__all__ = ["PostgresStore"]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,50}$")
_NOW = "extract(epoch from clock_timestamp())::float8"
_LIVE = f"(expires_at IS NULL OR expires_at > {_NOW})"
_SEEN_MAX = 100_000  # per-key dedup memory of a watcher; reset past this
_TRANSIENT_STATES = {"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53300"}


def _transient(exc: BaseException) -> bool:
    import asyncpg

    if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError):
        return True
    state = getattr(exc, "sqlstate", None)
    return isinstance(exc, asyncpg.PostgresError) and (
        state in _TRANSIENT_STATES or str(state).startswith("08")
    )


class PostgresStore(BaseStore):
    """Store on PostgreSQL.

    Args:
        dsn: ``postgresql://user:pass@host:port/db``.
        table: table name (a sequence ``<table>_rev`` is created beside it).
        schema: schema holding the table.
        min_size: pool minimum connections.
        max_size: pool maximum connections.
        **opts: see ``BaseStore``.
    """

    def __init__(
        self,
        dsn: str,
        *,
        table: str = "organelle_kv",
        schema: str = "public",
        min_size: int = 1,
        max_size: int = 10,
        **opts: Any,
    ) -> None:
        super().__init__(**opts)
        if not _IDENT.match(table) or not _IDENT.match(schema):
            raise ConfigError(f"bad PostgreSQL table or schema name: {schema}.{table}")
        self.dsn = dsn
        self._t = f'"{schema}"."{table}"'
        self._seq = f'\'"{schema}"."{table}_rev"\''
        self.channel = "organelle_kv_" + hashlib.sha1(f"{schema}.{table}".encode()).hexdigest()[:20]  # noqa: S324 - a name, not security
        self._sizes = (min_size, max_size)
        self._pool: Any = None
        self._open_lock = asyncio.Lock()
        self._sql = self._statements()

    def _statements(self) -> dict[str, str]:
        t, seq, ch = self._t, self._seq, f"'{self.channel}'"
        exp = f"CASE WHEN $4::float8 IS NULL THEN NULL ELSE {_NOW} + $4::float8 END"
        upsert = (
            "ON CONFLICT (key) DO UPDATE SET kind = EXCLUDED.kind, value = EXCLUDED.value, "
            "rev = EXCLUDED.rev, expires_at = EXCLUDED.expires_at"
        )
        # Small values ride in the notification (8000-byte payload limit, with
        # room for a JSON-escaped key), so watchers see every put; bigger ones
        # are read back by the watcher.
        small = "3 * octet_length(value) / 2 + 6 * octet_length(key) < 7000"
        note = (
            f"pg_notify({ch}, json_build_array(key, rev, 'put', kind, CASE WHEN {small} "
            "THEN encode(value, 'base64') END)::text)"
        )
        gone = f"pg_notify({ch}, json_build_array(key, nextval({seq}), CASE WHEN live THEN 'delete' ELSE 'expire' END)::text)"  # noqa: E501
        cols = "kind, value, rev, expires_at"
        ret = "RETURNING key, rev, kind, value"
        return {
            "get": f"SELECT {cols} FROM {t} WHERE key = $1 AND {_LIVE}",
            "get_many": f"SELECT key, {cols} FROM {t} WHERE key = ANY($1::text[]) AND {_LIVE}",
            "put": f"WITH w AS (INSERT INTO {t} (key, {cols}) VALUES ($1, $2, $3, nextval({seq}), "
            f"{exp}) {upsert} RETURNING key, rev, kind, value) SELECT rev, {note} FROM w",
            "put_many": f"WITH w AS (INSERT INTO {t} (key, {cols}) SELECT k, d, v, nextval({seq}), "
            f"{exp} FROM unnest($1::text[], $2::int2[], $3::bytea[]) AS u(k, d, v) {upsert} "
            f"RETURNING key, rev, kind, value) SELECT key, rev, {note} FROM w",
            "create": f"WITH w AS (INSERT INTO {t} (key, {cols}) VALUES ($1, $2, $3, "
            f"nextval({seq}), {exp}) {upsert} WHERE {t}.expires_at <= {_NOW} {ret}) "
            f"SELECT rev, {note} FROM w",
            "update": f"WITH w AS (UPDATE {t} SET kind = $2, value = $3, rev = nextval({seq}), "
            f"expires_at = {exp} WHERE key = $1 AND rev = $5 AND {_LIVE} {ret}) "
            f"SELECT rev, {note} FROM w",
            "delete": f"WITH d AS (DELETE FROM {t} WHERE key = ANY($1::text[]) RETURNING key, "
            f"(expires_at IS NULL OR expires_at > {_NOW}) AS live) SELECT live, {gone} FROM d",
            "sweep": f"WITH d AS (DELETE FROM {t} WHERE key IN (SELECT key FROM {t} WHERE "
            f"expires_at <= {_NOW} LIMIT 5000) RETURNING key, false AS live) SELECT {gone} FROM d",
            "lock": f"SELECT kind, value, rev, CASE WHEN {_LIVE} THEN expires_at END AS exp, "
            f"{_LIVE} AS live FROM {t} WHERE key = $1 FOR UPDATE",
            "set": f"WITH w AS (UPDATE {t} SET kind = $2, value = $3, rev = nextval({seq}), "
            f"expires_at = $4 WHERE key = $1 {ret}) SELECT rev, {note} FROM w",
            "ensure": f"INSERT INTO {t} (key, {cols}) VALUES ($1, $2, $3, nextval({seq}), NULL) "
            "ON CONFLICT (key) DO NOTHING",
        }

    # -- plumbing -------------------------------------------------------------------

    async def open(self) -> None:
        """Create the pool and the table; done on first use anyway."""
        self._check_open()
        async with self._open_lock:
            if self._pool is None:
                self._pool = await retrying(
                    self._create, policy=self.retry, is_transient=_transient, what="PostgreSQL"
                )

    async def _create(self) -> Any:
        import asyncpg

        pool = await asyncpg.create_pool(self.dsn, min_size=self._sizes[0], max_size=self._sizes[1])
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self._t)
                await conn.execute(
                    f"""CREATE TABLE IF NOT EXISTS {self._t} (key text COLLATE "C" PRIMARY KEY,
                    kind smallint NOT NULL, value bytea NOT NULL, rev bigint NOT NULL,
                    expires_at double precision);
                    CREATE INDEX IF NOT EXISTS "{self._t.split('"')[3]}_exp" ON {self._t}
                    (expires_at) WHERE expires_at IS NOT NULL;
                    CREATE SEQUENCE IF NOT EXISTS {self._seq.strip("'")};"""
                )
        except BaseException:
            await pool.close()
            raise
        return pool

    async def _call(self, method: str, sql: str, *args: Any) -> Any:
        if self._pool is None:
            await self.open()
        self._check_open()
        pool = self._pool

        async def attempt() -> Any:
            return await getattr(pool, method)(sql, *args)

        return await retrying(
            attempt, policy=self.retry, is_transient=_transient, what="PostgreSQL"
        )

    def _entry(self, key: str, row: Any, type_: Any = None) -> Entry:
        value = self._decode(row["kind"], bytes(row["value"]), type_)
        return Entry(key=key, value=value, revision=row["rev"], expires_at=row["expires_at"])

    # -- the port -------------------------------------------------------------------

    async def get(self, key: str, *, type: Any = None) -> Entry | None:  # noqa: A002 - mirrors codec.decode(target)
        """Return the live entry for ``key``, or ``None``."""
        key = self._key(key)
        row = await self._call("fetchrow", self._sql["get"], key)
        return None if row is None else self._entry(key, row, type)

    async def put(self, key: str, value: Any, *, ttl_s: float | None = None) -> int:
        """Write ``value``; return its revision."""
        key = self._key(key)
        kind, data = self._encode(value)
        ttl = self._ttl(ttl_s)
        if ttl is not None:
            self._start_sweeper()
        return int(await self._call("fetchval", self._sql["put"], key, kind, data, ttl))

    async def put_many(
        self, items: Mapping[str, Any], *, ttl_s: float | None = None
    ) -> dict[str, int]:
        """Write all ``items`` in one statement (one transaction)."""
        rows = [(self._key(k), *self._encode(v)) for k, v in items.items()]
        ttl = self._ttl(ttl_s)
        if ttl is not None:
            self._start_sweeper()
        if not rows:
            return {}
        keys, kinds, datas = (list(col) for col in zip(*rows, strict=True))
        result = await self._call("fetch", self._sql["put_many"], keys, kinds, datas, ttl)
        return {r["key"]: r["rev"] for r in result}

    async def delete(self, key: str) -> bool:
        """Remove ``key``; ``True`` if it was live."""
        return await self.delete_many([self._key(key)]) == 1

    async def delete_many(self, keys: Iterable[str]) -> int:
        """Remove ``keys`` in one statement; return how many were live."""
        wanted = self._keys(keys)
        if not wanted:
            return 0
        rows = await self._call("fetch", self._sql["delete"], wanted)
        return sum(1 for r in rows if r["live"])

    async def get_many(self, keys: Iterable[str]) -> dict[str, Entry]:
        """Return the live entries among ``keys``."""
        wanted = self._keys(keys)
        rows = await self._call("fetch", self._sql["get_many"], wanted) if wanted else []
        return {r["key"]: self._entry(r["key"], r) for r in rows}

    async def scan(self, prefix: str = "", *, limit: int = 100, cursor: str | None = None) -> Page:
        """Return up to ``limit`` live entries under ``prefix`` after ``cursor``, in key order."""
        prefix, limit, cursor = self._prefix(prefix), self._limit(limit), self._cursor(cursor)
        args: list[Any] = [prefix, limit + 1]
        sql = f"SELECT key, kind, value, rev, expires_at FROM {self._t} WHERE key >= $1"
        upper = prefix_upper(prefix)
        if upper is not None:
            args.append(upper)
            sql += f" AND key < ${len(args)}"
        if cursor is not None:
            args.append(cursor)
            sql += f" AND key > ${len(args)}"
        sql += f" AND {_LIVE} ORDER BY key LIMIT $2"
        rows = await self._call("fetch", sql, *args)
        items = [self._entry(r["key"], r) for r in rows[:limit]]
        return Page(items=items, cursor=items[-1].key if len(rows) > limit else None)

    async def compare_and_set(
        self, key: str, value: Any, *, revision: int | None, ttl_s: float | None = None
    ) -> int:
        """Write only if ``key`` is at ``revision`` (``None``/``0``: absent)."""
        key, expected = self._key(key), self._revision(revision)
        kind, data = self._encode(value)
        ttl = self._ttl(ttl_s)
        if ttl is not None:
            self._start_sweeper()
        if expected == 0:
            rev = await self._call("fetchval", self._sql["create"], key, kind, data, ttl)
        else:
            rev = await self._call("fetchval", self._sql["update"], key, kind, data, ttl, expected)
        if rev is None:
            current = await self.get(key)
            raise self._conflict(key, expected, None if current is None else current.revision)
        return int(rev)

    async def incr(self, key: str, by: int = 1) -> int:
        """Atomically add ``by`` to an int value (absent counts as 0); keeps the expiry."""
        key, by = self._key(key), self._as_int("by", by)
        zero_kind, zero = self._encode(0)
        if self._pool is None:
            await self.open()
        self._check_open()

        async def attempt() -> int:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(self._sql["ensure"], key, zero_kind, zero)
                row = await conn.fetchrow(self._sql["lock"], key)
                current = self._as_int(key, self._decode(row["kind"], bytes(row["value"])))
                new = by + (current if row["live"] else 0)
                kind, data = self._encode(new)
                await conn.fetchval(self._sql["set"], key, kind, data, row["exp"])
                return new

        return await retrying(
            attempt, policy=self.retry, is_transient=_transient, what="PostgreSQL"
        )

    def watch(self, prefix: str = "") -> Watch:
        """Yield changes under ``prefix`` from every process (LISTEN/NOTIFY)."""
        prefix = self._prefix(prefix)

        async def opener() -> Subscription:
            import asyncpg

            await self.open()
            conn = await asyncpg.connect(self.dsn)
            raw: asyncio.Queue[list[Any]] = asyncio.Queue()
            out: asyncio.Queue[Change | BaseException] = asyncio.Queue(WATCH_QUEUE_MAX)

            def on_note(_c: Any, _pid: int, _ch: str, payload: str) -> None:
                note = json.loads(payload)
                if note[0].startswith(prefix):
                    raw.put_nowait(note)

            task = asyncio.create_task(self._pump(raw, out))
            await conn.add_listener(self.channel, on_note)

            async def close() -> None:
                task.cancel()
                with contextlib.suppress(Exception):
                    await conn.close(timeout=2)

            return Subscription(queue=out, close=close)

        return Watch(opener)

    async def _pump(
        self, raw: asyncio.Queue[list[Any]], out: asyncio.Queue[Change | BaseException]
    ) -> None:
        seen: dict[str, int] = {}
        while True:
            key, rev, op, *value = await raw.get()
            if seen.get(key, 0) >= rev:
                continue
            if op == "put" and value and value[1] is not None:
                data = base64.b64decode(value[1])
                change = Change(key=key, value=self._decode(value[0], data), revision=rev)
            elif op == "put":
                try:
                    entry = await self.get(key)
                except StorageUnavailableError as exc:
                    out.put_nowait(exc)
                    return
                if entry is None or entry.revision < rev or seen.get(key, 0) >= entry.revision:
                    continue
                change = Change(key=key, value=entry.value, revision=entry.revision)
            else:
                change = Change(key=key, value=None, revision=rev, op=op)
            if len(seen) > _SEEN_MAX:
                seen.clear()
            seen[key] = change.revision
            try:
                out.put_nowait(change)
            except asyncio.QueueFull:
                out.get_nowait()
                out.put_nowait(StorageUnavailableError("watcher fell too far behind"))
                return

    async def sweep(self) -> int:
        """Delete expired rows now; return how many."""
        return len(await self._call("fetch", self._sql["sweep"]))

    async def close(self) -> None:
        """Stop the sweeper and close the pool."""
        if self._closed:
            return
        self._closed = True
        await self._stop_sweeper()
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pool.close(), 10)
