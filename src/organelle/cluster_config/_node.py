"""``ConfigNode``: one node's side of cluster config — heartbeat, vote, apply, follow.

Every ``poll_s`` the node reads the change record and the layer (two keys):

* a change in ``prepare`` that names this node: validate its layer, vote;
* otherwise, the stored layer is the truth: when its revision differs from
  the one this node runs on, apply it — a commit, a rollback, a change made
  while this node was away or whose proposer died after the commit point —
  and, when a change in flight asked this node, report how it went.

A revision that failed to apply is not tried again (the proposer rolls the
cluster back); a finished change this node took part in is announced here
as ``kernel.config.changed``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from organelle.cluster_config._records import (
    CHANGE_KEY,
    LAYER_KEY,
    MEMBER_PREFIX,
    report_key,
    vote_key,
)
from organelle.config.secrets import redact
from organelle.errors import OrganelleError

if TYPE_CHECKING:
    from organelle.storage import Entry, Store

__all__ = ["CHANGED", "ConfigNode"]

CHANGED = "kernel.config.changed"
log = logging.getLogger("organelle.config")

Layer = dict[str, Any]


def _error(exc: BaseException) -> dict[str, str]:
    code = exc.code if isinstance(exc, OrganelleError) else "organelle.internal"
    text = str(exc) if isinstance(exc, OrganelleError) else f"{type(exc).__name__}: {exc}"
    return {"code": code, "message": redact(text)}


class ConfigNode:
    """Keeps one node on the cluster layer and answers for it in changes.

    Args:
        store: the cluster store, asked for on each use.
        node: this node's name.
        validate: raises when this node could not run the layer (nothing is touched).
        apply: puts the layer in effect, or raises having rolled itself back.
        announce: reports ``kernel.config.changed`` on this node.
        poll_s: how often the two keys are read.
        ttl_s: how long a heartbeat counts (one is written every ``ttl_s / 3``).
    """

    def __init__(
        self,
        store: Callable[[], Store],
        node: Callable[[], str],
        *,
        validate: Callable[[Layer], Awaitable[None]],
        apply: Callable[[Layer], Awaitable[None]],
        announce: Callable[[str, dict[str, Any]], Awaitable[None]],
        poll_s: float = 0.1,
        ttl_s: float = 3.0,
    ) -> None:
        self._store = store
        self._node = node
        self._validate = validate
        self._apply = apply
        self._announce = announce
        self.poll_s = poll_s
        self.ttl_s = ttl_s
        self.revision = 0  # the layer revision in effect here
        self._tried = 0  # the last revision applied or failed (not tried twice)
        self._voted = ""
        self._reported: set[tuple[str, str]] = set()  # (change, phase) answered
        self._took_part: set[str] = set()
        self._beat_at = 0.0
        self._task: asyncio.Task[None] | None = None

    @property
    def node(self) -> str:
        """This node's name."""
        return self._node()

    async def read(self) -> tuple[int, Layer]:
        """The stored layer and its revision (``(0, {})``: none)."""
        entry = await self._store().get(LAYER_KEY)
        return (0, {}) if entry is None else (entry.revision, dict(entry.value.get("layer") or {}))

    def adopted(self, revision: int) -> None:
        """The layer at ``revision`` took effect (at start, before following)."""
        self.revision = self._tried = revision

    async def open(self) -> None:
        """Announce this node and follow the layer."""
        if self._task is None:
            await self._beat()
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="organelle-cluster-config"
            )

    async def close(self) -> None:
        """Stop following and leave (the heartbeat key goes at once)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        try:
            await self._store().delete(MEMBER_PREFIX + self.node)
        except Exception as exc:  # the store is gone: the TTL removes it
            log.debug("cluster config: leaving failed: %s", exc)

    async def _beat(self) -> None:
        self._beat_at = time.monotonic()
        await self._store().put(
            MEMBER_PREFIX + self.node,
            {"at": time.time(), "ttl_s": self.ttl_s, "revision": self.revision, "pid": os.getpid()},
            ttl_s=self.ttl_s * 2,
        )

    async def _run(self) -> None:
        delay = self.poll_s
        while True:
            try:
                if time.monotonic() - self._beat_at >= self.ttl_s / 3:
                    await self._beat()
                await self.step()
                delay = self.poll_s
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store is down: keep running on what is in effect
                log.warning("cluster config: reading the store failed (%s); retrying", exc)
                delay = min(delay * 2, self.ttl_s)
            await asyncio.sleep(delay)

    async def step(self) -> None:
        """One look at the store: vote, apply or report as the change and the layer say."""
        store = self._store()
        found = await store.get_many([CHANGE_KEY, LAYER_KEY])
        change = found.get(CHANGE_KEY)
        record: Mapping[str, Any] = {} if change is None else change.value
        change_id = str(record.get("id", ""))
        phase = str(record.get("phase", ""))
        asked = self.node in (record.get("nodes") or ())
        if float(record.get("deadline", 0)) < time.time() and phase != "done":
            phase = "expired"  # its proposer died: the stored layer alone counts
        if phase == "prepare":
            if asked and self._voted != change_id:
                self._voted = change_id
                self._took_part.add(change_id)
                await self._vote(store, change_id, record.get("layer") or {})
            return
        await self._follow(store, found.get(LAYER_KEY), change_id, phase if asked else "")
        ended = [c for c in self._took_part if c != change_id or phase in ("done", "expired")]
        if ended:
            await self._announce_ended(store, ended, change_id)

    async def _announce_ended(self, store: Store, ended: list[str], current: str) -> None:
        """Announce the changes this node took part in that have ended (their reports)."""
        reports = await store.get_many([report_key(c) for c in ended])
        for change in ended:
            entry = reports.get(report_key(change))
            if entry is None and change == current:
                continue  # ending: the report comes with "done"
            self._took_part.discard(change)  # reported, or its proposer died: nothing to tell
            if entry is not None:
                report = entry.value
                mine: dict[str, Any] = next(
                    (n for n in report["nodes"] if n["node"] == self.node), {}
                )
                await self._announce(
                    CHANGED, {**report, "node": self.node, "state": mine.get("state")}
                )

    async def _vote(self, store: Store, change_id: str, layer: Layer) -> None:
        vote: dict[str, Any] = {"phase": "prepare", "state": "validated"}
        try:
            await self._validate(dict(layer))
        except Exception as exc:  # any failure is this node's "no", with its reason
            vote = {"phase": "prepare", "state": "rejected", **_error(exc)}
            log.warning("cluster config change %s rejected here: %s", change_id, vote["message"])
        await store.put(vote_key(change_id, self.node), vote)

    async def _follow(self, store: Store, entry: Entry | None, change_id: str, phase: str) -> None:
        if self._reported and any(c != change_id for c, _ in self._reported):
            self._reported = {r for r in self._reported if r[0] == change_id}  # only the current
        revision = 0 if entry is None else entry.revision
        if revision not in (self.revision, self._tried):
            self._tried = revision
            layer = {} if entry is None else dict(entry.value.get("layer") or {})
            try:
                await self._apply(layer)
            except Exception as exc:  # reported; the proposer rolls the cluster back
                state: dict[str, Any] = {"state": "failed", **_error(exc)}
                log.warning(
                    "cluster config revision %d failed here: %s", revision, state["message"]
                )
            else:
                self.revision = revision
                state = {"state": "applied" if phase == "commit" else "rolled_back"}
                await self._beat()
            if phase in ("commit", "rollback") and (change_id, phase) not in self._reported:
                self._reported.add((change_id, phase))
                await store.put(vote_key(change_id, self.node), {"phase": phase, **state})
        elif phase in ("commit", "rollback") and (change_id, phase) not in self._reported:
            # Already on that revision (applied before the change record moved on).
            self._reported.add((change_id, phase))
            state = {"state": "applied" if phase == "commit" else "rolled_back"}
            if self.revision != revision:  # it failed here earlier
                state = {"state": "failed", "code": "organelle.config", "message": "not applied"}
            await store.put(vote_key(change_id, self.node), {"phase": phase, **state})
