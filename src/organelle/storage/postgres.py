"""``PostgresStore``: shared durable storage on PostgreSQL (asyncpg pool).

One table per store (``key text COLLATE "C"`` so ordering is by code point,
as on every backend), revisions from one sequence, expiry computed with the
server's clock so clients with skewed clocks agree. Every write is a single
statement (``incr`` is one short transaction), atomic across processes.

``watch`` has two reaches. By default (``notify=False``) it sees the writes
made through this store object, published after they commit, like SQLite.
With ``notify=True`` (``?notify=true`` in the URL) every write also
``pg_notify``s (key, revision, op, small values) in its own transaction and
``watch`` LISTENs, so it sees every process that writes with notify on. That
is opt-in because PostgreSQL serializes the commits of notifying transactions
on one global lock: concurrent writers then commit one at a time.

A transaction (``transaction()``) holds one pooled connection with a database
transaction open on it (READ COMMITTED, PostgreSQL's default) and runs every
operation inside it on that connection, one at a time.
"""

# Table names are interpolated into SQL only after matching _IDENT; values are
# always bound parameters.
# ruff: noqa: S608

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Self, TypeVar, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from organelle.errors import ConfigError, StorageUnavailableError
from organelle.storage._common import WATCH_QUEUE_MAX, BaseStore, prefix_upper
from organelle.storage._tx import CURRENT, Chg, TxCore, any_tx, taken_error
from organelle.storage.base import Change, Entry, Page, Watch, WatchFeed
from organelle.storage.retry import retrying

__all__ = ["PostgresStore"]

T = TypeVar("T")

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,50}$")
_NOW = "extract(epoch from clock_timestamp())::float8"
_LIVE = f"(expires_at IS NULL OR expires_at > {_NOW})"
_SEEN_MAX = 100_000  # per-key dedup memory of a watcher; reset past this
_TRANSIENT_STATES = {"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53300"}
_BOOL = {"true": True, "1": True, "yes": True, "on": True}
_BOOL |= {"false": False, "0": False, "no": False, "off": False}


