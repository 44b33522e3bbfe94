"""The topology view: modules with their dependency edges, and the nodes that run them.

Edges come from each local module's ``requires`` / ``optional``; a dependency
served only by another node shows as a module of that node (``local`` false).
Nodes come from the cluster registry, as on the nodes view.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from organelle.dashboard._nodes import list_nodes

if TYPE_CHECKING:
    from organelle.kernel import Kernel

__all__ = ["topology"]


async def topology(kernel: Kernel) -> dict[str, Any]:
    """``/api/topology``: ``modules``, ``edges`` (``from`` needs ``to``) and ``nodes``."""
    nodes = await list_nodes(kernel)
    where: dict[str, list[str]] = {}
    for node in nodes.nodes:
        for name in node.modules:
            where.setdefault(name, []).append(node.node)
    modules: dict[str, dict[str, Any]] = {}
    edges: list[dict[str, Any]] = []
    for info in kernel.modules().values():
        modules[info.name] = {
            "name": info.name,
            "version": info.version,
            "state": info.state.value,
            "local": True,
            "nodes": sorted(where.get(info.name, [])),
        }
        edges += [{"from": info.name, "to": d, "optional": False} for d in info.requires]
        edges += [{"from": info.name, "to": d, "optional": True} for d in info.optional]
    for name, on in where.items():
        if name not in modules:
            modules[name] = {
                "name": name,
                "version": "",
                "state": "remote",
                "local": False,
                "nodes": sorted(on),
            }
    return {
        "this": nodes.this,
        "modules": list(modules.values()),
        "edges": edges,
        "nodes": [
            {"node": n.node, "local": n.local, "alive": n.alive, "modules": sorted(n.modules)}
            for n in nodes.nodes
        ],
        "error": nodes.error,
    }
