"""The dedup inbox: which event ids each idempotent consumer has handled, in the Store.

An idempotent handler (``@on(..., idempotent=True)``, and ``@consume`` by
default) asks the inbox before it runs and records the id once it returns,
so an event delivered twice — a producer that retried with the same
deterministic id, a redelivery after a crash — has its effect once. Entries
live ``[kernel] inbox_window_s`` (a Store TTL), so the inbox does not grow
for ever; a repeat later than the window runs again.

Rows are ``_inbox.<consumer>.<digest of the id>`` (any id a foreign producer
sends fits every backend's key rules). Ids this process recorded are also
kept in a bounded in-memory set, so a burst of repeats costs no Store read;
a miss there always asks the Store, which all nodes share.

Where the Store has transactions (memory, SQLite, PostgreSQL) the check,
the handler and the inbox row are one transaction: the handler's own Store
writes (``self.store``, which joins the current transaction) commit with the
row or not at all, so a crash at any moment leaves either both or neither —
the effect happens exactly once. On NATS KV (no transactions) the row is
written after the handler returns: a crash between the two runs the handler
again on redelivery (at-least-once).

A stream consumer handles a run of records in one transaction
(``batch``): the inbox rows of the run are read in one ``get_many`` at its
start and written at its end with the commit (SQLite: in the same trip to
the writer thread, no trip of their own; checked there to be new, as on
PostgreSQL's READ COMMITTED two racing runs could both miss them at the
start), each handler runs in a savepoint of its own (a failing one undoes
only its own writes), and the transaction commits before the consumer
moves the group past the records — a crash before that commit undoes the
whole run, which then comes again.
"""

from __future__ import annotations

import contextvars
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from organelle.errors import TransactionUnsupportedError

if TYPE_CHECKING:
    from organelle.storage import Store, StoreTx

__all__ = ["StoreInbox"]

_NAMESPACE = "_inbox"
_REMEMBERED = 16_384  # ids kept in memory per process


@dataclass(slots=True)
class _Run:
    """The records of one consumer handled in one transaction (``StoreInbox.batch``)."""

    consumer: str
    tx: StoreTx
    checked: set[str]  # keys looked up before the run
    seen: set[str]  # ... and found there
    done: dict[str, None] = field(default_factory=dict)  # handled in this run, in order


_RUN: contextvars.ContextVar[_Run | None] = contextvars.ContextVar(
    "organelle.inbox.run", default=None
)


def inbox_key(consumer: str, event_id: str) -> str:
    """The Store key of one consumer's record of one event."""
    import hashlib  # loaded on first use, not with the kernel

    digest = hashlib.blake2b(event_id.encode(), digest_size=16).hexdigest()
    return f"{_NAMESPACE}.{consumer}.{digest}"


