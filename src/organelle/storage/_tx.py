"""Store transactions: the ``async with`` block, the handle it yields, the current one.

A backend subclasses ``TxCore`` (one open database transaction) and returns a
``TxBlock`` from ``transaction()``. Entering the block makes its core the
*current* transaction of the context (``CURRENT``, a ContextVar): plain calls
on the same store object from this task, and from tasks it starts inside the
block (asyncio copies the context into them), find it through
``BaseStore._current()`` and run inside it. The handle (``TxHandle``) makes its
core current for the one call it forwards, so explicit and implicit use share
one code path in each backend. With no transaction open anywhere, the cost to
an operation is one ContextVar read.

Entered again while its store already has a current transaction, a block is a
savepoint of that transaction (only in the task that opened it). When a
savepoint rolls back, the ``on_end`` callbacks registered inside it are told
``False`` at once (an outbox inside it must not relay what was undone).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from organelle.errors import (
    ConflictError,
    StorageUnavailableError,
    TransactionClosedError,
    TransactionError,
)

if TYPE_CHECKING:
    from organelle.storage.base import ChangeOp, Entry, Page, Store, StoreTx

__all__ = ["CURRENT", "Chg", "TxBlock", "TxCore", "TxHandle", "any_tx", "current_tx"]

log = logging.getLogger("organelle.storage")

# A change to hand to watchers once committed: key, kind, data, revision, op
# (kind and data are None for a delete or an expiry).
Chg = tuple[str, int | None, bytes | None, int, "ChangeOp"]

CURRENT: contextvars.ContextVar[TxCore | None] = contextvars.ContextVar(
    "organelle.storage.tx", default=None
)
# The hot-path test, one C call: ``any_tx() and store._current()`` is ``None``
# at the cost of this read alone while no transaction is open in the context.
any_tx = CURRENT.get


def current_tx(store: object) -> StoreTx | None:
    """The transaction of ``store`` current in this context, or ``None``.

    ``store`` is any Store (a backend, a ``NamespacedStore`` view — its
    transaction then prefixes keys too —, a ``CachedStore``, the kernel's
    store). Code that does not hold the ``tx`` object uses it to find the
    transaction its plain calls are joining (to register ``on_end``, say).
    """
    if CURRENT.get() is None:
        return None
    find = getattr(store, "current_tx", None)
    return None if find is None else find()


class TxCore:
    """One open backend transaction; a backend overrides the five hooks.

    Args:
        store: the backend object (its methods look for this core).
        publish: hands committed changes to the store's watchers.
    """

    def __init__(self, store: Store, publish: Callable[[list[Chg]], None]) -> None:
        self.store = store
        self.home: object = store  # what BaseStore._current compares itself with
        self.parent = CURRENT.get()
        self.owner = asyncio.current_task()
        self.open = True
        self.aborted = False  # rolled back under it: the store closed
        self.changes: list[Chg] = []
        self.handle = TxHandle(self)
        self._publish = publish
        self._ends: list[Callable[[bool], object]] = []
        # written just before the commit (write_at_commit), by (TTL, must be new)
        self.late: dict[tuple[float | None, bool], dict[str, Any]] = {}

    # -- backend hooks ----------------------------------------------------------------

    async def commit(self) -> None:
        """Commit (and release what the transaction holds); on failure, roll back and raise."""
        raise NotImplementedError

    async def rollback(self) -> None:
        """Roll back and release what the transaction holds."""
        raise NotImplementedError

    async def savepoint(self) -> object:
        """Open a savepoint; return what ``release`` / ``rollback_to`` need."""
        raise NotImplementedError

    async def release(self, mark: object) -> None:
        """Keep the savepoint's writes in the transaction."""
        raise NotImplementedError

    async def rollback_to(self, mark: object) -> None:
        """Undo the savepoint's writes."""
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------

    def check(self) -> None:
        """Raise unless the transaction is open: closed, or unavailable if the store closed."""
        if self.aborted:
            raise StorageUnavailableError("store is closed; the transaction was rolled back")
        if not self.open:
            raise closed_error()

    def on_end(self, fn: Callable[[bool], object]) -> None:
        """Call ``fn(committed)`` after the transaction ends."""
        self._ends.append(fn)

    def write_at_commit(
        self, items: Mapping[str, Any], *, ttl_s: float | None = None, new: bool = False
    ) -> None:
        """Put ``items`` (backend keys) as the last writes of the transaction, at its commit.

        Only for the outermost block (a savepoint's rollback would not undo
        them). A backend may send them with the commit itself (SQLite: no
        extra trip to the writer); a failure fails the commit. ``new``: the
        commit fails with ``ConflictError`` if one of the keys is live by
        then (the dedup inbox checks its rows there, not ahead).
        """
        self.late.setdefault((ttl_s, new), {}).update(items)

    async def write_late(self) -> None:
        """Write what ``write_at_commit`` kept (default: a ``put_many`` per TTL, then commit)."""
        if not self.late:
            return
        late, self.late = self.late, {}
        token = CURRENT.set(self)
        self.open = True  # the block has ended; these writes are still its own
        try:
            for (ttl_s, new), items in late.items():
                if new and (found := await self.store.get_many(items)):
                    raise taken_error(found)
                await self.store.put_many(items, ttl_s=ttl_s)
        finally:
            self.open = False
            CURRENT.reset(token)

    async def end(self, *, commit: bool) -> None:
        """Commit or roll back, then tell the watchers and the ``on_end`` callbacks."""
        if not commit:
            try:
                await self.rollback()
            except Exception:  # the block's own error is the one to raise
                log.warning("rolling back a Store transaction failed", exc_info=True)
            self._ended(committed=False)
            return
        try:
            await self.write_late()
        except BaseException:
            with contextlib.suppress(Exception):  # the late writes' error is the one to raise
                await self.rollback()
            self._ended(committed=False)
            raise
        try:
            await self.commit()
        except BaseException:
            self._ended(committed=False)
            raise
        if self.changes:
            self._publish(self.changes)
        self._ended(committed=True)

    def end_soon(self, *, commit: bool) -> asyncio.Future[None]:
        """Start ``end``; the future resolves once it is over.

        Cancelling the future (a cancelled caller) does not stop the end: the
        commit or rollback is never left half done, the connection or the
        writer never held. A backend may override it to end without a task.
        """
        task = asyncio.ensure_future(self.end(commit=commit))
        waiter: asyncio.Future[None] = task.get_loop().create_future()
        task.add_done_callback(functools.partial(_hand_over, waiter))
        return waiter

    def committed(self) -> None:
        """The commit is durable: tell the watchers and the ``on_end`` callbacks (never raises)."""
        if self.changes:
            try:
                self._publish(self.changes)
            except Exception:
                log.exception("publishing a committed Store transaction's changes failed")
        self._ended(committed=True)

    def undone(self, since: int) -> None:
        """A savepoint rolled back: the ``on_end`` callbacks it registered learn it now."""
        ends = self._ends[since:]
        del self._ends[since:]
        self._call(ends, committed=False)

    def _ended(self, *, committed: bool) -> None:
        ends, self._ends = self._ends, []
        self._call(ends, committed=committed)

    @staticmethod
    def _call(ends: list[Callable[[bool], object]], *, committed: bool) -> None:
        for fn in ends:
            try:
                fn(committed)
            except Exception:
                log.exception("an on_end callback of a Store transaction failed")


