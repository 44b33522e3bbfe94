"""``FlagCache``: keeps one node's ``FlagSet``s in step with the cluster store.

Where the Store's watch reaches other processes (NATS KV; PostgreSQL with
``notify``), changes are followed as they come, with a slow poll of the
change counter as a safety net. Elsewhere (SQLite, PostgreSQL without
notify, memory) the counter is polled every ``poll_s`` — one small read —
and the flags are read again when it moved. Either way a change reaches a
node well within a second, and checks never wait for the store.

Each change a node sees is announced on that node as ``kernel.flags.changed``
(to the kernel's listeners and its local subscribers), with who made it and
the state before and after.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from organelle.errors import FlagRuleError
from organelle.flags._admin import PREFIX, REV_KEY, split_key
from organelle.flags._rules import FlagRecord, parse_record
from organelle.flags._set import FlagSet, flags_model

if TYPE_CHECKING:
    from pydantic import BaseModel

    from organelle.storage import Store

__all__ = ["CHANGED", "FlagCache"]

CHANGED = "kernel.flags.changed"
log = logging.getLogger("organelle.flags")

_Key = tuple[str, str]


def watch_is_shared(store: Store) -> bool:
    """Whether ``store.watch`` sees writes made by other processes."""
    inner = getattr(store, "inner", store)  # the kernel hands out an ObservedStore
    # Backends are looked up where they are already imported: one not loaded is not in use.
    nats = sys.modules.get("organelle.storage.nats_kv")
    if nats is not None and isinstance(inner, nats.NatsKvStore):
        return True
    postgres = sys.modules.get("organelle.storage.postgres")
    return postgres is not None and isinstance(inner, postgres.PostgresStore) and inner.notify


class FlagCache:
    """Holds every stored flag record and applies changes to the attached ``FlagSet``s.

    Args:
        store: the cluster store, asked for when the cache opens.
        announce: reports ``kernel.flags.changed`` on this node.
        poll_s: how often the change counter is read when watch stays in-process.
        safety_poll_s: the same, when a cross-process watch follows changes.
    """

    def __init__(
        self,
        store: Callable[[], Store],
        announce: Callable[[str, dict[str, Any]], Awaitable[None]],
        *,
        poll_s: float = 0.25,
        safety_poll_s: float = 5.0,
    ) -> None:
        self.sets: dict[str, FlagSet] = {}
        self.poll_s = poll_s
        self.safety_poll_s = safety_poll_s
        self._store = store
        self._announce = announce
        self._records: dict[_Key, tuple[int, FlagRecord]] = {}
        self._rev: Any = None
        self._task: asyncio.Task[None] | None = None

    def attach(self, module: str, cls: type) -> FlagSet | None:
        """The ``FlagSet`` for a module of class ``cls`` (kept across restarts of the same class).

        Raises:
            DefinitionError: the class's ``Flags`` is not a valid flags model.
        """
        model = flags_model(cls)
        if model is None:
            self.sets.pop(module, None)
            return None
        found = self.sets.get(module)
        if found is None or found._model is not model:
            found = self.sets[module] = FlagSet(module, model)
            found._apply_all({f: rec for (m, f), (_, rec) in self._records.items() if m == module})
        return found

    def models(self) -> dict[str, type[BaseModel]]:
        """Module name → ``Flags`` model, for the modules attached here."""
        return {name: flag_set._model for name, flag_set in self.sets.items()}

    async def open(self) -> None:
        """Load every stored flag, then follow changes (nothing to do without flags)."""
        if not self.sets or self._task is not None:
            return
        await self.refresh(announce=False)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="organelle-flags")

    async def close(self) -> None:
        """Stop following changes; the sets keep their last values."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._rev = None

    async def refresh(self, *, announce: bool = True) -> None:
        """Read every flag record and apply what changed."""
        store = self._store()
        # The counter first: a change made during the scan moves it again later.
        counter = await store.get(REV_KEY)
        found: dict[_Key, tuple[int, FlagRecord | None]] = {}
        cursor: str | None = None
        while True:
            page = await store.scan(PREFIX, limit=500, cursor=cursor)
            for entry in page.items:
                parsed = self._parse(entry.key, entry.value)
                if parsed is not None:
                    found[parsed[0]] = (entry.revision, parsed[1])
            cursor = page.cursor
            if cursor is None:
                break
        for key in set(found) | set(self._records):
            revision, record = found.get(key, (0, None))
            await self._take(key, revision, record, announce=announce)
        self._rev = None if counter is None else counter.value

    def _parse(self, key: str, value: Any) -> tuple[_Key, FlagRecord | None] | None:
        parts = split_key(key)
        if parts is None:
            return None
        if value is None:
            return parts, None
        try:
            return parts, parse_record(value, key)
        except FlagRuleError as exc:
            log.warning("stored flag %s ignored: %s", key, exc)
            return None

    async def _take(
        self, key: _Key, revision: int, record: FlagRecord | None, *, announce: bool
    ) -> None:
        held = self._records.get(key)
        if held is not None and (
            held[0] == revision or (record is not None and held[0] > revision)
        ):
            return  # already applied, or older than what is (a watch racing a scan)
        if record is None:
            if held is None:
                return
            self._records.pop(key)
        else:
            self._records[key] = (revision, record)
        module, flag = key
        flag_set = self.sets.get(module)
        if flag_set is not None:
            flag_set._apply(flag, record)
        if announce and record is not None:
            await self._announce(
                CHANGED,
                {
                    "module": module,
                    "flag": flag,
                    "by": record.by,
                    "at": record.at,
                    "old": record.previous,
                    "new": record.state(),
                },
            )

    async def _run(self) -> None:
        store = self._store()
        shared = watch_is_shared(store)
        delay = self.poll_s
        while True:
            try:
                if shared:
                    await self._follow(store)
                else:
                    await asyncio.sleep(self.poll_s)
                    await self._check(store)
                delay = self.poll_s
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store is down: keep serving the cache
                log.warning("flags: reading the store failed (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.safety_poll_s)

    async def _check(self, store: Store) -> None:
        counter = await store.get(REV_KEY)
        if (None if counter is None else counter.value) != self._rev:
            await self.refresh()

    async def _follow(self, store: Store) -> None:
        """Apply changes as the watch delivers them, until it ends (then the caller retries)."""
        async with store.watch(PREFIX) as changes:
            await self.refresh()  # the watch is live: nothing is missed between the two
            while True:
                try:
                    change = await asyncio.wait_for(anext(changes), self.safety_poll_s)
                except TimeoutError:
                    await self._check(store)
                    continue
                if change.key == REV_KEY:
                    self._rev = change.value
                    continue
                parsed = self._parse(change.key, change.value)
                if parsed is not None:
                    await self._take(parsed[0], change.revision, parsed[1], announce=True)
