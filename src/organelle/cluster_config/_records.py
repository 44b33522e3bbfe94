"""What a cluster config change stores: keys, the change record, each node's outcome.

The Store's key space under ``_ccfg.``:

* ``_ccfg.layer`` — the layer in effect: ``{"layer", "change", "by", "at"}``;
  its Store revision is *the* revision proposals compare and set;
* ``_ccfg.change`` — the change in flight (or the last one): its phase
  (``prepare`` → ``commit`` → ``rollback``, or ``done``), the nodes asked;
* ``_ccfg.vote.<change>.<node>`` — what one node reports for one phase;
* ``_ccfg.report.<change>`` — a finished change's report, kept ten minutes
  for the nodes to announce it;
* ``_ccfg.node.<node>`` — a node's heartbeat: who takes part and on which revision;
* ``_ccfg.history.<seq>`` — every finished change's report, numbered by ``_ccfg.seq``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from organelle.config.loader import merge
from organelle.config.secrets import MASK, mask
from organelle.errors import ConfigError

__all__ = [
    "CHANGE_KEY",
    "HISTORY_PREFIX",
    "LAYER_KEY",
    "MEMBER_PREFIX",
    "SEQ_KEY",
    "ChangeReport",
    "NodeOutcome",
    "Outcome",
    "apply_patch",
    "history_key",
    "masked",
    "parse_assignments",
    "report_key",
    "vote_key",
]

LAYER_KEY = "_ccfg.layer"
CHANGE_KEY = "_ccfg.change"
MEMBER_PREFIX = "_ccfg.node."
SEQ_KEY = "_ccfg.seq"
HISTORY_PREFIX = "_ccfg.history."
SECTIONS = frozenset({"kernel", "modules", "routing", "policies", "secrets"})

Outcome = Literal["committed", "aborted", "rolled_back"]
NodeState = Literal["validated", "rejected", "applied", "failed", "rolled_back", "timeout"]


def vote_key(change: str, node: str) -> str:
    """Where ``node`` reports on ``change``."""
    return f"_ccfg.vote.{change}.{node}"


def report_key(change: str) -> str:
    """Where a finished change's report waits for the nodes that took part (for a while)."""
    return f"_ccfg.report.{change}"


def history_key(seq: int) -> str:
    """The ``seq``-th finished change (zero-padded: the keys sort in order)."""
    return f"{HISTORY_PREFIX}{seq:012d}"


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeOutcome:
    """What happened to a change on one node.

    Attributes:
        node: the node's name.
        state: ``validated`` (it said yes; the change went no further),
            ``rejected`` (its validation said no), ``applied``, ``failed`` (its
            ``on_config_changed`` failed; it rolled itself back), ``rolled_back``
            (applied, then undone because another node failed) or ``timeout``
            (no answer in time: a "no").
        code, message: the error that said no, for ``rejected`` and ``failed``.
    """

    node: str
    state: NodeState
    code: str = ""
    message: str = ""

    def to_data(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"node": self.node, "state": self.state, "code": self.code, "message": self.message}


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeReport:
    """The outcome of one cluster config change, per node.

    Attributes:
        id: the change's id.
        outcome: ``committed`` (every node applied it), ``aborted`` (a node said
            no or did not answer: nothing was applied) or ``rolled_back``
            (a node failed to apply it: every node is back on the old layer).
        by, at: who proposed it, when (Unix time).
        patch: what was proposed, secrets masked (``secret://`` references stay
            references in the store).
        revision: the layer's Store revision once the change ended.
        nodes: each node asked, in name order.
    """

    id: str
    outcome: Outcome
    by: str
    at: float
    patch: dict[str, Any] = field(default_factory=dict)
    revision: int = 0
    nodes: tuple[NodeOutcome, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether the change is in effect."""
        return self.outcome == "committed"

    def to_data(self) -> dict[str, Any]:
        """JSON-able form (history, events, ``ConfigChangeError.details``)."""
        return {
            "id": self.id,
            "outcome": self.outcome,
            "by": self.by,
            "at": self.at,
            "patch": self.patch,
            "revision": self.revision,
            "nodes": [n.to_data() for n in self.nodes],
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> ChangeReport:
        """Rebuild a report from ``to_data``'s form."""
        return cls(
            id=str(data["id"]),
            outcome=data["outcome"],
            by=str(data.get("by", "")),
            at=float(data.get("at", 0.0)),
            patch=dict(data.get("patch") or {}),
            revision=int(data.get("revision", 0)),
            nodes=tuple(NodeOutcome(**n) for n in data.get("nodes") or ()),
        )


def masked(layer: Mapping[str, Any]) -> dict[str, Any]:
    """A layer or patch fit to show: references, credential-like keys, resolved secrets masked."""
    result: dict[str, Any] = mask(_hide_refs(dict(layer)), by_name=True)
    return result


def _hide_refs(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _hide_refs(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_hide_refs(v) for v in value]
    return MASK if isinstance(value, str) and value.startswith("secret://") else value


def apply_patch(layer: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``layer`` with ``patch`` merged in; a ``None`` value removes that key (and empty tables).

    Raises:
        ConfigError: a patch that is not a table of known sections.
    """
    if not isinstance(patch, Mapping):
        raise ConfigError("a cluster config patch must be a table of sections")
    unknown = sorted(str(k) for k in patch if k not in SECTIONS)
    if unknown:
        raise ConfigError(
            f"cluster config: unknown section(s) {', '.join(unknown)} "
            f"(known: {', '.join(sorted(SECTIONS))})",
            details={"sections": unknown},
        )
    return _prune(merge(dict(layer), patch))


def _prune(table: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        kept = _prune(value) if isinstance(value, dict) else value
        if kept is None or kept == {}:
            continue
        out[key] = kept
    return out


def parse_assignments(items: list[str], parse: Any) -> dict[str, Any]:
    """``["modules.shop.limit=5", ...]`` as a nested patch; ``parse`` reads each value.

    Raises:
        ConfigError: an item that is not ``DOTTED.KEY=VALUE``.
    """
    patch: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        path = key.strip().split(".")
        if not sep or len(path) < 2 or not all(path):  # noqa: PLR2004 - a section and a key
            raise ConfigError(f"{item!r}: expected SECTION.KEY=VALUE (e.g. modules.shop.limit=5)")
        node = patch
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{item!r}: {part!r} is set to a value and used as a table")
            node = child
        node[path[-1]] = parse(raw)
    return patch