def taken_error(keys: Iterable[str]) -> ConflictError:
    """The error of a ``write_at_commit(..., new=True)`` whose keys were written meanwhile."""
    taken = sorted(keys)
    return ConflictError(
        f"{len(taken)} key(s) written at commit were live already (first: {taken[0]!r})",
        details={"keys": taken[:10]},
    )


def closed_error() -> TransactionClosedError:
    """The error of a transaction used after its block."""
    return TransactionClosedError(
        "this Store transaction has ended: use the tx object inside its async with block"
    )


class TxBlock:
    """What ``Store.transaction()`` returns: ``async with`` begins, commits or rolls back.

    Args:
        find: the store's current open transaction in this context, if any.
        begin: opens a new backend transaction.
    """

    def __init__(
        self, find: Callable[[], TxCore | None], begin: Callable[[], Awaitable[TxCore]]
    ) -> None:
        self._find = find
        self._begin = begin
        self._core: TxCore | None = None
        self._handle: TxHandle | None = None
        self._token: contextvars.Token[TxCore | None] | None = None
        self._mark: object = None
        self._changes = 0
        self._ends = 0

    async def __aenter__(self) -> TxHandle:
        if self._core is not None:
            raise TransactionError("a transaction() block can be entered once; call it again")
        outer = self._find()
        if outer is not None:
            if outer.owner is not asyncio.current_task():
                raise TransactionError(
                    "transaction() inside a transaction of the same store, from a task "
                    "started inside it: nest transactions in the task that opened the outer one"
                )
            self._mark = await outer.savepoint()
            self._changes = len(outer.changes)
            self._ends = len(outer._ends)
            self._core, self._handle = outer, TxHandle(outer)
            return self._handle
        core = await self._begin()
        self._core, self._handle = core, core.handle
        self._token = CURRENT.set(core)
        return core.handle

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        core, handle = self._core, self._handle
        if core is None or handle is None:
            return
        handle.closed = True
        if self._token is None:  # a savepoint
            if exc_type is None:
                await core.release(self._mark)
                return
            try:
                await core.rollback_to(self._mark)
            except Exception:
                log.warning("rolling back to a Store savepoint failed", exc_info=True)
            del core.changes[self._changes :]
            core.undone(self._ends)
            return
        CURRENT.reset(self._token)
        core.open = False
        # A cancelled caller stops waiting, not ending (see ``TxCore.end_soon``).
        await core.end_soon(commit=exc_type is None)


