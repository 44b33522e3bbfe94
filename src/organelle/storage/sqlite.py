"""``SqliteStore``: the embedded durable default (``sqlite:///path.db``).

WAL journal with ``synchronous=FULL``: a write is acknowledged only after its
transaction's WAL frames were fsynced, so it survives ``kill -9`` and power
loss. sqlite3 runs in two private threads (one writer with group commit, one
reader, see ``_sqlite_thread``), so the event loop never blocks on disk.
Revisions come from a counter row updated in the same transaction, so they
stay monotonic across restarts and across processes sharing the file.

A transaction (``transaction()``) runs on the writer thread, which serves
only that transaction until it ends (see ``_sqlite_thread.Lane``), in a
savepoint of a ``BEGIN IMMEDIATE``: this store's other writes wait behind
it, other processes' writers wait on the file lock, reads from elsewhere go
on against the last commit (WAL). Transactions queued together share one
``COMMIT`` (group commit): each is acknowledged only after it, and all fail
if it fails. A process killed inside it leaves nothing of it.
"""

# Table names are interpolated into SQL only after matching _IDENT; values are
# always bound parameters.
# ruff: noqa: S608

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import sqlite3
import time
from collections.abc import Iterable, Mapping
from typing import Any, Self, cast

from organelle.errors import ConfigError, StorageUnavailableError
from organelle.storage._common import BaseStore, prefix_upper
from organelle.storage._sqlite_thread import READ, WRITE, Lane, Op, SqliteThread, use_wal
from organelle.storage._tx import TxCore, any_tx, taken_error
from organelle.storage.base import ChangeOp, Entry, Page, Watch
from organelle.storage.retry import retrying

__all__ = ["SqliteStore"]

log = logging.getLogger("organelle.storage")

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_Row = tuple[str, int, bytes, int, float | None]
_Chg = tuple[str, int | None, bytes | None, int, ChangeOp]
_CHUNK = 500
# A round of the writer that served transactions takes in more for this long
# (plain writes: ``GROUP_S``); it commits at once when nothing more is queued.
TX_GROUP_S = 0.02


def _transient(exc: BaseException) -> bool:
    msg = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in msg or "busy" in msg)