class StoreInbox:
    """The inbox over the kernel's Store (opened on first use)."""

    def __init__(self, store: Callable[[], Store], window_s: Callable[[], float]) -> None:
        self._store = store
        self._window_s = window_s
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._atomic: bool | None = None  # learnt on first use: does the Store have transactions?

    async def once(
        self, consumer: str, event_id: str, coro: Coroutine[Any, Any, Any]
    ) -> tuple[bool, Any]:
        """Run ``coro`` unless ``consumer`` handled ``event_id``: ``(ran, result)``.

        ``coro`` is closed unstarted when the event is a repeat.
        """
        key = inbox_key(consumer, event_id)
        if key in self._recent:
            coro.close()
            return False, None
        run = _RUN.get()
        if run is not None and run.consumer == consumer:
            return await self._in_run(run, key, coro)
        store = self._store()
        if self._atomic is not False:
            entered = False
            try:
                async with store.transaction() as tx:
                    entered = True
                    self._atomic = True
                    if await tx.get(key) is not None:
                        coro.close()
                        return False, None
                    result = await coro
                    await self._write(store, tx, {key: 1})
                    tx.on_end(lambda committed: committed and self.remember(key))
            except TransactionUnsupportedError:
                if entered:
                    raise
                self._atomic = False
            else:
                return True, result
        try:
            seen = await store.get(key) is not None
        except BaseException:
            coro.close()
            raise
        if seen:
            coro.close()
            return False, None
        result = await coro
        await store.put(key, 1, ttl_s=self._window_s())
        self.remember(key)
        return True, result

    async def _in_run(
        self, run: _Run, key: str, coro: Coroutine[Any, Any, Any]
    ) -> tuple[bool, Any]:
        """``once`` inside a ``batch``: the handler in a savepoint, the row at the end."""
        try:
            repeat = key in run.done or key in run.seen
            if not repeat and key not in run.checked:  # its id was not known before
                repeat = await run.tx.get(key) is not None
        except BaseException:
            coro.close()
            raise
        if repeat:
            coro.close()
            return False, None
        async with self._store().transaction():  # a savepoint of the run's transaction
            result = await coro
        run.done[key] = None
        return True, result

    @asynccontextmanager
    async def batch(self, consumer: str, event_ids: Iterable[str]) -> AsyncIterator[None]:
        """Handle several of ``consumer``'s events in one Store transaction.

        ``once`` calls inside the block (in this task) run their handlers in
        savepoints of it and write their rows together at its end; the block
        raises if the commit fails (then none of it happened). Where the
        Store has no transactions the block does nothing and ``once`` works
        alone.
        """
        store = self._store()
        if self._atomic is False:
            yield
            return
        block = store.transaction()
        try:
            tx = await block.__aenter__()
        except TransactionUnsupportedError:
            self._atomic = False
            yield
            return
        self._atomic = True
        run: _Run | None = None
        token = None
        try:
            keys = {inbox_key(consumer, i) for i in event_ids}
            keys.difference_update(self._recent)
            # Looked up inside the transaction: a member handling the same ids
            # meanwhile (a lease that ran out under load) waits for this one on
            # SQLite's writer and then skips them, rather than running them too.
            found = set(await tx.get_many(keys)) if keys else set()
            late = self._late(store)
            run = _Run(consumer, tx, keys, found)
            token = _RUN.set(run)
            yield
            _RUN.reset(token)
            token = None
            if run.done:
                rows = dict.fromkeys(run.done, 1)
                if late is None:
                    await tx.put_many(rows, ttl_s=self._window_s())
                else:
                    late(rows, ttl_s=self._window_s(), new=True)
                done = list(run.done)
                tx.on_end(lambda committed: committed and self._remember_all(done))
        except BaseException as exc:
            if token is not None:
                _RUN.reset(token)
            await block.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        await block.__aexit__(None, None, None)

    @staticmethod
    def _late(store: Store) -> Callable[..., None] | None:
        """The current transaction's ``write_at_commit``: ``None`` in a savepoint or without it."""
        from organelle.storage import current_tx  # the Store is imported on first use

        inner = getattr(store, "inner", store)  # under the kernel's observing wrapper
        tx = current_tx(inner)
        if not getattr(tx, "at_commit", False):
            return None
        late: Callable[..., None] = getattr(tx, "write_at_commit")  # noqa: B009 - not a StoreTx name
        return late

    async def _write(self, store: Store, tx: StoreTx, rows: dict[str, int]) -> None:
        """Write inbox rows in ``tx``, with its commit where the backend can (no own trip)."""
        late = self._late(store)
        if late is None:  # a savepoint of an outer transaction, or a backend without it
            await tx.put_many(rows, ttl_s=self._window_s())
        else:
            late(rows, ttl_s=self._window_s())

    def _remember_all(self, keys: list[str]) -> bool:
        for key in keys:
            self.remember(key)
        return True

    async def seen(self, consumer: str, event_id: str) -> bool:
        """Whether ``consumer`` handled ``event_id`` within the window."""
        key = inbox_key(consumer, event_id)
        if key in self._recent:
            return True
        return await self._store().get(key) is not None

    async def record(self, consumer: str, event_id: str) -> None:
        """Remember that ``consumer`` handled ``event_id`` (for the window)."""
        key = inbox_key(consumer, event_id)
        await self._store().put(key, 1, ttl_s=self._window_s())
        self.remember(key)

    def remember(self, key: str) -> bool:
        """Keep ``key`` in the bounded in-memory set of recorded ids."""
        recent = self._recent
        recent[key] = None
        if len(recent) > _REMEMBERED:
            recent.popitem(last=False)
        return True
