"""Cluster-wide config: one config layer in the cluster store, changed on every node or none.

A node with ``[kernel] cluster_config = true`` reads the layer when it starts
and follows it. A change is proposed with ``kernel.cluster_config``
(``ClusterConfig``) or ``organelle config cluster set``; every live node
validates it, then every node applies it — or, if one cannot, every node
returns to the previous layer. The proposer gets a ``ChangeReport`` with
each node's outcome::

    report = await kernel.cluster_config.propose({"modules": {"shop": {"limit": 5}}})
    [(n.node, n.state) for n in report.nodes]  # [("a", "applied"), ("b", "applied")]

See ``docs/cluster-config.md``.
"""

from __future__ import annotations

from organelle.cluster_config._admin import ClusterConfig, LayerInfo, Participant
from organelle.cluster_config._node import CHANGED, ConfigNode
from organelle.cluster_config._records import (
    ChangeReport,
    NodeOutcome,
    apply_patch,
    masked,
    parse_assignments,
)

__all__ = [
    "CHANGED",
    "ChangeReport",
    "ClusterConfig",
    "ConfigNode",
    "LayerInfo",
    "NodeOutcome",
    "Participant",
    "apply_patch",
    "masked",
    "parse_assignments",
]
