"""``StateEngine``: observable live values, optionally persisted.

A module keeps small live state (``"orders.pending"``, ``"feeds.btc.price"``)
that others read synchronously and watch for changes. Keys are dotted like
event subjects and ``subscribe`` takes the same NATS-style patterns (``*`` is
one token, ``>`` the rest), so state changes and events are filtered alike.
With a ``Store`` the values survive restarts (``load()`` restores them); with
an ``emit`` callable (the kernel passes its event emitter) every change is
also published as the event ``state.changed.<key>``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from organelle.storage.base import Store, bad

__all__ = ["StateChange", "StateEngine"]

_log = logging.getLogger("organelle.storage.state")
_MISSING: Any = object()
QUEUE_MAX = 10_000
_REST = ">"

Emit = Callable[[str, Any], Awaitable[None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class StateChange:
    """One change of a live value; ``deleted`` is set when the key went away."""

    key: str
    value: Any
    old: Any
    deleted: bool = False


def _tokens(key: object, *, pattern: bool) -> list[str]:
    field = "pattern" if pattern else "key"
    if not isinstance(key, str) or not key:
        raise bad(field, f"{field} must be a non-empty dotted str")
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not part or any(c.isspace() for c in part):
            raise bad(field, f"empty or blank token in {key!r}")
        wild = part in {"*", ">"}
        if not pattern and ("*" in part or ">" in part):
            raise bad(field, f"wildcards are not allowed in a key: {key!r}")
        if pattern and (
            (("*" in part or ">" in part) and not wild) or (part == ">" and i != len(parts) - 1)
        ):
            raise bad(field, f"'*' must be a whole token and '>' the last one: {key!r}")
    return parts


def matches(pattern: list[str], key: list[str]) -> bool:
    """NATS subject matching on token lists."""
    for i, token in enumerate(pattern):
        if token == _REST:
            return len(key) > i
        if i >= len(key) or (token not in {"*", key[i]}):
            return False
    return len(key) == len(pattern)


class _Subscription(AsyncIterator[StateChange]):
    def __init__(self, engine: StateEngine, pattern: list[str]) -> None:
        self._engine = engine
        self.pattern = pattern
        self.queue: asyncio.Queue[StateChange | None] = asyncio.Queue(QUEUE_MAX)

    async def __anext__(self) -> StateChange:
        item = await self.queue.get()
        if item is None:
            raise StopAsyncIteration
        return item

    async def aclose(self) -> None:
        self._engine._subs.discard(self)
        if self.queue.empty():
            self.queue.put_nowait(None)


class StateEngine:
    """Live in-memory values with change subscriptions.

    Args:
        store: where values persist (use a ``NamespacedStore``); ``None`` keeps
            them in memory only.
        emit: called as ``emit("state.changed.<key>", {"key", "value", "old",
            "deleted"})`` after each change; its failures are logged, not raised,
            because the change already happened.
    """

    def __init__(self, store: Store | None = None, emit: Emit | None = None) -> None:
        self._store = store
        self._emit = emit
        self._values: dict[str, Any] = {}
        self._subs: set[_Subscription] = set()
        self._lock = asyncio.Lock()

    def get(self, key: str, default: Any = None) -> Any:
        """Return the live value of ``key`` (no await: it is in memory)."""
        return self._values.get(key, default)

    def snapshot(self, pattern: str = ">") -> dict[str, Any]:
        """Return a copy of the values whose keys match ``pattern``."""
        pat = _tokens(pattern, pattern=True)
        return {k: v for k, v in self._values.items() if matches(pat, k.split("."))}

    async def load(self) -> int:
        """Restore values from the store (replacing memory); return how many."""
        if self._store is None:
            return 0
        loaded: dict[str, Any] = {}
        cursor: str | None = None
        while True:
            page = await self._store.scan("", limit=500, cursor=cursor)
            loaded.update((e.key, e.value) for e in page.items)
            cursor = page.cursor
            if cursor is None:
                break
        async with self._lock:
            self._values = loaded
        return len(loaded)

    async def set(self, key: str, value: Any) -> StateChange:
        """Set ``key`` (persisted first, so a failed write changes nothing)."""
        _tokens(key, pattern=False)
        async with self._lock:
            if self._store is not None:
                await self._store.put(key, value)
            old = self._values.get(key)
            self._values[key] = value
            change = StateChange(key=key, value=value, old=old)
            await self._notify(change)
        return change

    async def delete(self, key: str) -> bool:
        """Remove ``key``; ``True`` if it had a value."""
        _tokens(key, pattern=False)
        async with self._lock:
            if self._store is not None:
                await self._store.delete(key)
            old = self._values.pop(key, _MISSING)
            if old is _MISSING:
                return False
            await self._notify(StateChange(key=key, value=None, old=old, deleted=True))
        return True

    def subscribe(self, pattern: str = ">") -> _Subscription:
        """Return an async iterator of changes to keys matching ``pattern``.

        It is registered at once, so changes made after this call are never
        missed; ``await sub.aclose()`` ends it.
        """
        sub = _Subscription(self, _tokens(pattern, pattern=True))
        self._subs.add(sub)
        return sub

    async def _notify(self, change: StateChange) -> None:
        tokens = change.key.split(".")
        for sub in list(self._subs):
            if matches(sub.pattern, tokens):
                try:
                    sub.queue.put_nowait(change)
                except asyncio.QueueFull:
                    _log.warning("state subscriber %s fell behind; dropped", sub.pattern)
                    self._subs.discard(sub)
        if self._emit is not None:
            payload = {
                "key": change.key,
                "value": change.value,
                "old": change.old,
                "deleted": change.deleted,
            }
            try:
                await self._emit(f"state.changed.{change.key}", payload)
            except Exception:
                _log.exception("emitting state.changed.%s failed", change.key)

    async def close(self) -> None:
        """End every subscription (the store is not closed: it is not ours)."""
        for sub in list(self._subs):
            await sub.aclose()