def split_notify(dsn: str) -> tuple[str, bool | None]:
    """Take ``notify=`` out of a URL's query: asyncpg would send it as a server setting.

    Returns the DSN without it and its value (``None`` when absent).

    Raises:
        ConfigError: the value is not a boolean word.
    """
    parts = urlsplit(dsn)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    found = [v for k, v in pairs if k == "notify"]
    if "://" not in dsn or not found:
        return dsn, None
    if found[-1].lower() not in _BOOL:
        raise ConfigError(f"notify must be true or false in the PostgreSQL URL, got {found[-1]!r}")
    query = urlencode([(k, v) for k, v in pairs if k != "notify"])
    return urlunsplit(parts._replace(query=query)), _BOOL[found[-1].lower()]


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
        notify: ``pg_notify`` every write so ``watch`` sees all processes (off
            by default: it serializes concurrent commits; see the module
            docstring). Also ``?notify=true`` in the URL.
        **opts: see ``BaseStore``.

    Raises:
        ConfigError: bad table or schema name, or ``notify`` given twice with
            different values.
    """

    def __init__(
        self,
        dsn: str,
        *,
        table: str = "organelle_kv",
        schema: str = "public",
        min_size: int = 1,
        max_size: int = 10,
        notify: bool | None = None,
        **opts: Any,
    ) -> None:
        super().__init__(**opts)
        if not _IDENT.match(table) or not _IDENT.match(schema):
            raise ConfigError(f"bad PostgreSQL table or schema name: {schema}.{table}")
        self.dsn, in_url = split_notify(dsn)
        if notify is not None and in_url is not None and notify != in_url:
            raise ConfigError(f"notify={notify} contradicts notify={in_url} in the PostgreSQL URL")
        self.notify = bool(notify if notify is not None else in_url)
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
        # The revision is drawn again under the row lock: EXCLUDED.rev was drawn
        # before it, so two racing puts could otherwise leave the older one last.
        upsert = (
            "ON CONFLICT (key) DO UPDATE SET kind = EXCLUDED.kind, value = EXCLUDED.value, "
            f"rev = nextval({seq}), expires_at = EXCLUDED.expires_at"
        )
        # Small values ride in the notification (8000-byte payload limit, with
        # room for a JSON-escaped key), so watchers see every put; bigger ones
        # are read back by the watcher.
        small = "3 * octet_length(value) / 2 + 6 * octet_length(key) < 7000"
        note = (
            f"pg_notify({ch}, json_build_array(key, rev, 'put', kind, CASE WHEN {small} "
            "THEN encode(value, 'base64') END)::text)"
        )
        gone = f"pg_notify({ch}, json_build_array(key, rev, CASE WHEN live THEN 'delete' ELSE 'expire' END)::text)"  # noqa: E501

        def wrote(sql: str, out: str) -> str:  # a write returning ``out`` (+ its notification)
            if not self.notify:
                return f"{sql} RETURNING {out}"
            return f"WITH w AS ({sql} RETURNING key, rev, kind, value) SELECT {out}, {note} FROM w"

        def removed(where: str, live: str) -> str:  # a delete: key, live, rev (its own revision)
            sql = (
                f"WITH d AS (DELETE FROM {t} WHERE {where} RETURNING key, {live} AS live), "
                f"r AS (SELECT key, live, nextval({seq}) AS rev FROM d) SELECT key, live, rev"
            )
            return f"{sql}, {gone} FROM r" if self.notify else f"{sql} FROM r"

        cols = "kind, value, rev, expires_at"
        return {
            "get": f"SELECT {cols} FROM {t} WHERE key = $1 AND {_LIVE}",
            "get_many": f"SELECT key, {cols} FROM {t} WHERE key = ANY($1::text[]) AND {_LIVE}",
            "put": wrote(
                f"INSERT INTO {t} (key, {cols}) VALUES ($1, $2, $3, nextval({seq}), {exp}) "
                f"{upsert}",
                "rev",
            ),
            "put_many": wrote(
                f"INSERT INTO {t} (key, {cols}) SELECT k, d, v, nextval({seq}), {exp} "
                f"FROM unnest($1::text[], $2::int2[], $3::bytea[]) AS u(k, d, v) {upsert}",
                "key, rev",
            ),
            # put_many of keys that must be new (or expired): a live one is not
            # written, nor returned (``write_at_commit(new=True)``: the commit fails).
            "create_many": wrote(
                f"INSERT INTO {t} (key, {cols}) SELECT k, d, v, nextval({seq}), {exp} "
                f"FROM unnest($1::text[], $2::int2[], $3::bytea[]) AS u(k, d, v) {upsert} "
                f"WHERE {t}.expires_at <= {_NOW}",
                "key, rev",
            ),
            "create": wrote(
                f"INSERT INTO {t} (key, {cols}) VALUES ($1, $2, $3, nextval({seq}), {exp}) "
                f"{upsert} WHERE {t}.expires_at <= {_NOW}",
                "rev",
            ),
            "update": wrote(
                f"UPDATE {t} SET kind = $2, value = $3, rev = nextval({seq}), expires_at = {exp} "
                f"WHERE key = $1 AND rev = $5 AND {_LIVE}",
                "rev",
            ),
            "delete": removed("key = ANY($1::text[])", _LIVE),
            "sweep": removed(
                f"key IN (SELECT key FROM {t} WHERE expires_at <= {_NOW} LIMIT 5000)", "false"
            ),
            "lock": f"SELECT kind, value, rev, CASE WHEN {_LIVE} THEN expires_at END AS exp, "
            f"{_LIVE} AS live FROM {t} WHERE key = $1 FOR UPDATE",
            "set": wrote(
                f"UPDATE {t} SET kind = $2, value = $3, rev = nextval({seq}), expires_at = $4 "
                "WHERE key = $1",
                "rev",
            ),
            "ensure": f"INSERT INTO {t} (key, {cols}) VALUES ($1, $2, $3, nextval({seq}), NULL) "
            "ON CONFLICT (key) DO NOTHING",
        }

    # -- plumbing -------------------------------------------------------------------

    async def open(self) -> Self:
        """Create the pool and the table (``open_store`` does it); returns ``self``."""
        self._check_open()
        async with self._open_lock:
            if self._pool is None:
                self._pool = await retrying(
                    self._create, policy=self.retry, is_transient=_transient, what="PostgreSQL"
                )
        return self

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

    async def _call(self, tx: _PgTx | None, method: str, sql: str, *args: Any) -> Any:
        if tx is not None:
            return await tx.run(lambda conn: getattr(conn, method)(sql, *args))
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

    def _tx(self) -> _PgTx | None:
        return cast("_PgTx | None", any_tx() and self._current())

    def _changed(self, tx: _PgTx | None, changes: list[Chg]) -> None:
        """Hand puts to this process's watchers (none if notify is on): now, or at commit."""
        if tx is not None:
            tx.changes += changes
        elif self._watchers:
            self._publish_changes(changes)

    def _removed(self, tx: _PgTx | None, rows: list[Any]) -> None:
        if tx is None and not self._watchers:
            return
        gone: list[Chg] = [
            (r["key"], None, None, r["rev"], "delete" if r["live"] else "expire") for r in rows
        ]
        self._changed(tx, gone)

    # -- the port -------------------------------------------------------------------

    async def get(self, key: str, *, type: Any = None) -> Entry | None:  # noqa: A002 - mirrors codec.decode(target)
        """Return the live entry for ``key``, or ``None``."""
        key = self._key(key)
        row = await self._call(self._tx(), "fetchrow", self._sql["get"], key)
        return None if row is None else self._entry(key, row, type)

    async def put(self, key: str, value: Any, *, ttl_s: float | None = None) -> int:
        """Write ``value``; return its revision."""
        key = self._key(key)
        kind, data = self._encode(value)
        ttl = self._write_ttl(ttl_s)
        tx = self._tx()
        rev = int(await self._call(tx, "fetchval", self._sql["put"], key, kind, data, ttl))
        if tx is not None or self._watchers:
            self._changed(tx, [(key, kind, data, rev, "put")])
        return rev

    async def put_many(
        self, items: Mapping[str, Any], *, ttl_s: float | None = None
    ) -> dict[str, int]:
        """Write all ``items`` in one statement (one transaction)."""
        return await self._put_many(items, ttl_s, "put_many")

    async def _put_many(
        self, items: Mapping[str, Any], ttl_s: float | None, sql: str
    ) -> dict[str, int]:
        rows = [(self._key(k), *self._encode(v)) for k, v in items.items()]
        ttl = self._write_ttl(ttl_s)
        if not rows:
            return {}
        keys, kinds, datas = (list(col) for col in zip(*rows, strict=True))
        tx = self._tx()
        result = await self._call(tx, "fetch", self._sql[sql], keys, kinds, datas, ttl)
        revs: dict[str, int] = {r["key"]: r["rev"] for r in result}
        if tx is not None or self._watchers:
            self._changed(
                tx, [(k, kind, data, revs[k], "put") for k, kind, data in rows if k in revs]
            )
        return revs

    async def delete(self, key: str) -> bool:
        """Remove ``key``; ``True`` if it was live."""
        return await self.delete_many([self._key(key)]) == 1

    async def delete_many(self, keys: Iterable[str]) -> int:
        """Remove ``keys`` in one statement; return how many were live."""
        wanted = self._keys(keys)
        if not wanted:
            return 0
        tx = self._tx()
        rows = await self._call(tx, "fetch", self._sql["delete"], wanted)
        self._removed(tx, rows)
        return sum(1 for r in rows if r["live"])

    async def get_many(self, keys: Iterable[str]) -> dict[str, Entry]:
        """Return the live entries among ``keys``."""
        wanted = self._keys(keys)
        rows = (
            await self._call(self._tx(), "fetch", self._sql["get_many"], wanted) if wanted else []
        )
        return {e.key: e for e in self._entries(rows)}

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
        rows = await self._call(self._tx(), "fetch", sql, *args)
        items = self._entries(rows[:limit])
        return Page(items=items, cursor=items[-1].key if len(rows) > limit else None)

    async def compare_and_set(
        self, key: str, value: Any, *, revision: int | None, ttl_s: float | None = None
    ) -> int:
        """Write only if ``key`` is at ``revision`` (``None``/``0``: absent)."""
        key, expected = self._key(key), self._revision(revision)
        kind, data = self._encode(value)
        ttl = self._write_ttl(ttl_s)
        tx = self._tx()
        if expected == 0:
            rev = await self._call(tx, "fetchval", self._sql["create"], key, kind, data, ttl)
        else:
            sql = self._sql["update"]
            rev = await self._call(tx, "fetchval", sql, key, kind, data, ttl, expected)
        if rev is None:
            current = await self.get(key)
            raise self._conflict(key, expected, None if current is None else current.revision)
        if tx is not None or self._watchers:
            self._changed(tx, [(key, kind, data, int(rev), "put")])
        return int(rev)

    async def incr(self, key: str, by: int = 1) -> int:
        """Atomically add ``by`` to an int value (absent counts as 0); keeps the expiry."""
        key, by = self._key(key), self._as_int("by", by)
        zero_kind, zero = self._encode(0)

        async def add(conn: Any) -> tuple[int, int, bytes, int]:  # on a connection in a transaction
            await conn.execute(self._sql["ensure"], key, zero_kind, zero)
            row = await conn.fetchrow(self._sql["lock"], key)
            current = self._as_int(key, self._decode(row["kind"], bytes(row["value"])))
            new = by + (current if row["live"] else 0)
            kind, data = self._encode(new)
            rev = await conn.fetchval(self._sql["set"], key, kind, data, row["exp"])
            return new, kind, data, int(rev)

        tx = self._tx()
        if tx is not None:
            new, kind, data, rev = await tx.run(add)
            tx.changes.append((key, kind, data, rev, "put"))
            return new
        if self._pool is None:
            await self.open()
        self._check_open()

        async def attempt() -> tuple[int, int, bytes, int]:
            async with self._pool.acquire() as conn, conn.transaction():
                return await add(conn)

        new, kind, data, rev = await retrying(
            attempt, policy=self.retry, is_transient=_transient, what="PostgreSQL"
        )
        if self._watchers:
            self._publish(Change(key=key, value=new, revision=rev))
        return new

    def watch(self, prefix: str = "") -> Watch:
        """Yield changes under ``prefix`` made after the watch starts.

        With ``notify`` off (the default): writes through this store object,
        published once committed. With ``notify`` on: writes from every process
        that has notify on too (LISTEN on a connection of its own).
        """
        if not self.notify:
            return self._local_watch(prefix)
        prefix = self._prefix(prefix)

        async def opener() -> WatchFeed:
            import asyncpg

            await self.open()
            conn = await asyncpg.connect(self.dsn)
            raw: asyncio.Queue[list[Any]] = asyncio.Queue()
            out: asyncio.Queue[Change | BaseException] = asyncio.Queue(WATCH_QUEUE_MAX)

            def on_note(_c: Any, _pid: int, _ch: str, payload: str) -> None:
                note = json.loads(payload)
                if note[0].startswith(prefix):
                    raw.put_nowait(note)

            # A fresh context: opened inside a transaction, its reads must not join it.
            task = asyncio.create_task(self._pump(raw, out), context=contextvars.Context())
            await conn.add_listener(self.channel, on_note)

            async def close() -> None:
                task.cancel()
                with contextlib.suppress(Exception):
                    await conn.close(timeout=2)

            return WatchFeed(queue=out, close=close)

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
        tx = self._tx()
        rows = await self._call(tx, "fetch", self._sql["sweep"])
        self._removed(tx, rows)
        return len(rows)

    async def _begin(self) -> TxCore:
        if self._pool is None:
            await self.open()
        self._check_open()
        pool = self._pool

        async def attempt() -> tuple[Any, Any]:
            conn = await pool.acquire()
            try:
                tr = conn.transaction()
                await tr.start()
            except BaseException:
                await pool.release(conn)
                raise
            return conn, tr

        conn, tr = await retrying(
            attempt, policy=self.retry, is_transient=_transient, what="PostgreSQL"
        )
        return _PgTx(self, pool, conn, tr)

    async def close(self) -> None:
        """Stop the sweeper and close the pool."""
        if self._closed:
            return
        self._closed = True
        await self._stop_sweeper()
        self._end_watchers()
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pool.close(), 10)