def _hand_over(waiter: asyncio.Future[None], task: asyncio.Future[None]) -> None:
    """Pass an ended ``TxCore.end`` task's outcome to whoever still waits for it."""
    if task.cancelled():
        if not waiter.done():
            waiter.cancel()
        return
    exc = task.exception()
    if waiter.done():  # its caller was cancelled: nobody else hears of a failure
        if exc is not None:
            log.warning("a cancelled Store transaction failed to end", exc_info=exc)
    elif exc is None:
        waiter.set_result(None)
    else:
        waiter.set_exception(exc)


class TxHandle:
    """The ``StoreTx`` a block yields: each call runs on the backend inside the transaction."""

    __slots__ = ("_core", "closed")

    def __init__(self, core: TxCore) -> None:
        self._core = core
        self.closed = False

    def _enter(self) -> contextvars.Token[TxCore | None]:
        if self.closed:
            raise closed_error()
        self._core.check()
        return CURRENT.set(self._core)

    async def get(self, key: str, *, type: Any = None) -> Entry | None:  # noqa: A002 - mirrors Store.get
        """See ``StoreTx.get``."""
        token = self._enter()
        try:
            return await self._core.store.get(key, type=type)
        finally:
            CURRENT.reset(token)

    async def get_many(self, keys: Iterable[str]) -> dict[str, Entry]:
        """See ``StoreTx.get_many``."""
        token = self._enter()
        try:
            return await self._core.store.get_many(keys)
        finally:
            CURRENT.reset(token)

    async def put(self, key: str, value: Any, *, ttl_s: float | None = None) -> int:
        """See ``StoreTx.put``."""
        token = self._enter()
        try:
            return await self._core.store.put(key, value, ttl_s=ttl_s)
        finally:
            CURRENT.reset(token)

    async def put_many(
        self, items: Mapping[str, Any], *, ttl_s: float | None = None
    ) -> dict[str, int]:
        """See ``StoreTx.put_many``."""
        token = self._enter()
        try:
            return await self._core.store.put_many(items, ttl_s=ttl_s)
        finally:
            CURRENT.reset(token)

    async def delete(self, key: str) -> bool:
        """See ``StoreTx.delete``."""
        token = self._enter()
        try:
            return await self._core.store.delete(key)
        finally:
            CURRENT.reset(token)

    async def delete_many(self, keys: Iterable[str]) -> int:
        """See ``StoreTx.delete_many``."""
        token = self._enter()
        try:
            return await self._core.store.delete_many(keys)
        finally:
            CURRENT.reset(token)

    async def scan(self, prefix: str = "", *, limit: int = 100, cursor: str | None = None) -> Page:
        """See ``StoreTx.scan``."""
        token = self._enter()
        try:
            return await self._core.store.scan(prefix, limit=limit, cursor=cursor)
        finally:
            CURRENT.reset(token)

    async def compare_and_set(
        self, key: str, value: Any, *, revision: int | None, ttl_s: float | None = None
    ) -> int:
        """See ``StoreTx.compare_and_set``."""
        token = self._enter()
        try:
            return await self._core.store.compare_and_set(
                key, value, revision=revision, ttl_s=ttl_s
            )
        finally:
            CURRENT.reset(token)

    async def incr(self, key: str, by: int = 1) -> int:
        """See ``StoreTx.incr``."""
        token = self._enter()
        try:
            return await self._core.store.incr(key, by)
        finally:
            CURRENT.reset(token)

    def on_end(self, fn: Callable[[bool], object]) -> None:
        """See ``StoreTx.on_end``."""
        if self.closed or not self._core.open:
            raise closed_error()
        self._core.on_end(fn)

    @property
    def at_commit(self) -> bool:
        """Whether ``write_at_commit`` may be used: the outermost block, still open."""
        return not self.closed and self._core.open and self._core.handle is self

    def write_at_commit(
        self, items: Mapping[str, Any], *, ttl_s: float | None = None, new: bool = False
    ) -> None:
        """See ``TxCore.write_at_commit`` (the outermost block's handle only)."""
        if self.closed or not self._core.open or self._core.handle is not self:
            raise closed_error()
        self._core.write_at_commit(items, ttl_s=ttl_s, new=new)
