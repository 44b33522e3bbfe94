"""``ClusterConfig``: read the cluster layer, change it on every node at once, list changes.

A change is a two-phase commit run by whoever proposes it (a kernel or the
CLI), with the Store as the only channel:

1. **prepare** — the change record names the live nodes (their heartbeats);
   each validates the new layer (models, ``secret://`` references, each
   changed module's ``on_config_check``) and votes; a node silent past
   ``timeout_s`` is a "no";
2. **commit** — all said yes: the layer is compare-and-set on the revision the
   proposal started from (the commit point), and every node applies it;
3. **rollback** — a node failed to apply it (or did not report in time): the
   previous layer is written back and every node returns to it.

Concurrent proposals: one change is in flight at a time (``_ccfg.change``)
and the layer's revision is compared and set, so the loser gets a
``ConflictError`` and nothing of it is applied.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from organelle.cluster_config._records import (
    CHANGE_KEY,
    LAYER_KEY,
    MEMBER_PREFIX,
    SEQ_KEY,
    ChangeReport,
    NodeOutcome,
    Outcome,
    apply_patch,
    history_key,
    masked,
    report_key,
    vote_key,
)
from organelle.errors import ConfigChangeError, ConflictError

if TYPE_CHECKING:
    from organelle.storage import Store

__all__ = ["ClusterConfig", "LayerInfo", "Participant"]

_POLL_S = 0.02
_OPEN = ("prepare", "commit", "rollback")
_REPORT_TTL_S = 600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Participant:
    """A node taking part in cluster config, as its heartbeat says.

    Attributes:
        node: its name.
        revision: the layer revision it runs on (0: none yet).
        at: its last heartbeat (Unix time); ttl_s: how long that counts.
    """

    node: str
    revision: int = 0
    at: float = 0.0
    ttl_s: float = 3.0

    def alive(self, now: float) -> bool:
        """Whether the last heartbeat is younger than its TTL."""
        return now - self.at < self.ttl_s


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerInfo:
    """The cluster layer in effect.

    Attributes:
        layer: its sections as written (``secret://`` references unresolved).
        revision: its Store revision (0: never set); pass it to ``propose`` to
            change exactly this version.
        change, by, at: the change that wrote it, who made it, when.
        nodes: the live nodes and the revision each runs on.
    """

    layer: dict[str, Any] = field(default_factory=dict)
    revision: int = 0
    change: str = ""
    by: str = ""
    at: float = 0.0
    nodes: tuple[Participant, ...] = ()

    def to_data(self) -> dict[str, Any]:
        """JSON-able form, references and secrets masked."""
        return {
            "layer": masked(self.layer),
            "revision": self.revision,
            "change": self.change,
            "by": self.by,
            "at": self.at,
            "nodes": [{"node": m.node, "revision": m.revision} for m in self.nodes],
        }


class ClusterConfig:
    """The cluster config layer in the Store.

    Args:
        store: the cluster store, asked for on each use.
        by: who a change is attributed to when the caller names no one.
        timeout_s: how long each phase waits for the nodes.
    """

    def __init__(
        self, store: Callable[[], Store], *, by: Callable[[], str], timeout_s: float = 5.0
    ) -> None:
        self._store = store
        self._by = by
        self.timeout_s = timeout_s

    async def get(self) -> LayerInfo:
        """The layer in effect, with the live nodes."""
        entry = await self._store().get(LAYER_KEY)
        nodes = tuple(await self.nodes())
        if entry is None:
            return LayerInfo(nodes=nodes)
        value = entry.value
        return LayerInfo(
            layer=dict(value.get("layer") or {}),
            revision=entry.revision,
            change=str(value.get("change", "")),
            by=str(value.get("by", "")),
            at=float(value.get("at", 0.0)),
            nodes=nodes,
        )

    async def nodes(self) -> list[Participant]:
        """The nodes whose heartbeat is fresh, by name."""
        store, now = self._store(), time.time()
        found: list[Participant] = []
        cursor: str | None = None
        while True:
            page = await store.scan(MEMBER_PREFIX, limit=500, cursor=cursor)
            for entry in page.items:
                value = entry.value
                member = Participant(
                    node=entry.key.removeprefix(MEMBER_PREFIX),
                    revision=int(value.get("revision", 0)),
                    at=float(value.get("at", 0.0)),
                    ttl_s=float(value.get("ttl_s", 3.0)),
                )
                if member.alive(now):
                    found.append(member)
            cursor = page.cursor
            if cursor is None:
                return sorted(found, key=lambda m: m.node)

    async def history(self, limit: int = 20) -> list[ChangeReport]:
        """The last ``limit`` finished changes, oldest first."""
        store = self._store()
        seq = await store.get(SEQ_KEY)
        last = 0 if seq is None else int(seq.value)
        keys = [history_key(n) for n in range(max(1, last - limit + 1), last + 1)]
        found = await store.get_many(keys) if keys else {}
        return [ChangeReport.from_data(found[k].value) for k in keys if k in found]

    async def propose(
        self,
        patch: Mapping[str, Any],
        *,
        by: str | None = None,
        revision: int | None = None,
        replace: bool = False,
        timeout_s: float | None = None,
        check: bool = True,
    ) -> ChangeReport:
        """Change the layer on every live node, or on none.

        Args:
            patch: sections to merge into the layer (``{"modules": {"shop":
                {"limit": 5}}}``); a ``None`` value removes a key.
            by: who makes the change (default: this node or the CLI user).
            revision: the layer revision this change is based on; another one
                in the store means someone changed it meanwhile.
            replace: ``patch`` is the whole new layer.
            timeout_s: per phase, how long to wait for every node.
            check: raise ``ConfigChangeError`` when the change was not committed.

        Raises:
            ConflictError: another change is in flight, or the layer is no
                longer at ``revision`` (or changed while this one was prepared).
            ConfigChangeError: aborted or rolled back (``check``); ``details["change"]``
                is the report.
            ConfigError: a patch that is not a table of known sections.
        """
        store = self._store()
        wait_s = self.timeout_s if timeout_s is None else timeout_s
        entry = await store.get(LAYER_KEY)
        base = 0 if entry is None else entry.revision
        if revision is not None and revision != base:
            raise ConflictError(
                f"the cluster config is at revision {base}, not {revision}: re-read and retry",
                details={"key": LAYER_KEY, "expected": revision},
            )
        old: dict[str, Any] = {} if entry is None else dict(entry.value.get("layer") or {})
        new = apply_patch({}, patch) if replace else apply_patch(old, patch)
        change = _Change(
            store=store,
            id=uuid.uuid4().hex[:16],
            by=by or self._by(),
            base=base,
            old=old,
            old_record={} if entry is None else dict(entry.value),
            new=new,
            nodes=[m.node for m in await self.nodes()],
            wait_s=wait_s,
        )
        await change.claim()
        try:
            report = await change.run(patch)
        finally:
            await change.finish()
        seq = await store.incr(SEQ_KEY)
        await store.put(history_key(seq), report.to_data())
        if check and not report.ok:
            failed = [
                f"{n.node}: {n.state}" + (f" ({n.message})" if n.message else "")
                for n in report.nodes
                if n.state not in ("applied", "validated", "rolled_back")
            ]
            raise ConfigChangeError(
                f"cluster config change {report.id} {report.outcome.replace('_', ' ')}: "
                + ("; ".join(failed) or "no reason reported"),
                details={"change": report.to_data()},
            )
        return report


@dataclass(slots=True, kw_only=True)
class _Change:
    """One proposal on its way through the phases (the proposer's side)."""

    store: Store
    id: str
    by: str
    base: int
    old: dict[str, Any]
    old_record: dict[str, Any]  # the layer's record before: restored whole by a rollback
    new: dict[str, Any]
    nodes: list[str]
    wait_s: float
    at: float = field(default_factory=time.time)
    rev: int = 0  # the change record's revision
    record: dict[str, Any] = field(default_factory=dict)
    report: ChangeReport | None = None

    async def claim(self) -> None:
        """Take the one change slot, or raise ``ConflictError`` naming who holds it."""
        current = await self.store.get(CHANGE_KEY)
        if current is not None:
            held = current.value
            if held.get("phase") in _OPEN and float(held.get("deadline", 0)) > time.time():
                raise ConflictError(
                    f"cluster config change {held.get('id')} by {held.get('by')} is in progress",
                    details={"key": CHANGE_KEY, "change": held.get("id")},
                )
        self.record = {
            "id": self.id,
            "phase": "prepare",
            "by": self.by,
            "at": self.at,
            "base": self.base,
            "layer": self.new,
            "nodes": self.nodes,
            # Past it a change whose proposer died no longer blocks the next.
            "deadline": self.at + 4 * self.wait_s + 5.0,
        }
        self.rev = await self.store.compare_and_set(
            CHANGE_KEY, self.record, revision=None if current is None else current.revision
        )

    async def phase(self, name: str) -> None:
        self.record["phase"] = name
        self.rev = await self.store.compare_and_set(CHANGE_KEY, self.record, revision=self.rev)

    async def collect(self, phase: str, nodes: list[str]) -> dict[str, dict[str, Any]]:
        """Each node's report for ``phase``; the silent ones are left out."""
        keys = {vote_key(self.id, n): n for n in nodes}
        got: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + self.wait_s
        while True:
            found = await self.store.get_many(list(keys)) if keys else {}
            got = {keys[k]: e.value for k, e in found.items() if e.value.get("phase") == phase}
            if len(got) == len(keys) or time.monotonic() >= deadline:
                return got
            await asyncio.sleep(_POLL_S)

    async def run(self, patch: Mapping[str, Any]) -> ChangeReport:
        votes = await self.collect("prepare", self.nodes)
        states: dict[str, NodeOutcome] = {
            n: _outcome(n, votes.get(n), "validated") for n in self.nodes
        }
        if any(s.state != "validated" for s in states.values()):
            return self._report("aborted", states, patch, self.base)
        try:
            rev = await self.store.compare_and_set(
                LAYER_KEY,
                {"layer": self.new, "change": self.id, "by": self.by, "at": self.at},
                revision=self.base or None,
            )
        except ConflictError:
            raise ConflictError(
                "the cluster config changed while this change was prepared: re-read and retry",
                details={"key": LAYER_KEY, "expected": self.base, "change": self.id},
            ) from None
        await self.phase("commit")
        applied = await self.collect("commit", self.nodes)
        states = {n: _outcome(n, applied.get(n), "applied") for n in self.nodes}
        if all(s.state == "applied" for s in states.values()):
            return self._report("committed", states, patch, rev)
        rev = await self.store.compare_and_set(
            LAYER_KEY,
            {**self.old_record, "layer": self.old, "undone": self.id},
            revision=rev,
        )
        await self.phase("rollback")
        undone = await self.collect(
            "rollback", [n for n, s in states.items() if s.state == "applied"]
        )
        for node, state in states.items():
            if state.state == "applied":
                back = undone.get(node)
                states[node] = (
                    NodeOutcome(node=node, state="rolled_back")
                    if back is not None and back.get("state") == "rolled_back"
                    else _outcome(node, back, "rolled_back")
                )
        return self._report("rolled_back", states, patch, rev)

    def _report(
        self, outcome: Outcome, states: dict[str, NodeOutcome], patch: Mapping[str, Any], rev: int
    ) -> ChangeReport:
        self.report = ChangeReport(
            id=self.id,
            outcome=outcome,
            by=self.by,
            at=self.at,
            patch=masked(patch),
            revision=rev,
            nodes=tuple(states[n] for n in sorted(states)),
        )
        return self.report

    async def finish(self) -> None:
        """Close the change (``done``, with its report) and drop the nodes' reports."""
        if self.report is not None:
            await self.store.put(report_key(self.id), self.report.to_data(), ttl_s=_REPORT_TTL_S)
        try:
            await self.phase("done")
        finally:
            await self.store.delete_many([vote_key(self.id, n) for n in self.nodes])


def _outcome(node: str, vote: Mapping[str, Any] | None, ok: str) -> NodeOutcome:
    if vote is None:
        return NodeOutcome(node=node, state="timeout", message="no answer in time")
    state = str(vote.get("state", ""))
    if state == ok:
        return NodeOutcome(node=node, state=ok)  # type: ignore[arg-type]
    return NodeOutcome(
        node=node,
        state=state,  # type: ignore[arg-type]
        code=str(vote.get("code", "")),
        message=str(vote.get("message", "")),
    )