class _PgTx(TxCore):
    """A transaction of a ``PostgresStore``: one pooled connection, held until it ends."""

    def __init__(self, store: PostgresStore, pool: Any, conn: Any, tr: Any) -> None:
        super().__init__(store, store._publish_changes)
        self._s = store
        self._pool = pool
        self._conn = conn
        self._tr = tr
        self._lock = asyncio.Lock()  # one statement at a time on the connection

    async def run(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``fn(conn)`` inside the transaction; a driver error becomes unavailable."""
        self._s._check_open()
        self.check()  # before queueing: the commit waits for what was queued before it
        async with self._lock:
            try:
                return await fn(self._conn)
            except Exception as exc:
                if not _driver_error(exc):
                    raise
                raise StorageUnavailableError(
                    f"PostgreSQL failed inside a transaction (it is rolled back): {exc}"
                ) from exc

    async def _finish(self, step: Callable[[], Awaitable[Any]]) -> None:
        try:
            async with self._lock:
                await step()
        finally:
            await self._pool.release(self._conn)  # a closing pool waits for this

    async def commit(self) -> None:
        try:
            await self._finish(self._tr.commit)
        except Exception as exc:
            if not _driver_error(exc):
                raise
            raise StorageUnavailableError(f"PostgreSQL commit failed: {exc}") from exc

    async def rollback(self) -> None:
        await self._finish(self._tr.rollback)

    async def write_late(self) -> None:
        """The late writes, one statement each; a key that must be new is checked by it.

        ``INSERT … ON CONFLICT`` waits for a concurrent transaction that wrote
        the same key, so two transactions racing for one new key cannot both
        commit (a read first, under READ COMMITTED, could let them).
        """
        if not self.late:
            return
        late, self.late = self.late, {}
        token = CURRENT.set(self)
        self.open = True  # the block has ended; these writes are still its own
        try:
            for (ttl_s, new), items in late.items():
                revs = await self._s._put_many(items, ttl_s, "create_many" if new else "put_many")
                if len(revs) < len(items):
                    raise taken_error(k for k in items if self._s._key(k) not in revs)
        finally:
            self.open = False
            CURRENT.reset(token)

    async def savepoint(self) -> object:
        point = self._conn.transaction()
        await self.run(lambda _conn: point.start())
        return point

    async def release(self, mark: object) -> None:
        await self.run(lambda _conn: cast("Any", mark).commit())

    async def rollback_to(self, mark: object) -> None:
        await self.run(lambda _conn: cast("Any", mark).rollback())


def _driver_error(exc: BaseException) -> bool:
    import asyncpg

    return isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError | OSError | TimeoutError)