class SqliteStore(BaseStore):
    """Durable store in one SQLite file (or ``":memory:"``).

    Args:
        path: database file, created if missing; ``":memory:"`` for a private one.
        table: table name, so several stores can share a file.
        synchronous: ``"FULL"`` (default, durable on kill -9 and power loss) or
            ``"NORMAL"`` (durable on kill -9 only; faster commits).
        busy_timeout_s: how long one attempt waits for another process's lock.
        **opts: see ``BaseStore``.
    """

    def __init__(
        self,
        path: str,
        *,
        table: str = "organelle_kv",
        synchronous: str = "FULL",
        busy_timeout_s: float = 2.0,
        **opts: Any,
    ) -> None:
        super().__init__(**opts)
        if not _IDENT.match(table):
            raise ConfigError(f"bad SQLite table name {table!r}")
        if synchronous.upper() not in {"FULL", "NORMAL", "EXTRA"}:
            raise ConfigError("synchronous must be FULL, NORMAL or EXTRA")
        self.path = path
        self._t = table
        self._sync = synchronous.upper()
        self._busy_ms = int(busy_timeout_s * 1000)
        self._writer: SqliteThread | None = None
        self._reader: SqliteThread | None = None
        self._open_lock = asyncio.Lock()
        self._txs: set[_SqliteTx] = set()

    # -- plumbing -------------------------------------------------------------------

    def _connect(self, *, write: bool) -> sqlite3.Connection:
        # check_same_thread off: a transaction lends the writer's connection to the
        # event loop between its operations (serialized by the lane's mutex)
        conn = sqlite3.connect(
            self.path,
            isolation_level=None,
            timeout=self._busy_ms / 1000,
            check_same_thread=False,
        )
        conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
        if self.path != ":memory:":
            use_wal(conn)
        conn.execute(f"PRAGMA synchronous={self._sync}")
        if write:
            t = self._t
            conn.executescript(
                f"""BEGIN IMMEDIATE;
                CREATE TABLE IF NOT EXISTS {t} (key TEXT PRIMARY KEY, kind INTEGER NOT NULL,
                    value BLOB NOT NULL, rev INTEGER NOT NULL, expires_at REAL) WITHOUT ROWID;
                CREATE INDEX IF NOT EXISTS {t}_exp ON {t}(expires_at) WHERE expires_at IS NOT NULL;
                CREATE TABLE IF NOT EXISTS {t}_meta (id INTEGER PRIMARY KEY, rev INTEGER NOT NULL);
                INSERT OR IGNORE INTO {t}_meta VALUES (1, 0);
                COMMIT;"""
            )
        return conn

    async def open(self) -> Self:
        """Open the file and create the table (``open_store`` does it); returns ``self``."""
        self._check_open()
        async with self._open_lock:
            if self._writer is None:
                await self._start_workers()
        return self

    async def _start_workers(self) -> None:
        busy = self._busy_ms / 1000
        writer = SqliteThread(
            lambda: self._connect(write=True),
            f"sqlite-w:{self.path}",
            busy_timeout_s=busy,
            tx_group_s=TX_GROUP_S,
            lend=True,  # its connection may serve a transaction from the loop (Lane)
        )
        reader: SqliteThread | None = None
        try:
            await writer.started()
            if self.path != ":memory:":
                reader = SqliteThread(
                    lambda: self._connect(write=False), f"sqlite-r:{self.path}", busy_timeout_s=busy
                )
                await reader.started()
        except Exception as exc:
            for worker in (reader, writer):
                if worker is not None:
                    await worker.stop()
            raise StorageUnavailableError(
                f"cannot open SQLite database {self.path!r}: {exc}"
            ) from exc
        self._writer, self._reader = writer, reader

    async def _run(self, op: Op, *, write: bool) -> Any:
        tx = any_tx() and self._current()
        if tx is not None:
            return await cast("_SqliteTx", tx).run(op, write=write)
        return await self._plain(op, write=write)

    async def _plain(self, op: Op, *, write: bool) -> Any:
        if self._writer is None or (self._reader is None and self.path != ":memory:"):
            await self.open()
        self._check_open()
        worker = (self._writer if write else self._reader) or self._writer
        assert worker is not None  # noqa: S101 - set by open()
        return await retrying(
            lambda: worker.submit(op, mode=WRITE if write else READ),
            policy=self.retry,
            is_transient=_transient,
            what="SQLite",
        )

    async def _write(self, op: Op) -> Any:
        tx = any_tx() and self._current()
        if tx is not None:  # the changes reach the watchers once it commits
            result, changes = await cast("_SqliteTx", tx).run(op, write=True)
            tx.changes += changes
            return result
        result, changes = await self._plain(op, write=True)
        if self._watchers:
            self._publish_changes(changes)
        return result

    async def _begin(self) -> TxCore:
        if self._writer is None:
            await self.open()
        self._check_open()
        writer = self._writer
        assert writer is not None  # noqa: S101 - set by open()
        # Not waited for: the first operations queue behind the BEGIN (a failed
        # BEGIN fails them, and the commit).
        tx = _SqliteTx(self, writer.begin())
        self._txs.add(tx)
        return tx

    def _next_rev(self, conn: sqlite3.Connection, n: int = 1) -> int:
        row = conn.execute(
            f"UPDATE {self._t}_meta SET rev = rev + ? WHERE id = 1 RETURNING rev", (n,)
        ).fetchone()
        return int(row[0]) - n + 1

    def _upsert(
        self, conn: sqlite3.Connection, rows: list[tuple[str, int, bytes, int, float | None]]
    ) -> None:
        sql = (
            f"INSERT INTO {self._t} (key, kind, value, rev, expires_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET kind=excluded.kind, value=excluded.value, "
            "rev=excluded.rev, expires_at=excluded.expires_at"
        )
        if len(rows) == 1:  # a put, an outbox row: execute costs less than executemany of one
            conn.execute(sql, rows[0])
        else:
            conn.executemany(sql, rows)

    def _live(
        self, conn: sqlite3.Connection, key: str
    ) -> tuple[int, bytes, int, float | None] | None:
        row = conn.execute(
            f"SELECT kind, value, rev, expires_at FROM {self._t} WHERE key = ? "
            "AND (expires_at IS NULL OR expires_at > ?)",
            (key, time.time()),
        ).fetchone()
        return None if row is None else (row[0], row[1], row[2], row[3])

    def _entry(self, row: _Row, type_: Any = None) -> Entry:
        key, kind, data, rev, exp = row
        return Entry(key=key, value=self._decode(kind, data, type_), revision=rev, expires_at=exp)

    # -- the port -------------------------------------------------------------------

    async def get(self, key: str, *, type: Any = None) -> Entry | None:  # noqa: A002 - mirrors codec.decode(target)
        """Return the live entry for ``key``, or ``None``."""
        key = self._key(key)
        row = await self._run(lambda c: self._live(c, key), write=False)
        return None if row is None else self._entry((key, *row), type)

    async def put(self, key: str, value: Any, *, ttl_s: float | None = None) -> int:
        """Write ``value`` durably; return its revision."""
        key = self._key(key)
        kind, data = self._encode(value)
        ttl = self._write_ttl(ttl_s)

        def op(c: sqlite3.Connection) -> tuple[int, list[_Chg]]:
            rev = self._next_rev(c)
            self._upsert(c, [(key, kind, data, rev, None if ttl is None else time.time() + ttl)])
            return rev, [(key, kind, data, rev, "put")]

        return int(await self._write(op))

    async def put_many(
        self, items: Mapping[str, Any], *, ttl_s: float | None = None
    ) -> dict[str, int]:
        """Write all ``items`` in one durable transaction."""
        if not items:
            return {}
        result: dict[str, int] = await self._write(self._put_many_op(items, ttl_s))
        return result

    def _put_many_op(
        self, items: Mapping[str, Any], ttl_s: float | None, *, new: bool = False
    ) -> Op:
        """The op of ``put_many``; ``new``: it raises ``ConflictError`` if a key is live."""
        encoded = [(self._key(k), *self._encode(v)) for k, v in items.items()]
        ttl = self._write_ttl(ttl_s)

        def op(c: sqlite3.Connection) -> tuple[dict[str, int], list[_Chg]]:
            if new and (taken := self._taken(c, [k for k, _, _ in encoded])):
                raise taken_error(taken)
            base = self._next_rev(c, len(encoded))
            exp = None if ttl is None else time.time() + ttl
            rows = [(k, kind, data, base + i, exp) for i, (k, kind, data) in enumerate(encoded)]
            self._upsert(c, rows)
            return {r[0]: r[3] for r in rows}, [(k, kd, d, rv, "put") for k, kd, d, rv, _ in rows]

        return op

    def _taken(self, c: sqlite3.Connection, keys: list[str]) -> list[str]:
        """The live keys among ``keys`` (in the writer, inside its transaction)."""
        taken: list[str] = []
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            taken += [
                row[0]
                for row in c.execute(
                    f"SELECT key FROM {self._t} WHERE key IN ({marks}) "
                    "AND (expires_at IS NULL OR expires_at > ?)",
                    (*chunk, time.time()),
                )
            ]
        return taken

    def _delete_op(self, keys: list[str]) -> Op:
        def op(c: sqlite3.Connection) -> tuple[int, list[_Chg]]:
            now, live, changes = time.time(), 0, list[_Chg]()
            for key in keys:
                row = c.execute(
                    f"DELETE FROM {self._t} WHERE key = ? RETURNING expires_at", (key,)
                ).fetchone()
                if row is not None:
                    alive = row[0] is None or row[0] > now
                    live += alive
                    what: ChangeOp = "delete" if alive else "expire"
                    changes.append((key, None, None, self._next_rev(c), what))
            return live, changes

        return op

    async def delete(self, key: str) -> bool:
        """Remove ``key``; ``True`` if it was live."""
        return bool(await self._write(self._delete_op([self._key(key)])))

    async def delete_many(self, keys: Iterable[str]) -> int:
        """Remove ``keys`` in one transaction; return how many were live."""
        wanted = self._keys(keys)
        return int(await self._write(self._delete_op(wanted))) if wanted else 0

    async def get_many(self, keys: Iterable[str]) -> dict[str, Entry]:
        """Return the live entries among ``keys``."""
        wanted = self._keys(keys)

        def op(c: sqlite3.Connection) -> list[_Row]:
            rows: list[_Row] = []
            for i in range(0, len(wanted), _CHUNK):
                chunk = wanted[i : i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows += c.execute(
                    f"SELECT key, kind, value, rev, expires_at FROM {self._t} "
                    f"WHERE key IN ({marks}) AND (expires_at IS NULL OR expires_at > ?)",
                    (*chunk, time.time()),
                ).fetchall()
            return rows

        rows: list[_Row] = await self._run(op, write=False) if wanted else []
        return {e.key: e for e in self._entries(rows)}

    async def scan(self, prefix: str = "", *, limit: int = 100, cursor: str | None = None) -> Page:
        """Return up to ``limit`` live entries under ``prefix`` after ``cursor``, in key order."""
        prefix, limit, cursor = self._prefix(prefix), self._limit(limit), self._cursor(cursor)
        sql = f"SELECT key, kind, value, rev, expires_at FROM {self._t} WHERE key >= ?"
        args: list[Any] = [prefix]
        upper = prefix_upper(prefix)
        if upper is not None:
            sql += " AND key < ?"
            args.append(upper)
        if cursor is not None:
            sql += " AND key > ?"
            args.append(cursor)
        sql += " AND (expires_at IS NULL OR expires_at > ?) ORDER BY key LIMIT ?"

        def op(c: sqlite3.Connection) -> list[_Row]:
            return c.execute(sql, (*args, time.time(), limit + 1)).fetchall()

        rows: list[_Row] = await self._run(op, write=False)
        items = self._entries(rows[:limit])
        return Page(items=items, cursor=items[-1].key if len(rows) > limit else None)

    async def compare_and_set(
        self, key: str, value: Any, *, revision: int | None, ttl_s: float | None = None
    ) -> int:
        """Write only if ``key`` is at ``revision`` (``None``/``0``: absent)."""
        key, expected = self._key(key), self._revision(revision)
        kind, data = self._encode(value)
        ttl = self._write_ttl(ttl_s)

        def op(c: sqlite3.Connection) -> tuple[int, list[_Chg]]:
            live = self._live(c, key)
            actual = 0 if live is None else live[2]
            if actual != expected:
                raise self._conflict(key, expected, actual)
            rev = self._next_rev(c)
            self._upsert(c, [(key, kind, data, rev, None if ttl is None else time.time() + ttl)])
            return rev, [(key, kind, data, rev, "put")]

        return int(await self._write(op))

    async def incr(self, key: str, by: int = 1) -> int:
        """Atomically add ``by`` to an int value (absent counts as 0); keeps the expiry."""
        key, by = self._key(key), self._as_int("by", by)

        def op(c: sqlite3.Connection) -> tuple[int, list[_Chg]]:
            live = self._live(c, key)
            new = by + (0 if live is None else self._as_int(key, self._decode(live[0], live[1])))
            kind, data = self._encode(new)
            rev = self._next_rev(c)
            self._upsert(c, [(key, kind, data, rev, None if live is None else live[3])])
            return new, [(key, kind, data, rev, "put")]

        return int(await self._write(op))

    def watch(self, prefix: str = "") -> Watch:
        """Yield changes made through this store object (this process) after the watch starts."""
        return self._local_watch(prefix)

    async def sweep(self) -> int:
        """Delete expired rows now; return how many."""

        def op(c: sqlite3.Connection) -> tuple[int, list[_Chg]]:
            keys = c.execute(
                f"DELETE FROM {self._t} WHERE expires_at <= ? RETURNING key", (time.time(),)
            ).fetchall()
            return len(keys), [(k, None, None, self._next_rev(c), "expire") for (k,) in keys]

        return int(await self._write(op))

    async def close(self) -> None:
        """Stop the sweeper, finish queued writes and close the connections."""
        if self._closed:
            return
        self._closed = True
        await self._stop_sweeper()
        self._end_watchers()
        for tx in list(self._txs):  # the writer would serve them for ever
            tx.abort()
        for worker in (self._reader, self._writer):
            if worker is not None:
                await worker.stop()
        self._reader = self._writer = None


class _SqliteTx(TxCore):
    """A transaction of a ``SqliteStore``: a lane of the writer thread.

    Savepoints cost no trip to the thread: ``SAVEPOINT`` / ``RELEASE`` /
    ``ROLLBACK TO`` are kept here and sent ahead of the next operation (or
    the commit); a savepoint with no operation inside is never sent at all.
    """

    def __init__(self, store: SqliteStore, lane: Lane) -> None:
        super().__init__(store, store._publish_changes)
        self._s = store
        self._lane = lane
        self._points = 0
        self._marks: list[str] = []  # statements not sent yet, in order
        self._late_op: Op | None = None  # run just before the commit

    async def run(self, op: Op, *, write: bool) -> Any:
        """Run ``op`` on the writer inside the transaction (a write in a savepoint of its own)."""
        self._s._check_open()
        self.check()
        try:
            return await self._lane.submit(
                op, mode=WRITE if write else READ, before=self._take_marks()
            )
        except sqlite3.Error as exc:
            raise StorageUnavailableError(f"SQLite failed inside a transaction: {exc}") from exc

    def _take_marks(self) -> tuple[str, ...]:
        """The savepoint statements not sent yet, to go before the next operation."""
        if not self._marks:
            return ()
        marks, self._marks = tuple(self._marks), []
        return marks

    def abort(self) -> None:
        """Roll back now without waiting (the store is closing)."""
        self.aborted, self.open = True, False
        self._s._txs.discard(self)
        self._lane.abort()

    async def commit(self) -> None:
        self._s._txs.discard(self)
        if self.aborted:
            raise StorageUnavailableError("store is closed; the transaction was rolled back")
        try:
            changes = await self._lane.commit(self._take_marks(), self._late_op)
        except sqlite3.Error as exc:
            raise StorageUnavailableError(f"SQLite commit failed: {exc}") from exc
        finally:
            self._late_op = None
        if changes:
            self.changes += changes

    async def write_late(self) -> None:
        """Send the late writes with the commit: no trip to the writer of their own."""
        self._late_op = self._late()
        self.late = {}

    def _late(self) -> Op | None:
        """The op writing what ``write_at_commit`` kept (it raises on a bad key or value)."""
        if not self.late:
            return None
        ops = [self._s._put_many_op(items, ttl, new=new) for (ttl, new), items in self.late.items()]
        return ops[0] if len(ops) == 1 else _chain(ops)

    def end_soon(self, *, commit: bool) -> asyncio.Future[None]:
        """Commit without a task: the lane tells ``_Ending`` once the round has committed.

        The same steps as ``TxCore.end`` (late writes with the commit, then the
        watchers and the ``on_end`` callbacks, or a failure for all), with no
        task or shield between the loop and the writer: a cancelled caller
        only stops waiting. Rollbacks, and late writes that fail to encode,
        take ``TxCore.end``.
        """
        if not commit or self.aborted:
            return super().end_soon(commit=commit)
        try:
            last = self._late()
        except Exception:  # ends there again, with its rollback
            return super().end_soon(commit=commit)
        self.late = {}
        self._s._txs.discard(self)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ending = _Ending(self, waiter, contextvars.copy_context())
        self._lane.commit_into(ending, self._take_marks(), last)
        return waiter

    async def rollback(self) -> None:
        self._s._txs.discard(self)
        if not self.aborted:
            await self._lane.rollback()

    async def savepoint(self) -> object:
        self.check()
        self._points += 1
        name = f"tx{self._points}"
        self._marks.append(f"SAVEPOINT {name}")
        return name

    def _unsent(self, mark: object) -> bool:
        """Forget ``mark`` if it was never sent (nothing ran inside it); ``True`` if so."""
        opened = f"SAVEPOINT {mark}"
        if opened not in self._marks:
            return False
        del self._marks[self._marks.index(opened) :]
        return True

    async def release(self, mark: object) -> None:
        if not self._unsent(mark):
            self._marks.append(f"RELEASE {mark}")

    async def rollback_to(self, mark: object) -> None:
        if not self._unsent(mark):
            self._marks += [f"ROLLBACK TO {mark}", f"RELEASE {mark}"]


class _Ending:
    """Hears a ``_SqliteTx`` fast commit in the loop (a ``Waiter``) and ends the transaction.

    The ``on_end`` callbacks run in ``context``, the committing task's (as
    they did in its ``TxCore.end`` task): an outbox relay started there
    sends its events as children of the request that committed them.
    """

    __slots__ = ("_context", "_over", "_tx", "_waiter")

    def __init__(
        self, tx: _SqliteTx, waiter: asyncio.Future[None], context: contextvars.Context
    ) -> None:
        self._tx = tx
        self._waiter = waiter
        self._context = context
        self._over = False

    def done(self) -> bool:
        return self._over

    def set_result(self, changes: list[_Chg] | None) -> None:
        """The round's ``COMMIT`` is on disk."""
        self._over = True
        tx = self._tx
        if changes:
            tx.changes += changes
        try:
            self._context.run(tx.committed)
        finally:  # the committing task is told, whatever a callback did
            if not self._waiter.done():
                self._waiter.set_result(None)

    def set_exception(self, exc: BaseException) -> None:
        """Nothing of the transaction stays (its savepoint, or the whole round, was undone)."""
        self._over = True
        err = exc
        if isinstance(exc, sqlite3.Error):
            err = StorageUnavailableError(f"SQLite commit failed: {exc}")
            err.__cause__ = exc
        try:
            self._context.run(self._tx._ended, committed=False)
        finally:
            if self._waiter.done():  # its caller was cancelled: nobody else hears of it
                log.warning("a cancelled Store transaction failed to end", exc_info=err)
            else:
                self._waiter.set_exception(err)


def _chain(ops: list[Op]) -> Op:
    """One op running ``ops`` in order: the last result, every op's changes."""

    def op(conn: sqlite3.Connection) -> tuple[Any, list[_Chg]]:
        result: Any = None
        changes: list[_Chg] = []
        for one in ops:
            result, more = one(conn)
            changes += more
        return result, changes

    return op
