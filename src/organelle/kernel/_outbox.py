"""The transactional outbox: Store writes, events, records and jobs that commit together.

``async with self.transaction() as tx:`` opens one Store transaction. Inside
it ``tx.store`` (and the module's plain ``self.store``, which joins the
current transaction) writes as usual, and ``tx.emit`` / ``tx.append`` /
``tx.enqueue`` write **outbox rows** into the same transaction instead of
sending anything. Either all of it commits or none of it does.

Once the transaction commits, the rows are relayed at once (published,
appended, enqueued) by one relay task that the commit wakes and that sends,
in commit order, whatever every commit so far left; the relayed rows are
deleted in batches afterwards (``DELETE_AFTER_S``, or when the kernel
stops), so a relay costs no durable commit of its own.
A crash between the commit and the relay leaves the
rows: the relay task picks them up when a kernel next runs on that Store
(and every ``[kernel] outbox_interval_s``), so a committed
message is sent at least once — and with the id it was given inside the
transaction (a deterministic id for keyed events, else a UUIDv7 fixed at
``tx.emit``), so an idempotent consumer handles it exactly once. A job
relayed twice is one job: its idempotency key is the row's id.

A crash after the relay but before the batched delete also
leaves rows: they are sent again, with the same ids. Several nodes on one
Store may relay the same leftover row; the ids make that harmless for
idempotent consumers (and a job is enqueued once). NATS KV has no transactions:
``transaction()`` raises ``TransactionUnsupportedError`` there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any

from organelle.codec import to_builtins
from organelle.envelope import EnvelopeFactory, event_topic, rebuild, uuid7, wire_name
from organelle.errors import ValidationError

if TYPE_CHECKING:
    from organelle.storage import Store, StoreTx

__all__ = ["Outbox", "Transaction"]

log = logging.getLogger("organelle.outbox")

PREFIX = "_outbox."
_BATCH = 200
DELETE_AFTER_S = 0.05  # relayed rows are deleted together, this long after the first

Emit = Callable[..., Awaitable[None]]


class Transaction:
    """One open outbox transaction (``Module.transaction()`` / ``Kernel.transaction()``)."""

    def __init__(self, outbox: Outbox, tx: StoreTx, store: Any, module: str | None) -> None:
        self._outbox = outbox
        self._tx = tx
        self.store = store  # the module's view (or the kernel's store); joins the transaction
        self._module = module
        self.rows: list[tuple[str, dict[str, Any]]] = []

    async def emit(
        self,
        topic: str | object,
        payload: Any = None,
        *,
        key: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> str:
        """Emit an event when the transaction commits; returns its event id."""
        if not isinstance(topic, str):  # tx.emit(OrderPlaced(...)), as emit()
            topic, payload = event_topic(topic, payload), topic
        event_id = self._outbox.envelopes().event_id(payload)
        await self._add("emit", topic, payload, {"id": event_id, "key": key, "meta": meta or None})
        return event_id

    async def append(self, stream: str, payload: Any = None, *, key: str | None = None) -> str:
        """Append a record to ``stream`` when the transaction commits; returns its event id."""
        event_id = self._outbox.envelopes().event_id(payload)
        await self._add("append", stream, payload, {"id": event_id, "key": key})
        return event_id

    async def enqueue(
        self,
        job: str,
        /,
        *,
        delay_s: float | None = None,
        priority: int = 0,
        **params: Any,
    ) -> str:
        """Enqueue ``job`` when the transaction commits (exactly once: keyed by the row)."""
        return await self._add("enqueue", job, params, {"delay_s": delay_s, "priority": priority})

    async def _add(self, kind: str, target: str, payload: Any, extra: dict[str, Any]) -> str:
        row_id = uuid7()
        row = {
            "kind": kind,
            "target": target,
            "payload": to_builtins(payload),
            "type": wire_name(payload),
            "module": self._module,
            **{k: v for k, v in extra.items() if v is not None},
        }
        self.rows.append((row_id, row))  # written at the end of the block, with the commit
        return row_id


class _Block(AbstractAsyncContextManager["Transaction"]):
    """``Outbox.transaction()``: a Store transaction whose outbox rows go with its commit.

    A plain class, not an ``asynccontextmanager`` generator: it is entered
    once per transaction, on the loop's busiest path.
    """

    def __init__(self, outbox: Outbox, module: str | None) -> None:
        self._outbox = outbox
        self._module = module

    async def __aenter__(self) -> Transaction:
        outbox = self._outbox
        store = outbox._store()
        inner = getattr(store, "inner", None)  # housekeeping looks past the observing wrapper
        self._raw = raw = store if inner is None else inner
        self._nested = _current_tx(raw) is not None  # a savepoint: its rows roll back with it
        self._inner = block = store.transaction()
        stx = await block.__aenter__()
        module = self._module
        view = store if module is None else outbox._view(module)
        self._tx = tx = Transaction(outbox, stx, view, module)
        return tx

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        inner = self._inner
        if exc_type is None and self._tx.rows:
            try:
                await self._stage(self._tx)
            except BaseException as failed:  # rolls the transaction back
                await inner.__aexit__(type(failed), failed, failed.__traceback__)
                raise
        await inner.__aexit__(exc_type, exc, tb)

    async def _stage(self, tx: Transaction) -> None:
        """Write the rows with the commit, and relay them once it has committed."""
        rows = list(tx.rows)
        items = {PREFIX + row_id: row for row_id, row in rows}
        late = None if self._nested else getattr(_current_tx(self._raw), "write_at_commit", None)
        if late is None:
            await tx._tx.put_many(items)
        else:  # sent with the commit (SQLite: no trip to the writer of its own)
            late(items)
        outbox = self._outbox
        tx._tx.on_end(lambda committed: committed and outbox._soon(rows))


def _current_tx(store: object) -> StoreTx | None:
    """``organelle.storage.current_tx``, imported on first use (as the Store is)."""
    global _found  # noqa: PLW0603 - a lazy import, once
    if _found is None:
        from organelle.storage import current_tx

        _found = current_tx
    return _found(store)


_found: Callable[[object], StoreTx | None] | None = None


class Outbox:
    """The kernel's outbox: opens transactions and relays what they committed."""

    def __init__(
        self,
        store: Callable[[], Store],
        *,
        view: Callable[[str], Any],
        envelopes: Callable[[], EnvelopeFactory],
        emit: Emit,
        append: Callable[..., Awaitable[Any]],
        enqueue: Callable[..., Awaitable[Any]],
    ) -> None:
        self._store = store
        self._view = view
        self.envelopes = envelopes
        self._emit = emit
        self._append = append
        self._enqueue = enqueue
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: list[tuple[str, dict[str, Any]]] = []  # committed, not sent yet
        self._relayer: asyncio.Task[None] | None = None
        self._queued: set[str] = set()  # ids handed to the relayer: the sweep leaves them
        self._lock = asyncio.Lock()
        self._sent: set[str] = set()  # relayed; the row is not deleted yet
        self._sweeper: asyncio.Task[None] | None = None
        self.relayed = 0
        self.failed = 0

    def transaction(self, module: str | None = None) -> AbstractAsyncContextManager[Transaction]:
        """One Store transaction whose messages are sent once it commits."""
        return _Block(self, module)

    def _soon(self, rows: list[tuple[str, dict[str, Any]]]) -> bool:
        """A commit wakes the relay: one task sends what all commits so far left, in order."""
        self._pending += rows
        self._queued.update(row_id for row_id, _ in rows)
        if self._relayer is None:
            task = asyncio.get_running_loop().create_task(self._relay_pending())
            self._relayer = task
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return True

    async def _relay_pending(self) -> None:
        try:
            while self._pending:
                rows, self._pending = self._pending, []
                # A sweep whose scan read a row between its commit and this hand-over
                # sent it already: not twice.
                fresh = [r for r in rows if r[0] not in self._sent]
                try:
                    await self._relay_rows(fresh)
                finally:
                    self._queued.difference_update(row_id for row_id, _ in rows)
        finally:
            self._relayer = None

    async def settle(self) -> None:
        """Wait for the relays started so far, and delete the rows they sent."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        sweeper = self._sweeper
        if sweeper is not None:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)
        await self._delete_sent()

    def _sent_one(self, row_id: str) -> None:
        self._sent.add(row_id)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        try:
            await asyncio.sleep(DELETE_AFTER_S)
        finally:
            self._sweeper = None
        await self._delete_sent()

    async def _delete_sent(self) -> None:
        """Delete the relayed rows in one write (a failure keeps them for the next try)."""
        if not self._sent:
            return
        ids = list(self._sent)
        try:
            await self._raw().delete_many([PREFIX + row_id for row_id in ids])
        except Exception:  # kept for the next try; sent again after a restart: harmless
            log.exception("deleting %d relayed outbox rows failed", len(ids))
            return
        self._sent.difference_update(ids)

    def _raw(self) -> Store:
        """The Store under the kernel's observing wrapper: housekeeping is not reported."""
        store = self._store()
        inner = getattr(store, "inner", None)
        return store if inner is None else inner

    async def relay(self) -> int:
        """Relay every leftover row (a crash between commit and relay); how many were sent."""
        store = self._raw()
        sent = 0
        async with self._lock:
            cursor: str | None = None
            while True:
                page = await store.scan(PREFIX, limit=_BATCH, cursor=cursor)
                rows = [(e.key[len(PREFIX) :], e.value) for e in page.items]
                skip = self._sent, self._queued
                sent += await self._send([r for r in rows if not any(r[0] in ids for ids in skip)])
                cursor = page.cursor
                if not cursor:
                    return sent

    async def run(self, interval_s: Callable[[], float]) -> None:
        """Relay leftovers now and then every ``interval_s`` (the kernel's background task)."""
        while True:
            try:
                await self.relay()
            except Exception:  # a Store hiccup: the next round tries again
                log.exception("outbox relay failed")
            await asyncio.sleep(interval_s())

    async def _relay_rows(self, rows: list[tuple[str, dict[str, Any]]]) -> None:
        try:
            await self._send(rows)
        except Exception:  # left in the Store: the periodic relay sends it
            log.exception("outbox relay after commit failed")

    async def _send(self, rows: list[tuple[str, dict[str, Any]]]) -> int:
        sent = 0
        for row_id, row in rows:
            try:
                await self._one(row_id, row)
            except Exception:
                self.failed += 1
                log.exception(
                    "outbox row %s (%s %s) not sent yet", row_id, row.get("kind"), row.get("target")
                )
                continue
            self._sent_one(row_id)
            self.relayed += 1
            sent += 1
        return sent

    async def _one(self, row_id: str, row: dict[str, Any]) -> None:
        payload = rebuild(row.get("type"), row.get("payload"))
        kind, target = row["kind"], row["target"]
        if kind == "emit":
            await self._emit(
                target,
                payload,
                meta=row.get("meta"),
                module=row.get("module"),
                key=row.get("key"),
                event_id=row.get("id"),
            )
        elif kind == "append":
            await self._append(target, payload, row.get("key"), None, event_id=row.get("id"))
        elif kind == "enqueue":
            await self._enqueue(
                target,
                delay_s=row.get("delay_s"),
                priority=row.get("priority", 0),
                idempotency_key=f"outbox-{row_id}",
                **(payload or {}),
            )
        else:
            raise ValidationError(f"unknown outbox row kind {kind!r}")
