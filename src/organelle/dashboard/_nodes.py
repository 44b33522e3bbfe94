"""The cluster as the registry sees it, or this node alone when there is no transport.

A transport that keeps a registry (NATS) lists its nodes with ``nodes()``;
reading it is a network round trip, so it runs under a short timeout and a
failure is shown beside this node rather than failing the whole answer.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import TYPE_CHECKING, Any

from organelle.dashboard._views import NodeModuleView, NodesView, NodeView
from organelle.kernel._states import ModuleState

if TYPE_CHECKING:
    from organelle.kernel import Kernel

__all__ = ["list_nodes", "this_node"]

REGISTRY_TIMEOUT_S = 2.0


def this_node(kernel: Kernel) -> str:
    """This node's name: the transport's, else ``[kernel] node``, else host and pid."""
    name = getattr(kernel.transport, "node", None)
    if isinstance(name, str) and name:
        return name
    return kernel.settings.node or f"{socket.gethostname()}-{os.getpid()}"


def _local(kernel: Kernel, name: str) -> NodeView:
    now = time.time()
    return NodeView(
        node=name,
        host=socket.gethostname(),
        pid=os.getpid(),
        started=now if kernel.started_at is None else kernel.started_at,
        last_seen=now,
        alive=kernel.running,
        local=True,
        modules={
            i.name: NodeModuleView(
                version=i.version, methods=list(i.rpc_methods), events=list(i.subscriptions)
            )
            for i in kernel.modules().values()
            if i.state is ModuleState.ACTIVE
        },
    )


def _view(info: Any, me: str, now: float) -> NodeView:
    return NodeView(
        node=info.node,
        host=info.host,
        pid=info.pid,
        started=info.started,
        last_seen=info.ts,
        alive=bool(info.alive(now)),
        local=info.node == me,
        modules={
            name: NodeModuleView(version=m.version, methods=list(m.methods), events=list(m.events))
            for name, m in info.modules.items()
        },
    )


async def list_nodes(kernel: Kernel) -> NodesView:
    """``/api/nodes``: every live node with its modules, this one marked ``local``."""
    me = this_node(kernel)
    lister = None if kernel.transport.solo else getattr(kernel.transport, "nodes", None)
    if lister is None:
        return NodesView(clustered=False, this=me, nodes=[_local(kernel, me)])
    try:
        async with asyncio.timeout(REGISTRY_TIMEOUT_S):
            found = await lister()
    except Exception as exc:  # a registry hiccup must not blank the page
        reason = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        return NodesView(
            clustered=True,
            this=me,
            nodes=[_local(kernel, me)],
            error=f"the cluster registry could not be read: {reason}",
        )
    now = time.time()
    views = [_view(n, me, now) for n in found] or [_local(kernel, me)]
    return NodesView(clustered=True, this=me, nodes=views)
